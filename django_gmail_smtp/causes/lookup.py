"""The catalogue gathered from its tables, and the lookups: a cause by its id, a reply's cause."""

from __future__ import annotations

import re

from . import configuration, mailbox, network, oauth2, smtp
from .cause import Cause

TABLES = (smtp.CAUSES, network.CAUSES, oauth2.CAUSES, configuration.CAUSES, mailbox.CAUSES)
"""The catalogue's tables, one a topic; a new cause is one entry in one of them."""

CATALOGUE: dict[str, Cause] = {entry.id: entry for table in TABLES for entry in table}


def cause(cause_id: str) -> Cause:
    """Return the catalogue entry ``cause_id`` (``KeyError`` if unknown)."""
    return CATALOGUE[cause_id]


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def explain_reply(code: int, text: str | bytes) -> Cause | None:
    """Map an SMTP reply (code and text, possibly multi-line) to a known cause (:data:`~.smtp.REPLIES`)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found = _ENHANCED.search(text)
    status = found.group(0) if found else ""
    low = text.lower()
    for reply in smtp.REPLIES:
        if reply.matches(code, status, low):
            return CATALOGUE[reply.cause]
    return None
