"""The app's admin pages in a real browser (Debian's Chromium via Playwright), as an operator uses them.

Every page is checked with axe-core (no serious or critical violation, in English and Japanese),
walked with the Tab key (every button is reached) and saved as a screenshot under
``artifacts/screenshots/`` (README.md#screenshots-and-accessibility-tests). Helpers: :mod:`tests.browser`.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_gmail_smtp.models import DeliveryLog, GmailAccount
from django_gmail_smtp.queued import QueuedEmailBackend
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER
from tests.browser import check_list_fits, check_page, chromium, open_page, screenshot
from tests.queue_support import HAVE_TASKS_DB, NO_TASKS_DB
from tests.test_queue import enqueued, queued_backend, run_enqueued, sandbox_mail

__all__ = ["chromium", "sandbox_mail"]  # fixtures used below

LOG = "/admin/gmail_smtp/deliverylog/"
ACCOUNTS = "/admin/gmail_smtp/gmailaccount/"
needs_tasks = pytest.mark.skipif(not HAVE_TASKS_DB, reason=NO_TASKS_DB)


def fill_the_log(sandbox: Any, settings: Any) -> dict[str, DeliveryLog]:
    """A log an operator would see: sent messages, a refused recipient, one held by the daily limit."""
    settings.GMAIL_SMTP["QUOTA_LIMITS"] = {SANDBOX_USER: 4}
    account = GmailAccount(name="shop", username=SANDBOX_USER, host=sandbox.host, port=sandbox.starttls_port, timeout=5)
    account.set_password(SANDBOX_PASSWORD)
    account.save()
    settings.GMAIL_SMTP["SSL_CAFILE"] = sandbox.ca_file
    backend = QueuedEmailBackend(account="shop")
    subjects = ["Your order #1041 has shipped", "Password reset", "Welcome to the shop", "Invoice 2026-11"]
    messages = [
        EmailMessage(subject=subject, body="x", from_email=SANDBOX_USER, to=[f"customer{n}@example.com"])
        for n, subject in enumerate(subjects)
    ]
    messages[0].cc = ["accounts@example.com"]
    backend.send_messages(messages)
    senders = [r for r in enqueued() if not r.kwargs["backup"]]
    assert run_enqueued(senders[:2]) == ["sent", "sent"]
    sandbox.inject("bad_recipient")
    assert run_enqueued(senders[2:3]) == ["failed"]
    queued_backend().send_messages(
        [
            EmailMessage(subject="Newsletter", body="x", from_email=SANDBOX_USER, to=["bob@example.com"])
            for _ in range(3)
        ]
    )
    later = [r for r in enqueued() if not r.kwargs["backup"]][4:]
    assert run_enqueued([senders[3], *later]) == ["sent", "sent", "held", "held"]
    log = {entry.subject: entry for entry in DeliveryLog.objects.order_by("pk")}
    return {
        "sent": log["Your order #1041 has shipped"],
        "failed": log["Welcome to the shop"],
        "held": log["Newsletter"],
    }


@needs_tasks
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("language", ["en", "ja"])
def test_the_delivery_log_answers_did_my_mail_go_out(
    chromium: Any, live_server: Any, sandbox_mail: Any, settings: Any, language: str
) -> None:
    settings.LANGUAGE_CODE = language
    entries = fill_the_log(sandbox_mail, settings)
    page = open_page(chromium, live_server, LOG, language=language)
    check_page(page, f"delivery_log_list_{language}", readme=True)
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 7
    header = page.locator("#result_list thead").inner_text()
    assert "Stuck" not in header
    assert "stuck" not in page.locator("#result_list").inner_text()
    check_list_fits(page)  # every column in the 1280-pixel window
    summary = page.locator("#gmail-smtp-chart-title").text_content()
    if language == "en":
        assert "4 sent, 1 failed, 2 held" in summary
    assert [int(n) for n in re.findall(r"\d+", summary)][-3:] == [4, 1, 2]
    assert page.locator(".gmail-smtp-limits li").first.locator(".numbers").inner_text() == "4 / 4"

    # "Did my mail to customer2@example.com go out?": search by recipient, open it, read why not.
    page.fill("#searchbar", "customer2@example.com")
    page.keyboard.press("Enter")
    page.wait_for_url("**?q=customer2%40example.com")
    assert page.locator("#result_list tbody tr").count() == 1
    row = page.locator("#result_list tbody tr").first
    assert "shop" in row.inner_text()
    assert "553" in row.inner_text()
    row.locator("th a").click()
    page.wait_for_url(f"**/{entries['failed'].pk}/change/**")
    check_page(page, f"delivery_log_failed_{language}", readme=language == "en")
    text = page.locator("#content-main").inner_text()
    cause = "bad_recipient"
    assert cause in text
    from django.utils import translation

    from django_gmail_smtp.causes import CATALOGUE

    with translation.override(language):
        assert str(CATALOGUE[cause].summary) in text
        assert str(CATALOGUE[cause].fix) in text
    assert "customer2@example.com" in text

    # A sent message shows no "next attempt".
    page.goto(f"{live_server.url}{LOG}{entries['sent'].pk}/change/")
    check_page(page, f"delivery_log_sent_{language}")
    assert page.locator(".field-next_attempt").count() == 0
    assert page.locator(".field-sent_at_detail").count() == 1
    assert "accounts@example.com" in page.locator(".field-to_list").inner_text()


@needs_tasks
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("language", ["en", "ja"])
def test_an_empty_log_says_which_backend_fills_it(
    chromium: Any, live_server: Any, settings: Any, language: str
) -> None:
    settings.LANGUAGE_CODE = language
    page = open_page(chromium, live_server, LOG, language=language)
    check_page(page, f"delivery_log_empty_{language}")
    box = page.locator(".gmail-smtp-empty")
    assert "QueuedEmailBackend" in box.inner_text()
    assert box.locator("a").first.get_attribute("href").endswith("README.md#background-sending")


def stored_account(sandbox: Any, **fields: Any) -> GmailAccount:
    account = GmailAccount(
        name="shop", username=SANDBOX_USER, host=sandbox.host, port=sandbox.starttls_port, timeout=5, **fields
    )
    account.set_password(SANDBOX_PASSWORD)
    account.save()
    return account


def fill_account(page: Any, sandbox: Any) -> None:
    page.fill("#id_name", "shop")
    page.fill("#id_username", SANDBOX_USER)
    page.fill("#id_app_password", SANDBOX_PASSWORD)
    page.fill("#id_host", sandbox.host)
    page.fill("#id_port", str(sandbox.starttls_port))
    page.select_option("#id_security", "starttls")
    page.fill("#id_timeout", "5")


def height(page: Any, selector: str) -> float:
    return float(page.locator(selector).first.bounding_box()["height"])


@pytest.mark.django_db(transaction=True)
def test_operator_adds_tests_sends_and_saves_an_account(
    chromium: Any, live_server: Any, gmail_sandbox: Any, settings: Any
) -> None:
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    page = open_page(chromium, live_server, f"{ACCOUNTS}add/")
    check_page(page, "account_add")

    # Only the chosen sign-in method's fields are shown.
    assert page.locator("#id_app_password").is_visible()
    assert not page.locator("#id_oauth_client_id").is_visible()
    page.select_option("#id_auth_method", "oauth2")
    assert page.locator("#id_oauth_client_id").is_visible()
    assert not page.locator("#id_app_password").is_visible()
    page.select_option("#id_auth_method", "app_password")
    # Real buttons, the size of Save, under the server they test.
    assert height(page, "button[data-gmail-smtp-action=test]") == height(page, "input[name=_save]")
    assert page.locator(".gmail-smtp-server + #gmail-smtp-test").count() == 1

    fill_account(page, gmail_sandbox)
    page.click("button[data-gmail-smtp-action=test]")
    result = page.locator("#gmail-smtp-results .gmail-smtp-result")
    result.wait_for()
    assert result.get_attribute("data-outcome") == "ok", result.inner_text()
    assert "Connection succeeded" in result.inner_text()
    assert "not saved" in result.inner_text()
    assert page.input_value("#id_app_password") == SANDBOX_PASSWORD  # the form kept what was typed

    assert page.input_value("#id_test_recipient") == "operator@example.com"
    page.fill("#id_test_recipient", "customer@example.com")
    page.click("button[data-gmail-smtp-action=send]")
    page.locator("#gmail-smtp-results .gmail-smtp-reply").wait_for()
    result = page.locator("#gmail-smtp-results .gmail-smtp-result")
    assert result.get_attribute("data-outcome") == "ok", result.inner_text()
    assert "250 2.0.0 OK" in result.inner_text()
    page.click("#gmail-smtp-results summary")  # open the transcript for the screenshot
    check_page(page, "account_add_tested", readme=True)
    assert SANDBOX_PASSWORD not in page.content()

    page.click("input[name=_save]")
    page.wait_for_url(f"**{ACCOUNTS}")
    assert "was added successfully" in page.inner_text(".messagelist")
    assert SANDBOX_PASSWORD not in page.content()
    # The successful test just before the first save is the new account's last test.
    assert page.locator(".field-last_check .badge-ok").inner_text() == "passed"
    check_list_fits(page)
    check_page(page, "account_list", readme=True)

    received = gmail_sandbox.wait_for_messages(1)
    assert received[0].rcpt_tos == ["customer@example.com"]
    assert received[0].auth_user == SANDBOX_USER
    assert received[0].tls
    assert "Django admin" in received[0].message["Subject"]
    assert "gmail_check" not in received[0].message.get_payload()
    account = GmailAccount.objects.get(name="shop")
    assert account.get_password() == SANDBOX_PASSWORD
    assert account.last_check_ok is True


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("language", ["en", "ja"])
def test_a_wrong_password_shows_the_cause_and_the_fix(
    chromium: Any, live_server: Any, gmail_sandbox: Any, settings: Any, language: str
) -> None:
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    settings.LANGUAGE_CODE = language
    account = stored_account(gmail_sandbox)
    account.record_check(True, "Connection, TLS and sign-in succeeded.")
    page = open_page(chromium, live_server, f"{ACCOUNTS}{account.pk}/change/", language=language)
    check_page(page, f"account_change_{language}")
    gmail_sandbox.inject("bad_credentials")
    page.click("button[data-gmail-smtp-action=test]")
    result = page.locator("#gmail-smtp-results .gmail-smtp-result")
    result.wait_for()
    assert result.get_attribute("data-outcome") == "failed"
    text = result.inner_text()
    from django.utils import translation

    from django_gmail_smtp.causes import CATALOGUE

    with translation.override(language):
        cause = CATALOGUE["bad_credentials"]
        assert text.count(str(cause.summary)) == 1  # said once
        assert str(cause.fix) in text
    assert "EMAIL_HOST_PASSWORD" not in text
    assert "-v 3" not in text
    check_page(page, f"account_test_failed_{language}", readme=language == "en")
    account.refresh_from_db()
    assert account.last_check_ok is False  # the saved values were tested: recorded


@pytest.mark.django_db(transaction=True)
def test_without_javascript_the_buttons_answer_with_a_page_and_back_works(
    chromium: Any, live_server: Any, gmail_sandbox: Any, settings: Any
) -> None:
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    account = stored_account(gmail_sandbox)
    change = f"{ACCOUNTS}{account.pk}/change/"
    page = open_page(chromium, live_server, change, javascript=False)
    # Both sign-in methods' fields are there, each saying which method it is for.
    assert page.locator("#id_app_password").is_visible()
    assert page.locator("#id_oauth_client_id").is_visible()
    page.fill("#id_port", "99999999999999999999")
    page.fill("#id_timeout", "1e300")
    page.click("button[data-gmail-smtp-action=test]")
    page.wait_for_url("**/test-connection/")
    screenshot(page, "account_test_refused_nojs")  # no axe here: it needs JavaScript (below)
    text = page.locator(".gmail-smtp-result").inner_text()
    assert "65535" in text
    assert "300" in text
    assert "OverflowError" not in text
    assert "unexpected_error" not in text
    page.click("text=Back to the form")
    page.wait_for_url(f"**{change}")
    assert page.locator("#id_name").input_value() == "shop"
    assert gmail_sandbox.messages == []

    # The same page, for axe-core and the keyboard: the form posted without the script's help.
    page = open_page(chromium, live_server, change)
    gmail_sandbox.inject("bad_credentials")
    page.evaluate(
        """() => {
            const button = document.querySelector("button[data-gmail-smtp-action=test]");
            button.form.action = button.formAction;
            button.form.submit();
        }"""
    )
    page.wait_for_url("**/test-connection/")
    check_page(page, "account_test_result_page")
    assert page.locator(".gmail-smtp-cause").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("language", ["en", "ja"])
def test_the_oauth_result_page(chromium: Any, live_server: Any, settings: Any, language: str) -> None:
    settings.LANGUAGE_CODE = language
    page = open_page(chromium, live_server, f"{ACCOUNTS}oauth-callback/?state=forged&code=x", language=language)
    check_page(page, f"oauth_failed_{language}")
    assert page.locator(".gmail-smtp-oauth-error").is_visible()
    page.click(".gmail-smtp-result ~ p a.button")
    page.wait_for_url(f"**{ACCOUNTS}")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("language", ["en", "ja"])
def test_the_account_pages_in_both_languages(chromium: Any, live_server: Any, settings: Any, language: str) -> None:
    settings.LANGUAGE_CODE = language
    account = GmailAccount(name="newsletter", username="news@example.com", auth_method="oauth2")
    account.set_oauth(client_id="1234-abc.apps.googleusercontent.com", client_secret="client-secret")
    account.save()
    for path, name in (
        (ACCOUNTS, "account_list"),
        (f"{ACCOUNTS}add/", "account_add"),
        (f"{ACCOUNTS}{account.pk}/change/", "account_change_oauth2"),
    ):
        page = open_page(chromium, live_server, path, language=language)
        check_page(page, f"{name}_{language}")
    assert page.locator("#gmail-smtp-oauth button").is_visible()  # Authorize with Google, under OAuth2
    assert not page.locator("#id_app_password").is_visible()
    assert height(page, "#gmail-smtp-oauth button") == height(page, "input[name=_save]")
