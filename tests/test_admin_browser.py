"""One end-to-end run of the Gmail account admin in a real browser (Debian's Chromium via Playwright).

Log in, add an account for the sandbox, press "Test connection", press "Send test email", see
the message arrive, save. A screenshot goes to ``artifacts/`` (ignored by git).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from django_gmail_smtp.models import GmailAccount
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _sync_playwright() -> Any:
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright; no 'playwright install')")
    return sync_playwright


@pytest.mark.django_db(transaction=True)
def test_operator_adds_tests_and_sends_from_the_admin(live_server: Any, gmail_sandbox: Any, settings: Any) -> None:
    sync_playwright = _sync_playwright()
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    # Database work happens outside Playwright's event loop (Django refuses ORM calls inside one).
    User.objects.create_superuser("operator", "operator@example.com", "operator-password")
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(20_000)
            page.goto(f"{live_server.url}/admin/login/?next=/admin/gmail_smtp/gmailaccount/add/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "operator-password")
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/gmail_smtp/gmailaccount/add/")

            page.fill("#id_name", "shop")
            page.fill("#id_username", SANDBOX_USER)
            page.fill("#id_app_password", SANDBOX_PASSWORD)
            page.fill("#id_host", gmail_sandbox.host)
            page.fill("#id_port", str(gmail_sandbox.starttls_port))
            page.select_option("#id_security", "starttls")
            page.fill("#id_timeout", "5")

            page.click("button[data-gmail-smtp-action=test]")
            result = page.locator("#gmail-smtp-results .gmail-smtp-result")
            result.wait_for()
            assert result.get_attribute("data-outcome") == "ok", result.inner_text()
            assert "Connection succeeded" in result.inner_text()
            assert page.input_value("#id_app_password") == SANDBOX_PASSWORD  # the form kept what was typed

            assert page.input_value("#id_test_recipient") == "operator@example.com"
            page.fill("#id_test_recipient", "customer@example.com")
            page.click("button[data-gmail-smtp-action=send]")
            page.locator("#gmail-smtp-results .gmail-smtp-reply").wait_for()
            result = page.locator("#gmail-smtp-results .gmail-smtp-result")
            assert result.get_attribute("data-outcome") == "ok", result.inner_text()
            assert "250 2.0.0 OK" in result.inner_text()
            page.click("#gmail-smtp-results summary")  # open the transcript for the screenshot
            page.screenshot(path=str(ARTIFACTS / "admin_gmail_account.png"), full_page=True)
            assert SANDBOX_PASSWORD not in page.content()

            page.click("input[name=_save]")
            page.wait_for_url("**/admin/gmail_smtp/gmailaccount/")
            assert "was added successfully" in page.inner_text(".messagelist")
            assert SANDBOX_PASSWORD not in page.content()
        finally:
            browser.close()

    received = gmail_sandbox.wait_for_messages(1)
    assert received[0].rcpt_tos == ["customer@example.com"]
    assert received[0].auth_user == SANDBOX_USER
    assert received[0].tls
    account = GmailAccount.objects.get(name="shop")
    assert account.get_password() == SANDBOX_PASSWORD
