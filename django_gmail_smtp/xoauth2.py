"""Google's XOAUTH2 on the wire: the initial client response and the error challenge.

Pure functions shared by the SMTP sign-in (:mod:`.smtp_auth`) and the mailbox clients of the
round trip (IMAP ``AUTHENTICATE XOAUTH2``, POP3 ``AUTH XOAUTH2``). The initial response is
``base64("user=<address>\\x01auth=Bearer <token>\\x01\\x01")``; a server that rejects the token
answers with a continuation holding base64 JSON such as
``{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from django.views.decorators.debug import sensitive_variables

__all__ = ["MAX_INLINE_AUTH", "parse_challenge", "xoauth2_response"]

MAX_INLINE_AUTH = 512
"""Longest ``AUTH XOAUTH2 <initial response>`` line (CRLF included) sent in one piece (RFC 5321's 512)."""


@sensitive_variables()
def xoauth2_response(username: str, token: str) -> str:
    """The XOAUTH2 initial client response, base64 encoded."""
    raw = f"user={username}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


def parse_challenge(text: bytes | str) -> dict[str, Any] | None:
    """The JSON of Gmail's XOAUTH2 error challenge (the text after ``334``); None if it is not one."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    text = text.strip()
    if not text:
        return None
    try:
        data = json.loads(base64.b64decode(text, validate=True))
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None
