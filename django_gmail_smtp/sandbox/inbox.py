"""What lands in a sandbox account's mailbox: the message as Gmail's recipient sees it.

Gmail changes a message on its way in: it records the hop (``Received``, with the TLS version
and cipher), its verdicts (``Authentication-Results``: SPF, DKIM, DMARC), and replaces a From
that is neither the signed-in account nor one of its verified "Send mail as" aliases with the
account (the original goes to ``X-Google-Original-From``). The sandbox does the same to the
copy it files in the mailbox; :class:`~.received.ReceivedMessage` keeps what the client sent.

The verdicts are simulated: SPF and DKIM pass for Gmail's own submission; DMARC passes when the
From's domain is the account's and fails for an alias on another domain (no alignment), which
is what happens on Gmail without the domain's own SPF/DKIM setup. The ``auth_results``
injection sets them.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Collection, Mapping
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.policy import compat32

from .received import ReceivedMessage

__all__ = ["delivered_copy", "gmail_tls_version", "verdicts"]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def gmail_tls_version(version: str | None) -> str:
    """``TLSv1.3`` as Gmail writes it in ``Received``: ``TLS1_3``."""
    return (version or "").replace("TLSv", "TLS").replace(".", "_")


def verdicts(account: str, from_address: str, override: Mapping[str, str] | None = None) -> dict[str, str]:
    """The simulated spf/dkim/dmarc results for mail from ``account`` showing ``from_address``."""
    aligned = _domain(from_address) == _domain(account)
    found = {"spf": "pass", "dkim": "pass", "dmarc": "pass" if aligned else "fail"}
    found.update({key: str(value) for key, value in (override or {}).items() if key in found})
    return found


def _header_value(data: bytes, name: str) -> str:
    header = BytesHeaderParser(policy=compat32).parsebytes(data)
    value = header.get(name)
    return str(value) if value is not None else ""


def _replace_header(data: bytes, name: str, value: str) -> bytes:
    """``data`` with the (first) ``name`` header replaced by ``value`` (folded lines included)."""
    end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if end < 0 else (data[: end + 2], data[end + 2 :])
    lines = head.split(b"\r\n")
    out: list[bytes] = []
    skipping = False
    replaced = False
    for line in lines:
        if skipping and line[:1] in (b" ", b"\t"):
            continue
        skipping = False
        if not replaced and line.lower().startswith(name.lower().encode() + b":"):
            out.append(f"{name}: {value}".encode())
            skipping = replaced = True
            continue
        out.append(line)
    return b"\r\n".join(out) + body


def delivered_copy(
    message: ReceivedMessage,
    recipient: str,
    *,
    server_name: str,
    aliases: Collection[str] = (),
    override: Mapping[str, str] | None = None,
    now: float | None = None,
) -> bytes:
    """The bytes filed in ``recipient``'s mailbox for ``message``."""
    account = message.auth_user or recipient
    data = message.data
    original_from = _header_value(data, "From")
    names = email.utils.getaddresses([original_from])
    display, address = names[0] if names else ("", "")
    allowed = {account.lower(), *(alias.lower() for alias in aliases)}
    extra: list[str] = []
    if address and address.lower() not in allowed and message.auth_user:
        data = _replace_header(data, "From", str(Address(display_name=display, addr_spec=account)))
        extra.append(f"X-Google-Original-From: {original_from}")
        address = account
    results = verdicts(account, address or account, override)
    domain = _domain(address or account)
    stamp = email.utils.formatdate(now if now is not None else time.time(), localtime=False)
    protocol = "ESMTP" + ("S" if message.tls else "") + ("A" if message.auth_user else "")
    tls = (
        f" (version={gmail_tls_version(message.tls_version)} cipher={message.cipher} bits=256/256)"
        if message.tls and message.tls_version
        else ""
    )
    received = (
        f"Received: from {message.helo or 'unknown'} ([{message.peer or '127.0.0.1'}])\r\n"
        f"        by {server_name} with {protocol} id {message.session_id or 'sandbox'}\r\n"
        f"        for <{recipient}>{tls};\r\n"
        f"        {stamp}"
    )
    authentication = (
        f"Authentication-Results: {server_name};\r\n"
        f"       spf={results['spf']} (sandbox: {account} sends through {server_name}) smtp.mailfrom={account};\r\n"
        f"       dkim={results['dkim']} header.i=@{_domain(account)};\r\n"
        f"       dmarc={results['dmarc']} (p=NONE sp=NONE dis=NONE) header.from={domain}"
    )
    prefix = "\r\n".join([f"Return-Path: <{account}>", received, authentication, *extra]) + "\r\n"
    return prefix.encode("utf-8") + data
