"""What the delivered header says: the From, the SPF/DKIM/DMARC verdicts, the receiving hop's TLS.

Pure functions over the header of the message the round trip found (no network, no Django).
"""

from __future__ import annotations

import email
import email.header
import email.policy
import re
from collections.abc import Sequence
from email.message import Message
from email.utils import getaddresses
from typing import Any

__all__ = [
    "FAILED_VERDICTS",
    "address_of",
    "auth_results",
    "header_text",
    "message_ids",
    "parse_header",
    "receiving_hop",
]

FAILED_VERDICTS = frozenset({"fail", "softfail", "permerror", "temperror"})


def parse_header(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def header_text(value: Any) -> str:
    """A header value as text (encoded words decoded), on one line."""
    if value is None:
        return ""
    decoded = email.header.decode_header(str(value))
    parts = []
    for chunk, charset in decoded:
        if isinstance(chunk, bytes):
            parts.append(chunk.decode(charset or "ascii", "replace"))
        else:
            parts.append(chunk)
    return re.sub(r"\s+", " ", "".join(parts)).strip()


def address_of(value: str) -> str:
    """The bare address of a From header (lower case)."""
    found = getaddresses([value])
    return found[0][1].strip().lower() if found else ""


def message_ids(header: bytes) -> list[str]:
    """The Message-ID header values of a raw header."""
    parsed = parse_header(header)
    return [str(value).strip() for value in parsed.get_all("Message-ID") or []]


_VERDICT = re.compile(r"\b(spf|dkim|dmarc|arc)\s*=\s*([a-z]+)", re.IGNORECASE)


def auth_results(values: Sequence[str]) -> dict[str, str | None]:
    """The spf/dkim/dmarc verdicts of the newest ``Authentication-Results`` header (RFC 8601).

    ``values`` are the header's values, newest (topmost) first. The first verdict of each
    method counts (a message can carry several DKIM signatures; the first is the author's).
    """
    verdicts: dict[str, str | None] = {"spf": None, "dkim": None, "dmarc": None}
    if not values:
        return verdicts
    for method, result in _VERDICT.findall(values[0]):
        method = method.lower()
        if method in verdicts and verdicts[method] is None:
            verdicts[method] = result.lower()
    return verdicts


_WITH = re.compile(r"\bwith\s+([A-Za-z0-9]+)", re.IGNORECASE)
_GOOGLE_TLS = re.compile(r"version=(?P<version>[A-Za-z0-9_.]+)\s+cipher=(?P<cipher>[A-Za-z0-9_-]+)")
_POSTFIX_TLS = re.compile(r"using\s+(?P<version>TLSv?[0-9.]+)\s+with\s+cipher\s+(?P<cipher>[A-Za-z0-9_-]+)")


def receiving_hop(values: Sequence[str]) -> dict[str, Any] | None:
    """What the server that took the message from the client recorded: the oldest ``Received``
    header with an SMTP ``with`` clause (``values`` newest first, as they appear).

    Returns ``{"received", "protocol", "tls", "tls_version", "cipher"}``; ``tls`` is True when the
    header shows TLS (ESMTPS/ESMTPSA, Gmail's ``version=... cipher=...``, Postfix's ``using TLS``),
    False when it shows plain SMTP, None when it does not say. None when there is no such header.
    """
    for value in reversed(values):
        text = re.sub(r"\s+", " ", value).strip()
        protocols = [word.upper() for word in _WITH.findall(text) if "SMTP" in word.upper()]
        if not protocols:  # "with LMTP" (local delivery), "with cipher ..." alone: not the hop
            continue
        protocol = protocols[0]
        details = _GOOGLE_TLS.search(text) or _POSTFIX_TLS.search(text)
        tls: bool | None = None
        if details is not None or protocol in ("ESMTPS", "ESMTPSA", "UTF8SMTPS", "UTF8SMTPSA"):
            tls = True
        elif protocol in ("SMTP", "ESMTP", "ESMTPA", "UTF8SMTP", "UTF8SMTPA"):
            tls = False
        return {
            "received": text[:500],
            "protocol": protocol,
            "tls": tls,
            "tls_version": details["version"] if details else None,
            "cipher": details["cipher"] if details else None,
        }
    return None
