"""Opt-in: one real message through smtp.gmail.com.

Skipped unless GMAIL_LIVE_USERNAME and GMAIL_LIVE_PASSWORD (an app password)
are set, and always skipped in CI. Run with:

    GMAIL_LIVE_USERNAME=you@gmail.com GMAIL_LIVE_PASSWORD='abcd efgh ijkl mnop' \
        .venv/bin/pytest -m live_gmail tests/test_live_gmail.py
"""

import os

import pytest
from django.core.mail import EmailMessage

from django_gmail_smtp.backend import EmailBackend

USERNAME = os.environ.get("GMAIL_LIVE_USERNAME", "")
PASSWORD = os.environ.get("GMAIL_LIVE_PASSWORD", "")

pytestmark = [
    pytest.mark.live_gmail,
    pytest.mark.skipif(not (USERNAME and PASSWORD), reason="set GMAIL_LIVE_USERNAME and GMAIL_LIVE_PASSWORD"),
    pytest.mark.skipif(bool(os.environ.get("CI")), reason="never against real Gmail in CI"),
]


@pytest.mark.parametrize("port", [587, 465])
def test_real_gmail_accepts_a_message(port):
    backend = EmailBackend(port=port, username=USERNAME, password=PASSWORD)
    message = EmailMessage(f"django-gmail-smtp live test ({port})", "live", USERNAME, [USERNAME])
    assert backend.send_messages([message]) == 1
