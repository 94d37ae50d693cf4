"""The Gmail account admin with Django's test client, against the sandbox over real TLS."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.urls import reverse

from django_gmail_smtp import accounts
from django_gmail_smtp.models import GmailAccount
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER

pytestmark = pytest.mark.django_db

OTHER_PASSWORD = "qrstuvwxyzabcdef"  # another 16-letter app password
ADD_URL = "admin:gmail_smtp_gmailaccount_add"
CHANGELIST_URL = "admin:gmail_smtp_gmailaccount_changelist"
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def sandbox(settings: Any, gmail_sandbox: Any) -> Any:
    """The sandbox, its CA trusted through GMAIL_SMTP['SSL_CAFILE'] (as a project trusts a private CA)."""
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    return gmail_sandbox


def form_data(sandbox: Any | None = None, **overrides: Any) -> dict[str, Any]:
    """The add/change form as a browser posts it, pointed at the sandbox (or at Gmail)."""
    data: dict[str, Any] = {
        "name": "shop",
        "username": SANDBOX_USER,
        "auth_method": "app_password",
        "app_password": SANDBOX_PASSWORD,
        "host": sandbox.host if sandbox else "smtp.gmail.com",
        "port": sandbox.starttls_port if sandbox else 587,
        "security": "starttls",
        "timeout": "5",
        "from_aliases": "",
        "enabled": "on",
        "_save": "Save",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def stored_account(sandbox: Any | None = None, password: str = SANDBOX_PASSWORD, **fields: Any) -> GmailAccount:
    account = GmailAccount(
        name=fields.pop("name", "shop"),
        username=fields.pop("username", SANDBOX_USER),
        host=sandbox.host if sandbox else "smtp.gmail.com",
        port=sandbox.starttls_port if sandbox else 587,
        timeout=5,
        **fields,
    )
    account.set_password(password)
    account.save()
    return account


def change_url(account: GmailAccount) -> str:
    return reverse("admin:gmail_smtp_gmailaccount_change", args=[account.pk])


def action_url(account: GmailAccount | None = None, action: str = "test") -> str:
    if account is None:
        return reverse(f"admin:gmail_smtp_gmailaccount_{action}_new")
    return reverse(f"admin:gmail_smtp_gmailaccount_{action}", args=[account.pk])


def raw_secret(account: GmailAccount) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT encrypted_secret FROM gmail_smtp_gmailaccount WHERE id = %s", [account.pk])
        return str(cursor.fetchone()[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def staff_client(client: Client) -> Client:
    """Staff with every model permission except the test one."""
    user = User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="gmail_smtp").exclude(codename="test_gmailaccount")
    )
    client.force_login(user)
    return client


# -- the secret never comes back -----------------------------------------------------------


def test_add_stores_the_secret_encrypted_and_no_page_shows_it(admin_client: Client, sandbox: Any) -> None:
    response = admin_client.post(reverse(ADD_URL), form_data(sandbox))
    assert response.status_code == 302, response.content.decode()[:3000]
    account = GmailAccount.objects.get(name="shop")
    assert account.get_password() == SANDBOX_PASSWORD
    assert SANDBOX_PASSWORD not in raw_secret(account)

    pages = [
        admin_client.get(change_url(account)),
        admin_client.get(reverse(CHANGELIST_URL)),
        admin_client.get(reverse("admin:gmail_smtp_gmailaccount_history", args=[account.pk])),
        admin_client.get(reverse("admin:gmail_smtp_gmailaccount_delete", args=[account.pk])),
    ]
    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        assert SANDBOX_PASSWORD not in html
        assert raw_secret(account) not in html  # not even the encrypted token
    assert "An app password is stored." in pages[0].content.decode()
    assert "An app password is stored." in pages[1].content.decode()  # the list says it too
    assert 'type="password"' in pages[0].content.decode()
    for entry in LogEntry.objects.all():
        assert SANDBOX_PASSWORD not in entry.change_message
        assert SANDBOX_PASSWORD not in entry.object_repr


def test_secret_is_not_rendered_back_after_a_validation_error(admin_client: Client) -> None:
    response = admin_client.post(reverse(ADD_URL), form_data(username="not-an-address"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "gmail_smtp.E006" in html
    assert SANDBOX_PASSWORD not in html


def test_no_write_only_secret_is_rendered_back(admin_client: Client) -> None:
    """The app password, the OAuth2 client secret and the refresh token: each typed, none shown again."""
    typed = {"oauth_client_secret": "GOCSPX-typed-client-secret", "oauth_refresh_token": "1//typed-refresh-token"}
    data = form_data(username="not-an-address", auth_method="oauth2", oauth_client_id="id.example", **typed)
    response = admin_client.post(reverse(ADD_URL), data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "gmail_smtp.E006" in html
    for name, value in {"app_password": SANDBOX_PASSWORD, **typed}.items():
        assert value not in html, name
        assert re.search(rf'<input type="password" name="{name}"[^>]*>', html), name


def test_views_receiving_the_secret_hide_it_from_error_reports(admin_client: Client, sandbox: Any) -> None:
    secrets = ("app_password", "oauth_client_secret", "oauth_refresh_token")  # the OAuth2 ones too
    response = admin_client.post(reverse(ADD_URL), form_data(sandbox))
    assert response.wsgi_request.sensitive_post_parameters == secrets  # type: ignore[attr-defined]
    response = admin_client.post(action_url(), form_data(sandbox), **XHR)
    assert response.wsgi_request.sensitive_post_parameters == secrets  # type: ignore[attr-defined]


def test_blank_secret_keeps_the_stored_one_and_history_names_only_fields(admin_client: Client) -> None:
    account = stored_account()
    before = raw_secret(account)
    response = admin_client.post(change_url(account), form_data(app_password="", timeout="7"))
    assert response.status_code == 302, response.content.decode()[:3000]
    account.refresh_from_db()
    assert raw_secret(account) == before
    assert account.get_password() == SANDBOX_PASSWORD
    assert account.timeout == 7

    response = admin_client.post(change_url(account), form_data(app_password=OTHER_PASSWORD))
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.get_password() == OTHER_PASSWORD
    messages = [entry.get_change_message() for entry in LogEntry.objects.order_by("action_time")]
    assert "Timeout" in messages[0]
    assert "App password" not in messages[0]
    assert "App password" in messages[1]
    for message in messages:
        assert SANDBOX_PASSWORD not in message
        assert OTHER_PASSWORD not in message


# -- validation: the rules of manage.py check ----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"port": 465}, "gmail_smtp.E003"),
        ({"security": "ssl"}, "gmail_smtp.E004"),
        ({"username": "shop"}, "gmail_smtp.E006"),
        ({"app_password": ""}, "gmail_smtp.E007"),
        ({"timeout": "0"}, "gmail_smtp.E008"),
    ],
)
def test_rule_errors_are_shown_with_their_ids(admin_client: Client, overrides: dict[str, Any], check_id: str) -> None:
    response = admin_client.post(reverse(ADD_URL), form_data(**overrides))
    assert response.status_code == 200
    html = response.content.decode()
    assert check_id in html
    assert "errornote" in html
    assert not GmailAccount.objects.exists()


def test_hints_name_the_form_fields_not_the_settings(admin_client: Client) -> None:
    html = admin_client.post(reverse(ADD_URL), form_data(port=465)).content.decode()
    assert "the “Port” field" in html
    assert "EMAIL_PORT" not in html
    assert "EMAIL_USE_TLS" not in html


def test_rule_warnings_are_shown_after_saving(admin_client: Client) -> None:
    response = admin_client.post(reverse(ADD_URL), form_data(app_password="my own password!"), follow=True)
    assert GmailAccount.objects.filter(name="shop").exists()
    html = response.content.decode()
    assert "gmail_smtp.W001" in html
    assert "my own password!" not in html


def test_only_one_default_account_with_a_readable_error(admin_client: Client) -> None:
    stored_account(name="main", is_default=True)
    response = admin_client.post(reverse(ADD_URL), form_data(is_default="on"))
    assert response.status_code == 200
    assert "already the default" in response.content.decode()


def test_from_aliases_one_per_line(admin_client: Client) -> None:
    response = admin_client.post(reverse(ADD_URL), form_data(from_aliases="news@example.com\nshop@example.com"))
    assert response.status_code == 302
    assert GmailAccount.objects.get().from_aliases == ["news@example.com", "shop@example.com"]
    response = admin_client.post(reverse(ADD_URL), form_data(name="other", from_aliases="not an address"))
    assert "is not an e-mail address" in response.content.decode()


# -- wrong key -----------------------------------------------------------------------------


def test_wrong_key_page_still_opens_and_a_new_secret_can_be_entered(admin_client: Client, settings: Any) -> None:
    account = stored_account()
    settings.SECRET_KEY = "a-new-key-without-the-old-one-in-fallbacks"
    admin_client.force_login(User.objects.get(username="admin"))  # the new key ended the session
    page = admin_client.get(change_url(account))
    assert page.status_code == 200
    assert "cannot be decrypted with the current keys" in page.content.decode()

    response = admin_client.post(change_url(account), form_data(app_password=""))
    assert response.status_code == 200
    assert "gmail_rotate_keys" in response.content.decode()  # the error says what to do

    response = admin_client.post(change_url(account), form_data(app_password=OTHER_PASSWORD))
    assert response.status_code == 302
    assert accounts.account_options("shop")["password"] == OTHER_PASSWORD


def test_an_account_whose_secret_cannot_be_decrypted_can_be_disabled_without_retyping_it(
    admin_client: Client, settings: Any
) -> None:
    account = stored_account()
    sealed = account.encrypted_secret
    settings.SECRET_KEY = "a-new-key-without-the-old-one-in-fallbacks"
    admin_client.force_login(User.objects.get(username="admin"))
    response = admin_client.post(change_url(account), form_data(app_password="", enabled=None))
    assert response.status_code == 302, response.content.decode()
    account.refresh_from_db()
    assert account.enabled is False
    assert account.encrypted_secret == sealed  # kept as it was, for the day the old key comes back
    # Enabling it again still needs a secret that can be read.
    response = admin_client.post(change_url(account), form_data(app_password=""))
    assert response.status_code == 200
    assert "gmail_rotate_keys" in response.content.decode()


def test_old_key_in_fallbacks_keeps_the_account_readable(admin_client: Client, settings: Any) -> None:
    account = stored_account()
    settings.SECRET_KEY = "the-new-key"
    settings.SECRET_KEY_FALLBACKS = ["tests-only-not-secret"]
    assert "An app password is stored." in admin_client.get(change_url(account)).content.decode()
    assert accounts.account_options("shop")["password"] == SANDBOX_PASSWORD


def test_an_invalid_encryption_key_is_named_on_the_pages(admin_client: Client, settings: Any) -> None:
    account = stored_account()
    settings.GMAIL_SMTP = {"ENCRYPTION_KEYS": ["not-a-fernet-key"]}
    for url in (change_url(account), reverse(CHANGELIST_URL)):
        page = admin_client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert "GMAIL_SMTP[&#x27;ENCRYPTION_KEYS&#x27;][0] is not a valid Fernet key" in html
        assert "cannot be decrypted" not in html
        assert "not-a-fernet-key" not in html
    for typed in ("", OTHER_PASSWORD):  # keeping the stored one, or typing a new one
        response = admin_client.post(change_url(account), form_data(app_password=typed, timeout="7"))
        assert response.status_code == 200
        assert "gmail_smtp.E019" in response.content.decode()


# -- permissions ---------------------------------------------------------------------------


def test_staff_without_the_test_permission_cannot_test_send_or_see_secret_status(
    staff_client: Client, sandbox: Any
) -> None:
    account = stored_account(sandbox)
    html = staff_client.get(change_url(account)).content.decode()
    assert "Test connection" not in html
    assert "Send test email" not in html
    assert "app password is stored" not in html
    assert "secret" not in staff_client.get(reverse(CHANGELIST_URL)).content.decode().lower()
    for url in (action_url(account), action_url(account, "send"), action_url(), action_url(action="send")):
        assert staff_client.post(url, form_data(sandbox, _test_recipient="to@example.com")).status_code == 403
    # The list action is not offered to them: posting it anyway does nothing.
    staff_client.post(reverse(CHANGELIST_URL), {"action": "test_selected", "_selected_action": [account.pk]})
    assert sandbox.connections == 0
    account.refresh_from_db()
    assert account.last_checked_at is None


def test_superuser_has_the_test_permission(admin_client: Client) -> None:
    user = User.objects.get(username="admin")
    assert user.has_perm("gmail_smtp.test_gmailaccount")
    assert "Test connection" in admin_client.get(reverse(ADD_URL)).content.decode()


def test_actions_are_post_only_and_need_csrf(admin_client: Client, sandbox: Any) -> None:
    assert admin_client.get(action_url()).status_code == 405
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(User.objects.get(username="admin"))
    assert csrf_client.post(action_url(), form_data(sandbox)).status_code == 403
    assert sandbox.connections == 0


# -- Test connection -----------------------------------------------------------------------


def test_test_connection_on_the_add_page_uses_the_typed_values(admin_client: Client, sandbox: Any) -> None:
    response = admin_client.post(action_url(), form_data(sandbox), **XHR)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-outcome="ok"' in html
    assert "Connection succeeded" in html
    for step in ("dns", "connect", "greeting", "tls", "ehlo", "auth", "quit"):
        assert f'data-step="{step}"' in html
    assert "SMTP transcript" in html
    assert "AUTH PLAIN &lt;redacted&gt;" in html or "AUTH LOGIN" in html
    assert SANDBOX_PASSWORD not in html
    assert "<html" not in html  # a fragment for the page's script
    assert not GmailAccount.objects.exists()  # nothing saved
    assert sandbox.auth_attempts == 1


def test_test_connection_without_javascript_answers_with_a_page(admin_client: Client, sandbox: Any) -> None:
    response = admin_client.post(action_url(), form_data(sandbox))
    html = response.content.decode()
    assert "<html" in html
    assert 'data-outcome="ok"' in html
    assert SANDBOX_PASSWORD not in html


def test_test_connection_with_a_blank_secret_uses_the_stored_one_and_records_the_result(
    admin_client: Client, sandbox: Any
) -> None:
    account = stored_account(sandbox)
    response = admin_client.post(action_url(account), form_data(sandbox, app_password=""), **XHR)
    assert 'data-outcome="ok"' in response.content.decode()
    account.refresh_from_db()
    assert account.last_check_ok is True
    assert account.last_checked_at is not None
    assert "sign-in succeeded" in account.last_check_message
    html = admin_client.get(reverse(CHANGELIST_URL)).content.decode()
    assert 'class="gmail-smtp-badge badge-ok"' in html
    assert ">passed</span>" in html  # in words, not only in colour


def test_test_connection_failure_shows_the_step_cause_and_fix(admin_client: Client, sandbox: Any) -> None:
    account = stored_account(sandbox)
    sandbox.inject("bad_credentials")
    response = admin_client.post(action_url(account), form_data(sandbox, app_password=""), **XHR)
    html = response.content.decode()
    assert 'data-outcome="failed"' in html
    assert "Failed at: Sign-in" in html
    assert "[bad_credentials]" in html
    assert "app password" in html  # the fix
    assert "535" in html  # the server's reply
    assert SANDBOX_PASSWORD not in html
    account.refresh_from_db()
    assert account.last_check_ok is False
    assert "Sign-in" in account.last_check_message
    assert SANDBOX_PASSWORD not in account.last_check_message


def test_test_connection_tests_unsaved_values_and_saves_nothing(admin_client: Client, sandbox: Any) -> None:
    account = stored_account(sandbox)
    account.record_check(True, "Connection, TLS and sign-in succeeded.")
    port = free_port()
    # Another port: the stored password is not sent there (tests/test_secret_binding.py), the typed one is.
    response = admin_client.post(action_url(account), form_data(sandbox, port=port), **XHR)
    html = response.content.decode()
    assert 'data-outcome="failed"' in html
    assert 'data-step="connect"' in html
    assert "not saved" in html
    account.refresh_from_db()
    assert account.port == sandbox.starttls_port
    assert account.last_check_ok is True  # the saved values' status is not overwritten
    # Saving exactly the values that were tested makes that test the account's last one.
    admin_client.post(change_url(account), form_data(sandbox, port=port))
    account.refresh_from_db()
    assert (account.port, account.last_check_ok) == (port, False)
    assert "TCP connection" in account.last_check_message


def test_a_test_before_the_first_save_is_recorded_on_the_new_account(admin_client: Client, sandbox: Any) -> None:
    response = admin_client.post(action_url(), form_data(sandbox), **XHR)
    assert 'data-outcome="ok"' in response.content.decode()
    admin_client.post(reverse("admin:gmail_smtp_gmailaccount_add"), form_data(sandbox))
    account = GmailAccount.objects.get(name="shop")
    assert account.last_check_ok is True
    assert "sign-in succeeded" in account.last_check_message
    # A test of other values (another password) is not recorded on a later save.
    admin_client.post(action_url(), form_data(sandbox, name="other", app_password=OTHER_PASSWORD), **XHR)
    admin_client.post(reverse("admin:gmail_smtp_gmailaccount_add"), form_data(sandbox, name="other"))
    assert GmailAccount.objects.get(name="other").last_check_ok is None


def test_test_connection_reports_rule_errors_as_the_configuration_step(admin_client: Client) -> None:
    # Port 465 with STARTTLS for Gmail: refused before any connection is made.
    response = admin_client.post(action_url(), form_data(port=465), **XHR)
    html = response.content.decode()
    assert 'data-outcome="invalid"' in html  # not run: Save would refuse these values too
    assert "gmail_smtp.E003" in html
    assert 'data-step="dns"' not in html  # nothing was looked up or connected
    assert "EMAIL_" not in html  # worded for the form, not for settings.py


def test_test_connection_with_an_invalid_field_explains_it(admin_client: Client, sandbox: Any) -> None:
    response = admin_client.post(action_url(), form_data(sandbox, port="abc"), **XHR)
    html = response.content.decode()
    assert 'data-outcome="invalid"' in html
    assert "Port" in html
    assert sandbox.connections == 0


# -- Send test email -----------------------------------------------------------------------


def test_send_test_email_delivers_and_shows_the_server_reply(admin_client: Client, sandbox: Any) -> None:
    account = stored_account(sandbox)
    response = admin_client.post(
        action_url(account, "send"),
        form_data(sandbox, app_password="", _test_recipient="operator@example.com"),
        **XHR,
    )
    html = response.content.decode()
    assert 'data-outcome="ok"' in html, html
    assert "Server&#x27;s reply:" in html or "Server's reply:" in html
    assert "250 2.0.0 OK" in html
    assert SANDBOX_PASSWORD not in html
    received = sandbox.wait_for_messages(1)[0]
    assert received.rcpt_tos == ["operator@example.com"]
    assert received.mail_from == SANDBOX_USER
    account.refresh_from_db()
    assert account.last_check_ok is True
    assert "operator@example.com" in account.last_check_message


def test_send_test_email_defaults_to_the_operators_address(admin_client: Client, sandbox: Any) -> None:
    html = admin_client.get(reverse(ADD_URL)).content.decode()
    assert 'value="admin@example.com"' in html


def test_send_test_email_needs_a_valid_recipient(admin_client: Client, sandbox: Any) -> None:
    response = admin_client.post(action_url(action="send"), form_data(sandbox, _test_recipient="nobody"), **XHR)
    html = response.content.decode()
    assert "Enter the address to send the test email to." in html
    assert sandbox.connections == 0


def test_send_test_email_failure_has_a_cause(admin_client: Client, sandbox: Any) -> None:
    sandbox.inject("daily_quota")
    response = admin_client.post(
        action_url(action="send"), form_data(sandbox, _test_recipient="operator@example.com"), **XHR
    )
    html = response.content.decode()
    assert 'data-outcome="failed"' in html
    assert "550" in html
    assert "[daily_quota]" in html


# -- Send test email and confirm delivery (the round trip) ---------------------------------


@pytest.fixture
def mailbox_sandbox(settings: Any, sandbox: Any) -> Any:
    """The sandbox, with its IMAP server as the accounts' mailbox (GMAIL_SMTP['IMAP_HOST'/'IMAP_PORT'])."""
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "IMAP_HOST": sandbox.host, "IMAP_PORT": sandbox.imap_port}
    settings.DEFAULT_FROM_EMAIL = SANDBOX_USER
    return sandbox


def test_confirm_delivery_shows_where_the_message_arrived_and_records_it(
    admin_client: Client, mailbox_sandbox: Any
) -> None:
    account = stored_account(mailbox_sandbox)
    page = admin_client.get(change_url(account)).content.decode()
    assert "Send test email and confirm delivery" in page
    assert action_url(account, "round_trip") in page
    response = admin_client.post(action_url(account, "round_trip"), form_data(mailbox_sandbox, app_password=""), **XHR)
    html = response.content.decode()
    assert 'data-outcome="ok"' in html, html
    assert "Delivery confirmed: the test email arrived in INBOX after" in html
    for name in ("imap_connect", "round_trip_arrival", "round_trip_folder", "round_trip_from", "round_trip_cleanup"):
        assert f'data-step="{name}"' in html
    assert "Mailbox (IMAP) transcript (credentials hidden)" in html
    assert " LOGIN &lt;redacted&gt;" in html
    assert SANDBOX_PASSWORD not in html
    assert mailbox_sandbox.mailbox.all_messages(SANDBOX_USER) == []  # deleted after it was found
    account.refresh_from_db()
    assert account.last_check_ok is True
    assert "it arrived in INBOX" in account.last_check_message


def test_confirm_delivery_reports_spam_with_its_cause(admin_client: Client, mailbox_sandbox: Any) -> None:
    mailbox_sandbox.inject("spam")
    response = admin_client.post(action_url(action="round_trip"), form_data(mailbox_sandbox), **XHR)
    html = response.content.decode()
    assert 'data-outcome="failed"' in html
    assert "[round_trip_spam]" in html
    assert "[Gmail]/Spam" in html


def test_confirm_delivery_needs_the_test_permission(staff_client: Client, mailbox_sandbox: Any) -> None:
    account = stored_account(mailbox_sandbox)
    assert "confirm delivery" not in staff_client.get(change_url(account)).content.decode()
    for url in (action_url(account, "round_trip"), action_url(action="round_trip")):
        assert staff_client.post(url, form_data(mailbox_sandbox)).status_code == 403
    assert mailbox_sandbox.connections == 0


# -- list action ---------------------------------------------------------------------------


def test_list_action_tests_stored_accounts(admin_client: Client, sandbox: Any) -> None:
    good = stored_account(sandbox, name="good")
    bad = stored_account(sandbox, name="bad", password=OTHER_PASSWORD)
    response = admin_client.post(
        reverse(CHANGELIST_URL), {"action": "test_selected", "_selected_action": [good.pk, bad.pk]}, follow=True
    )
    html = response.content.decode()
    # The admin capitalises a message's first letter: the names are not at the start, so stay as they are.
    assert "Gmail account “good”: Connection, TLS and sign-in succeeded." in html
    assert "Gmail account “bad”: Failed at Sign-in" in html
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.last_check_ok, bad.last_check_ok) == (True, False)


def test_list_action_needs_the_change_permission_too(client: Client, sandbox: Any) -> None:
    """As the buttons do: test + view alone is not enough."""
    account = stored_account(sandbox)
    viewer = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_gmailaccount", "test_gmailaccount"]))
    client.force_login(viewer)
    page = client.get(reverse(CHANGELIST_URL)).content.decode()
    assert "test_selected" not in page
    client.post(reverse(CHANGELIST_URL), {"action": "test_selected", "_selected_action": [account.pk]})
    assert sandbox.connections == 0
    account.refresh_from_db()
    assert account.last_checked_at is None
    assert not LogEntry.objects.exists()

    viewer.user_permissions.add(Permission.objects.get(codename="change_gmailaccount"))
    client.force_login(User.objects.get(pk=viewer.pk))  # a fresh permission cache
    assert "test_selected" in client.get(reverse(CHANGELIST_URL)).content.decode()
    client.post(reverse(CHANGELIST_URL), {"action": "test_selected", "_selected_action": [account.pk]})
    account.refresh_from_db()
    assert account.last_check_ok is True


# -- the admin history: every test, test email and authorization ------------------------------


def history(account: GmailAccount | None = None) -> list[LogEntry]:
    entries = LogEntry.objects.order_by("pk")
    return list(entries.filter(object_id=str(account.pk)) if account is not None else entries)


def assert_no_secret_in_history() -> None:
    for entry in LogEntry.objects.all():
        assert SANDBOX_PASSWORD not in entry.change_message
        assert OTHER_PASSWORD not in entry.change_message
        assert SANDBOX_PASSWORD not in entry.object_repr


def test_test_connection_is_recorded_with_who_where_what_and_the_result(admin_client: Client, sandbox: Any) -> None:
    account = stored_account(sandbox)
    admin_client.post(action_url(account), form_data(sandbox, app_password=""), **XHR)
    sandbox.inject("bad_credentials")
    admin_client.post(action_url(account), form_data(sandbox, app_password=OTHER_PASSWORD, timeout="6"), **XHR)
    ok, failed = history(account)
    assert ok.user.username == failed.user.username == "admin"
    assert ok.is_change()
    assert ok.change_message == (
        "Test connection: Connection, TLS and sign-in succeeded. "
        f"Server 127.0.0.1:{sandbox.starttls_port} (STARTTLS (port 587)), user {SANDBOX_USER}, "
        "the stored app password."
    )
    assert failed.change_message.startswith("Test connection: Failed at Sign-in")
    assert "(535 5.7.8)" in failed.change_message
    assert "(Tested with unsaved changes.)" in failed.change_message
    assert "a typed app password" in failed.change_message
    assert_no_secret_in_history()
    page = admin_client.get(reverse("admin:gmail_smtp_gmailaccount_history", args=[account.pk])).content.decode()
    assert "Connection, TLS and sign-in succeeded." in page


def test_send_test_email_is_recorded(admin_client: Client, sandbox: Any) -> None:
    account = stored_account(sandbox)
    data = form_data(sandbox, app_password="", _test_recipient="operator@example.com")
    admin_client.post(action_url(account, "send"), data, **XHR)
    (entry,) = history(account)
    assert entry.change_message.startswith("Send test email: Test email sent to operator@example.com;")
    assert "250 2.0.0 OK" in entry.change_message
    assert_no_secret_in_history()


def test_a_test_refused_by_the_form_is_recorded_too(admin_client: Client, sandbox: Any) -> None:
    account = stored_account(sandbox)
    admin_client.post(action_url(account, "send"), form_data(sandbox, _test_recipient="nobody"), **XHR)
    (entry,) = history(account)
    assert entry.change_message.startswith("Send test email: Not run: Enter the address")
    assert sandbox.connections == 0


def test_a_test_on_the_add_page_is_recorded_without_an_account(admin_client: Client, sandbox: Any) -> None:
    admin_client.post(action_url(), form_data(sandbox, name="new-shop"), **XHR)
    (entry,) = history()
    assert entry.object_id is None
    assert entry.object_repr == "new-shop"
    assert entry.content_type is not None
    assert entry.content_type.model_class() is GmailAccount
    assert entry.change_message.startswith("Test connection: Connection, TLS and sign-in succeeded.")
    assert "a typed app password" in entry.change_message
    assert_no_secret_in_history()
    assert "new-shop" in admin_client.get(reverse("admin:index")).content.decode()  # under Recent actions


def test_list_action_is_recorded_per_account(admin_client: Client, sandbox: Any) -> None:
    good = stored_account(sandbox, name="good")
    bad = stored_account(sandbox, name="bad", password=OTHER_PASSWORD)
    admin_client.post(reverse(CHANGELIST_URL), {"action": "test_selected", "_selected_action": [good.pk, bad.pk]})
    (good_entry,) = history(good)
    (bad_entry,) = history(bad)
    assert good_entry.change_message.startswith(
        "Test the connection of the selected accounts: Connection, TLS and sign-in succeeded."
    )
    assert bad_entry.change_message.startswith("Test the connection of the selected accounts: Failed at Sign-in")
    assert_no_secret_in_history()


# -- what the buttons refuse and how they speak (#14) -------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("port", "99999999999999999999", "65535"),
        ("port", "0", "1"),
        ("timeout", "1e300", "300"),
        ("host", "https://smtp.gmail.com", "smtp.gmail.com"),
    ],
)
def test_no_test_runs_on_values_save_would_refuse(
    admin_client: Client, sandbox: Any, field: str, value: str, said: str
) -> None:
    response = admin_client.post(action_url(), form_data(sandbox, **{field: value}), **XHR)
    html = response.content.decode()
    assert 'data-outcome="invalid"' in html
    assert said in html
    assert "OverflowError" not in html
    assert "unexpected_error" not in html
    assert sandbox.messages == []
    assert admin_client.post(reverse(ADD_URL), form_data(sandbox, **{field: value})).status_code == 200  # refused


def test_the_buttons_speak_of_the_form_not_of_settings(admin_client: Client, sandbox: Any, settings: Any) -> None:
    # STARTTLS was not used where the server asks for it: the fix names the "Security" field.
    response = admin_client.post(
        action_url(), form_data(sandbox, port=sandbox.ssl_port, security="starttls", timeout="2"), **XHR
    )
    html = response.content.decode()
    for setting in ("EMAIL_", "MAILERS OPTIONS", "-v 3", "= True"):
        assert setting not in html
    # W002 (not a Gmail host) respects SILENCED_SYSTEM_CHECKS in the admin too (saved: no network).
    saved = admin_client.post(reverse(ADD_URL), form_data(host="mail.example.com"), follow=True)
    assert "gmail_smtp.W002" in saved.content.decode()
    settings.SILENCED_SYSTEM_CHECKS = ["gmail_smtp.W002"]
    saved = admin_client.post(reverse(ADD_URL), form_data(name="other", host="mail.example.com"), follow=True)
    assert "was added successfully" in saved.content.decode()
    assert "gmail_smtp.W002" not in saved.content.decode()


def test_each_cause_is_shown_once(admin_client: Client, sandbox: Any) -> None:
    sandbox.inject("bad_credentials")
    html = admin_client.post(action_url(), form_data(sandbox), **XHR).content.decode()
    assert html.count("Gmail did not accept the username and password") == 1


def test_the_page_without_javascript_links_back_to_the_form(admin_client: Client, sandbox: Any) -> None:
    account = stored_account(sandbox)
    page = admin_client.post(action_url(account), form_data(sandbox, app_password="")).content.decode()
    assert f'href="{change_url(account)}"' in page
    assert "history.back" not in page
    page = admin_client.post(action_url(), form_data(sandbox)).content.decode()
    assert f'href="{reverse(ADD_URL)}"' in page


def test_the_test_email_says_it_came_from_the_admin(admin_client: Client, sandbox: Any) -> None:
    admin_client.post(action_url(action="send"), form_data(sandbox, _test_recipient="bob@example.com"), **XHR)
    [received] = sandbox.wait_for_messages(1)
    assert received.message["Subject"] == "Test email from the Django admin"
    assert "Django admin" in received.message.get_payload()
    assert "gmail_check" not in received.message.get_payload()


def test_last_test_is_words_on_a_label_with_one_date_format(admin_client: Client, sandbox: Any) -> None:
    account = stored_account(sandbox)
    account.record_check(False, "Failed at Sign-in: Gmail did not accept the username and password (535 5.7.8).")
    page = admin_client.get(change_url(account)).content.decode()
    assert '<span class="gmail-smtp-badge badge-failed"' in page
    assert ">failed</span>" in page
    assert "Gmail did not accept" in page.split("field-last_check_detail")[1]  # written out, not only on hover
    times = re.findall(r'<time datetime="[^"]+" title="[^"]+">([^<]+)</time>', page)
    assert len(times) == 3  # last test, created, updated: all in the same short format
    assert len({len(t) for t in times}) == 1
