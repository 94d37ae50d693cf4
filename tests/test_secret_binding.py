"""A stored secret only ever goes to the destination it was entered for (README.md#security).

The attacker is a second Gmail sandbox on loopback whose certificate is trusted like the real one
(both CAs in ``GMAIL_SMTP['SSL_CAFILE']``), as a server with a publicly trusted certificate would
be. It records every connection and AUTH attempt: it must see none.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core import mail, serializers
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from django_gmail_smtp import accounts, crypto, diagnose
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.exceptions import GmailConfigError, SecretDestinationError
from django_gmail_smtp.models import GmailAccount
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox, OAuthServer

from .conftest import gmail_check
from .test_admin import XHR, action_url, change_url, form_data, stored_account

pytestmark = pytest.mark.django_db

ATTACKER_USER = "attacker@example.com"
ATTACKER_PASSWORD = "zyxwvutsrqponmlk"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="module")
def attacker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GmailSandbox]:
    with GmailSandbox(
        users={ATTACKER_USER: ATTACKER_PASSWORD}, state_dir=tmp_path_factory.mktemp("attacker")
    ) as server:
        yield server


@pytest.fixture
def attacker(attacker_server: GmailSandbox) -> GmailSandbox:
    attacker_server.drop_connections()
    attacker_server.reset()
    return attacker_server


@pytest.fixture
def sandbox(settings: Any, gmail_sandbox: GmailSandbox, attacker: GmailSandbox, tmp_path: Path) -> GmailSandbox:
    """The real server; the attacker's certificate is trusted just as much."""
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_text(Path(gmail_sandbox.ca_file).read_text() + Path(attacker.ca_file).read_text())
    settings.GMAIL_SMTP = {**(getattr(settings, "GMAIL_SMTP", None) or {}), "SSL_CAFILE": str(bundle)}
    return gmail_sandbox


@pytest.fixture
def operator(client: Client) -> Client:
    """Staff who may view, change and test accounts: no superuser, no add or delete."""
    user = User.objects.create_user("operator", "operator@example.com", "pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="gmail_smtp",
            codename__in=["view_gmailaccount", "change_gmailaccount", "test_gmailaccount"],
        )
    )
    client.force_login(user)
    return client


def a_message() -> mail.EmailMessage:
    return mail.EmailMessage("Hello", "Body", SANDBOX_USER, ["to@example.com"])


def assert_untouched(attacker: GmailSandbox) -> None:
    assert attacker.connections == 0
    assert attacker.auth_attempts == 0
    assert attacker.auth_log == []
    assert attacker.mailbox_connections == 0  # nor its IMAP/POP3 servers (the round trip)


# -- the admin form: the secret must be typed again --------------------------------------------


@pytest.mark.parametrize("action", ["test", "send", "round_trip"])
def test_buttons_with_another_server_and_a_blank_secret_send_nothing_there(
    operator: Client, sandbox: GmailSandbox, attacker: GmailSandbox, action: str, settings: Any
) -> None:
    # The mailbox of the round trip on the attacker's host too: still nothing may go there.
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "IMAP_HOST": attacker.host, "IMAP_PORT": attacker.imap_port}
    account = stored_account(sandbox)
    data = form_data(sandbox, app_password="", port=attacker.starttls_port, _test_recipient="me@example.com")
    html = operator.post(action_url(account, action), data, **XHR).content.decode()
    assert "gmail_smtp.E020" in html
    assert "App password:" in html  # the field to fill in
    assert "the “Port” field was" in html
    assert_untouched(attacker)
    assert sandbox.connections == 0
    account.refresh_from_db()
    assert account.port == sandbox.starttls_port


def test_saving_another_server_needs_the_secret_again_and_the_next_send_stays_home(
    operator: Client, sandbox: GmailSandbox, attacker: GmailSandbox
) -> None:
    account = stored_account(sandbox)
    response = operator.post(change_url(account), form_data(sandbox, app_password="", port=attacker.starttls_port))
    assert response.status_code == 200
    html = response.content.decode()
    assert "gmail_smtp.E020" in html
    assert "Type the app password again, or put the old values back." in html
    account.refresh_from_db()
    assert account.port == sandbox.starttls_port
    assert EmailBackend(account="shop").send_messages([a_message()]) == 1
    assert sandbox.wait_for_messages(1)[0].auth_user == SANDBOX_USER
    assert_untouched(attacker)


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"host": "localhost"}, ["Host"]),
        ({"security": "ssl", "port": None}, ["Port", "Security"]),
        ({"username": ATTACKER_USER}, ["Gmail address"]),
    ],
)
def test_each_destination_field_needs_the_secret_again(
    operator: Client, sandbox: GmailSandbox, attacker: GmailSandbox, change: dict[str, Any], fields: list[str]
) -> None:
    account = stored_account(sandbox)
    if "port" in change:
        change["port"] = sandbox.ssl_port
    html = operator.post(change_url(account), form_data(sandbox, app_password="", **change)).content.decode()
    assert "gmail_smtp.E020" in html
    for field in fields:
        assert f"the “{field}” field was" in html
    assert GmailAccount.objects.get().encrypted_secret == account.encrypted_secret


def test_fields_outside_the_destination_need_no_retyping(operator: Client, sandbox: GmailSandbox) -> None:
    account = stored_account(sandbox)
    data = form_data(sandbox, app_password="", name="renamed", timeout="7", from_aliases="news@example.com")
    response = operator.post(change_url(account), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert EmailBackend(account="renamed").send_messages([a_message()]) == 1
    sandbox.wait_for_messages(1)


def test_typing_the_secret_again_binds_it_to_the_new_server(
    operator: Client, sandbox: GmailSandbox, attacker: GmailSandbox
) -> None:
    account = stored_account(sandbox)
    data = form_data(sandbox, app_password=ATTACKER_PASSWORD, username=ATTACKER_USER, port=attacker.starttls_port)
    assert operator.post(change_url(account), data).status_code == 302
    assert EmailBackend(account="shop").send_messages([a_message()]) == 1
    assert [record.user for record in attacker.auth_log] == [ATTACKER_USER]  # the typed one, for that server
    assert sandbox.auth_attempts == 0


def test_the_attempt_is_in_the_admin_history(operator: Client, sandbox: GmailSandbox, attacker: GmailSandbox) -> None:
    account = stored_account(sandbox)
    operator.post(action_url(account), form_data(sandbox, app_password="", port=attacker.starttls_port), **XHR)
    entry = LogEntry.objects.get(object_id=str(account.pk))
    assert entry.user.username == "operator"
    assert "Not run" in entry.change_message
    assert f"127.0.0.1:{attacker.starttls_port}" in entry.change_message
    assert "gmail_smtp.E020" in entry.change_message
    assert SANDBOX_PASSWORD not in entry.change_message


# -- rows changed some other way: the backend refuses ----------------------------------------


def test_backend_refuses_a_row_moved_with_queryset_update(sandbox: GmailSandbox, attacker: GmailSandbox) -> None:
    stored_account(sandbox)
    assert EmailBackend(account="shop").config.port == sandbox.starttls_port  # cached now
    GmailAccount.objects.update(port=attacker.starttls_port)
    accounts.invalidate()  # as the README says to after QuerySet.update()
    with pytest.raises(SecretDestinationError) as info:
        EmailBackend(account="shop").send_messages([a_message()])
    assert isinstance(info.value, GmailConfigError)
    assert info.value.check_id == "gmail_smtp.E020"
    assert info.value.changed == ("port",)
    text = str(info.value)
    assert "'shop'" in text
    assert f"port was {sandbox.starttls_port}" in text
    assert "Enter the secret again" in text
    assert SANDBOX_PASSWORD not in text
    assert_untouched(attacker)


@pytest.mark.django_db(transaction=True)  # so that the snapshot is cached at all
def test_a_tampered_cache_entry_cannot_carry_the_secret_elsewhere(
    sandbox: GmailSandbox, attacker: GmailSandbox
) -> None:
    """Whoever can write the shared cache still cannot redirect the (encrypted) secret."""
    stored_account(sandbox)
    accounts.snapshot()
    key = f"{accounts.KEY_PREFIX}:{accounts._generation()}"
    snapshot = cache.get(key)
    snapshot["accounts"]["shop"]["port"] = attacker.starttls_port
    cache.set(key, snapshot)
    with pytest.raises(SecretDestinationError, match="port was"):
        EmailBackend(account="shop")
    assert_untouched(attacker)


def test_a_fixture_that_moves_a_row_is_refused(sandbox: GmailSandbox, attacker: GmailSandbox, tmp_path: Path) -> None:
    account = stored_account(sandbox)
    document = json.loads(serializers.serialize("json", [account]))
    document[0]["fields"] |= {"host": "LOCALHOST.", "port": attacker.starttls_port}
    fixture = tmp_path / "accounts.json"
    fixture.write_text(json.dumps(document))
    call_command("loaddata", str(fixture), verbosity=0)
    with pytest.raises(SecretDestinationError) as info:
        EmailBackend(account="shop")
    assert info.value.changed == ("host", "port")
    assert_untouched(attacker)


def test_gmail_check_and_the_list_action_refuse_a_moved_row(
    admin_client: Client, sandbox: GmailSandbox, attacker: GmailSandbox
) -> None:
    account = stored_account(sandbox)
    GmailAccount.objects.update(port=attacker.starttls_port)
    outcome = gmail_check("--account", "shop")
    assert outcome.code == diagnose.EXIT_CODES["config"]
    assert "gmail_smtp.E020" in outcome.text
    response = admin_client.post(
        reverse("admin:gmail_smtp_gmailaccount_changelist"),
        {"action": "test_selected", "_selected_action": [account.pk]},
        follow=True,
    )
    assert "entered for another destination" in response.content.decode()
    assert_untouched(attacker)


def test_a_secret_bound_to_nothing_is_never_used(
    admin_client: Client, sandbox: GmailSandbox, attacker: GmailSandbox
) -> None:
    """As stored before the binding (and not upgraded by the migration)."""
    account = stored_account(sandbox)
    GmailAccount.objects.update(encrypted_secret=crypto.encrypt(json.dumps({"password": SANDBOX_PASSWORD})))
    with pytest.raises(SecretDestinationError) as info:
        EmailBackend(account="shop")
    assert info.value.check_id == "gmail_smtp.E021"
    assert "manage.py migrate" in str(info.value)
    html = admin_client.post(action_url(account), form_data(sandbox, app_password=""), **XHR).content.decode()
    assert "gmail_smtp.E021" in html
    assert "bound to no server" in admin_client.get(change_url(account)).content.decode()
    assert sandbox.connections == 0
    assert_untouched(attacker)


def test_rotating_keys_keeps_the_binding_and_names_unbound_secrets(
    settings: Any, sandbox: GmailSandbox, attacker: GmailSandbox
) -> None:
    stored_account(sandbox)
    legacy = GmailAccount(name="legacy", username=SANDBOX_USER, host=sandbox.host, port=sandbox.starttls_port)
    legacy.save()
    GmailAccount.objects.filter(name="legacy").update(encrypted_secret=crypto.encrypt(json.dumps({"password": "x"})))
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key", [settings.SECRET_KEY]
    out = io.StringIO()
    call_command("gmail_rotate_keys", stdout=out)
    assert "bound to no server" in out.getvalue()
    assert "'legacy'" in out.getvalue()
    settings.SECRET_KEY_FALLBACKS = []
    assert EmailBackend(account="shop").send_messages([a_message()]) == 1
    GmailAccount.objects.filter(name="shop").update(port=attacker.starttls_port)
    accounts.invalidate()
    with pytest.raises(SecretDestinationError):
        EmailBackend(account="shop")
    assert_untouched(attacker)


# -- the upgrade: migration 0003 binds what it can read, once ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_migration_binds_readable_secrets_to_their_rows(settings: Any, sandbox: GmailSandbox) -> None:
    call_command("migrate", "gmail_smtp", "0002", verbosity=0)
    try:
        legacy = crypto.encrypt(json.dumps({"password": SANDBOX_PASSWORD}))
        GmailAccount.objects.create(
            name="shop", username=SANDBOX_USER, host=sandbox.host, port=sandbox.starttls_port, encrypted_secret=legacy
        )
        settings.SECRET_KEY, real_key = "another-key-for-a-moment", settings.SECRET_KEY
        unreadable = crypto.encrypt(json.dumps({"password": SANDBOX_PASSWORD}))
        settings.SECRET_KEY = real_key
        GmailAccount.objects.create(
            name="lost",
            username=SANDBOX_USER,
            host=sandbox.host,
            port=sandbox.starttls_port,
            encrypted_secret=unreadable,
        )
        with pytest.raises(SecretDestinationError, match="E021"):
            accounts.account_options("shop")  # new code, old rows: nothing is sent before migrate
        call_command("migrate", "gmail_smtp", "0003", verbosity=0)
        assert EmailBackend(account="shop").send_messages([a_message()]) == 1  # the cache was invalidated
        assert GmailAccount.objects.get(name="lost").encrypted_secret == unreadable  # left for the admin
        settings.SECRET_KEY_FALLBACKS = ["another-key-for-a-moment"]
        with pytest.raises(SecretDestinationError, match="E021"):
            accounts.account_options("lost")
        call_command("migrate", "gmail_smtp", "0002", verbosity=0)
        shop = GmailAccount.objects.get(name="shop").encrypted_secret
        assert json.loads(crypto.decrypt(shop)) == {"password": SANDBOX_PASSWORD}  # what 0002's code reads
    finally:
        call_command("migrate", "gmail_smtp", verbosity=0)
    sandbox.wait_for_messages(1)


# -- OAuth2: the client secret and refresh token, and the token endpoint ------------------------


@pytest.fixture
def oauth_account(sandbox: GmailSandbox, gmail_oauth: OAuthServer) -> GmailAccount:
    """Authorized; ``sandbox`` first, so that gmail_oauth keeps its CA bundle in GMAIL_SMTP."""
    account = GmailAccount(
        name="shop",
        username=SANDBOX_USER,
        auth_method=GmailAccount.AuthMethod.OAUTH2,
        host=sandbox.host,
        port=sandbox.starttls_port,
        timeout=5,
    )
    account.set_oauth(
        client_id=gmail_oauth.client_id,
        client_secret=gmail_oauth.client_secret,
        refresh_token=gmail_oauth.issue_refresh_token(),
    )
    account.save()
    return account


def oauth_form(account: GmailAccount, client_id: str, **overrides: Any) -> dict[str, Any]:
    data = {
        "name": account.name,
        "username": account.username,
        "auth_method": "oauth2",
        "oauth_client_id": client_id,
        "host": account.host,
        "port": account.port,
        "security": "starttls",
        "timeout": "5",
        "enabled": "on",
    }
    return {key: value for key, value in (data | overrides).items() if value is not None}


def test_a_new_token_endpoint_makes_stored_oauth_secrets_unusable(
    settings: Any, oauth_account: GmailAccount, gmail_oauth: OAuthServer
) -> None:
    assert EmailBackend(account="shop").send_messages([a_message()]) == 1
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "OAUTH_TOKEN_URI": "http://127.0.0.1:9/token"}
    cache.clear()
    gmail_oauth.reset()
    with pytest.raises(SecretDestinationError) as info:
        EmailBackend(account="shop")
    assert info.value.changed == ("token_uri",)
    assert "OAUTH_TOKEN_URI" in str(info.value)
    assert gmail_oauth.token_requests == 0


def test_oauth_form_with_another_server_needs_the_client_secret_and_drops_the_refresh_token(
    operator: Client, oauth_account: GmailAccount, gmail_oauth: OAuthServer, attacker: GmailSandbox
) -> None:
    moved = oauth_form(oauth_account, gmail_oauth.client_id, port=attacker.starttls_port)
    html = operator.post(action_url(oauth_account), moved, **XHR).content.decode()
    assert "OAuth2 client secret:" in html
    assert "gmail_smtp.E020" in html
    assert_untouched(attacker)
    assert gmail_oauth.token_requests == 0
    response = operator.post(change_url(oauth_account), moved | {"oauth_client_secret": gmail_oauth.client_secret})
    assert response.status_code == 302
    oauth_account.refresh_from_db()
    assert oauth_account.port == attacker.starttls_port
    assert oauth_account.get_oauth()["refresh_token"] == ""  # it was issued for the old destination


def test_authorize_with_google_refuses_an_unsaved_or_moved_destination(
    operator: Client, oauth_account: GmailAccount, gmail_oauth: OAuthServer, attacker: GmailSandbox
) -> None:
    url = reverse("admin:gmail_smtp_gmailaccount_oauth_authorize", args=[oauth_account.pk])
    moved = oauth_form(oauth_account, gmail_oauth.client_id, port=attacker.starttls_port)
    response = operator.post(url, moved)
    assert response.status_code == 400
    html = response.content.decode()
    assert "gmail_smtp.E020" in html
    assert "OAuth2 client secret:" in html
    # The client secret typed: still the saved account that gets Google's answer. Save first.
    response = operator.post(url, moved | {"oauth_client_secret": gmail_oauth.client_secret})
    assert response.status_code == 400
    assert "Save the account first" in response.content.decode()
    # Moved behind the admin's back: refused too.
    GmailAccount.objects.update(port=attacker.starttls_port)
    response = operator.post(url)
    assert response.status_code == 302
    assert urlsplit(response["Location"]).path == change_url(oauth_account)
    assert "entered for another destination" in operator.get(response["Location"]).content.decode()
    history = [entry.change_message for entry in LogEntry.objects.order_by("pk")]
    assert len(history) == 3
    assert all(message.startswith("Authorize with Google: refused") for message in history)
    assert gmail_oauth.token_requests == 0
    assert_untouched(attacker)


def test_callback_refuses_an_account_moved_during_the_authorization(
    operator: Client, oauth_account: GmailAccount, gmail_oauth: OAuthServer, attacker: GmailSandbox
) -> None:
    url = reverse("admin:gmail_smtp_gmailaccount_oauth_authorize", args=[oauth_account.pk])
    location = operator.post(url)["Location"]
    answer = requests.get(location, allow_redirects=False, timeout=5)  # the consent page says yes
    back = urlsplit(answer.headers["Location"])
    GmailAccount.objects.update(port=attacker.starttls_port)
    response = operator.get(f"{back.path}?{back.query}")
    assert response.status_code == 400
    assert "entered for another destination" in response.content.decode()
    assert gmail_oauth.token_requests == 0  # the client secret did not leave
    messages = [entry.change_message for entry in LogEntry.objects.order_by("pk")]
    assert messages[0].startswith("Authorize with Google: started")
    assert messages[1].startswith("Authorize with Google: failed")
    assert_untouched(attacker)


def test_gmail_authorize_refuses_a_moved_account(oauth_account: GmailAccount, attacker: GmailSandbox) -> None:
    GmailAccount.objects.update(port=attacker.starttls_port)
    with pytest.raises(CommandError) as info:
        call_command("gmail_authorize", "--account", "shop", "--headless", stdin=io.StringIO(""), stdout=io.StringIO())
    assert info.value.returncode == diagnose.EXIT_CODES["config"]
    assert "gmail_smtp.E020" in str(info.value)
