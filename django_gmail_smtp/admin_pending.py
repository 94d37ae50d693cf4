"""Tests of account values that are not saved yet, kept until exactly those values are saved.

"Last test" on an account describes its *saved* values. A test of the add form, or of a change
form with unsaved edits, says nothing about them, so it is not recorded on the account; it is
kept in the operator's session instead, under a keyed fingerprint of what was tested (server,
security, username, timeout, sign-in method and secret). Saving the same values records it: the
successful test just before the first save is not lost, and a test of other values never
overwrites the saved account's status.

The session holds the fingerprint (an HMAC under ``SECRET_KEY``), the outcome and its time;
never a secret.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.views.decorators.debug import sensitive_variables

from .conf import SmtpConfig

__all__ = ["recall", "remember"]

SESSION_KEY = "gmail_smtp_unsaved_tests"
KEEP_SECONDS = 3600  # a test older than this is not worth recording on a save
KEEP_MAX = 5
_SALT = "django_gmail_smtp.admin_pending"


@sensitive_variables()
def fingerprint(config: SmtpConfig) -> str:
    """What was tested, as a keyed hash: equal for equal values, and reveals none of them."""
    tested = [
        config.host.strip().lower(),
        config.port,
        config.security,
        config.username.strip().lower(),
        config.timeout,
        config.auth_method,
        config.password,
        config.oauth_client_id,
        config.oauth_client_secret,
        config.oauth_refresh_token,
    ]
    return salted_hmac(_SALT, json.dumps(tested), algorithm="sha256").hexdigest()


def _store(request: HttpRequest) -> dict[str, Any]:
    now = time.time()
    kept = dict(request.session.get(SESSION_KEY) or {})
    return {key: value for key, value in kept.items() if now - float(value.get("at", 0)) < KEEP_SECONDS}


def remember(request: HttpRequest, config: SmtpConfig, ok: bool, summary: str) -> None:
    """Keep the outcome of a test of unsaved values, for :func:`recall` when they are saved."""
    store = _store(request)
    store[fingerprint(config)] = {"ok": ok, "summary": summary[:2000], "at": time.time()}
    request.session[SESSION_KEY] = dict(list(store.items())[-KEEP_MAX:])


def recall(request: HttpRequest, config: SmtpConfig | None) -> tuple[bool, str, datetime] | None:
    """The kept outcome of a test of exactly ``config`` (removed from the session), if any."""
    if config is None or not request.session.get(SESSION_KEY):
        return None
    store = _store(request)
    found = store.pop(fingerprint(config), None)
    request.session[SESSION_KEY] = store
    if found is None:
        return None
    when = datetime.fromtimestamp(float(found["at"]), tz=UTC)
    return bool(found["ok"]), str(found["summary"]), when if settings.USE_TZ else timezone.make_naive(when)
