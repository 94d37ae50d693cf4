"""Host names: Gmail's servers, loopback, and how two host names are compared.

Pure functions, no settings and no DNS lookup. Everything that asks "is this Gmail?", "is this
this machine?" or "are these the same host?" asks here, so the answers never drift apart:
the resolver (Gmail defaults), the rules (checks W002/W003, E018), the daily-limit guard, the
connection pool's key and the binding of stored secrets to their destination.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_HOST",
    "GMAIL_HOSTS",
    "GMAIL_IMAP_HOST",
    "GMAIL_POP_HOST",
    "GMAIL_RELAY_HOST",
    "IMAP_PORT",
    "POP_PORT",
    "endpoint_is_safe",
    "has_daily_limit",
    "is_gmail_host",
    "is_gmail_relay",
    "is_loopback",
    "is_loopback_address",
    "normalize_host",
    "valid_host",
]

DEFAULT_HOST = "smtp.gmail.com"
GMAIL_RELAY_HOST = "smtp-relay.gmail.com"
"""Google Workspace's SMTP relay: it may let a server's IP address in without a sign-in, and
has no per-account daily limit of its own."""
GMAIL_HOSTS = frozenset({DEFAULT_HOST, "smtp.googlemail.com", GMAIL_RELAY_HOST})
"""Gmail's SMTP servers: Gmail's defaults and checks apply to them."""
# Gmail's receiving side, reached with the same credentials (gmail_check --round-trip).
GMAIL_IMAP_HOST, IMAP_PORT = "imap.gmail.com", 993
GMAIL_POP_HOST, POP_PORT = "pop.gmail.com", 995


def normalize_host(host: str) -> str:
    """``host`` as two host names are compared: no surrounding space or brackets, lower case,
    no trailing dot (``" [::1] "`` -> ``"::1"``, ``"SMTP.Gmail.com."`` -> ``"smtp.gmail.com"``)."""
    text = str(host).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text.rstrip(".").lower()


def is_gmail_host(host: str | None) -> bool:
    """One of Gmail's SMTP servers (:data:`GMAIL_HOSTS`)."""
    return bool(host) and normalize_host(str(host)) in GMAIL_HOSTS


def is_gmail_relay(host: str | None) -> bool:
    """Google Workspace's SMTP relay (:data:`GMAIL_RELAY_HOST`)."""
    return bool(host) and normalize_host(str(host)) == GMAIL_RELAY_HOST


def has_daily_limit(host: str | None) -> bool:
    """A Gmail server that counts each account's messages against Gmail's daily limit (not the relay)."""
    return is_gmail_host(host) and not is_gmail_relay(host)


def is_loopback(host: str | None) -> bool:
    """True for ``localhost``, names under ``.localhost`` and loopback IP addresses (no DNS lookup)."""
    if not host:
        return False
    name = normalize_host(str(host))
    if name == "localhost" or name.endswith(".localhost"):
        return True
    return is_loopback_address(name)


def is_loopback_address(host: str) -> bool:
    """True for a literal loopback IP address (``127.0.0.0/8``, ``::1``, ``::ffff:127.0.0.1``)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


# Letters, digits and hyphens, 1-63 of them, not starting or ending with a hyphen (RFC 1123).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)


def valid_host(host: str) -> bool:
    """True for a host name (IDN included) or an IP address; no DNS lookup."""
    name = str(host).strip()
    literal = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        ipaddress.ip_address(literal)
        return True
    except ValueError:
        pass
    try:
        ascii_name = name.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return 0 < len(ascii_name) <= 253 and all(_LABEL.fullmatch(label) for label in ascii_name.split("."))


def endpoint_is_safe(uri: str) -> bool:
    """HTTPS, or plain HTTP to ``localhost`` or a literal loopback IP address (the sandbox's server).

    The only rule for OAuth2 endpoints: the runtime (:func:`~django_gmail_smtp.oauth.check_endpoint`)
    and check E018 both use it. Other names under ``.localhost`` are refused for ``http://``:
    nothing guarantees that the resolver in use keeps them on this machine.
    """
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:  # a malformed IPv6 literal
        return False
    if parts.scheme == "https" and host:
        return True
    return parts.scheme == "http" and host is not None and (host == "localhost" or is_loopback_address(host))
