"""IMAP's modified UTF-7 for mailbox names (RFC 3501 5.1.3), both ways.

Used by the IMAP client (Gmail's Japanese Spam folder is ``[Gmail]/&j,dg0TDhMPww6w-`` on the
wire) and by the sandbox's IMAP server. No Django imports: the sandbox uses it too.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["decode_mutf7", "encode_mutf7"]


def decode_mutf7(name: str | bytes) -> str:
    """A mailbox name as IMAP sends it (``[Gmail]/&j,dg0TDhMPww6w-``) in Unicode (``[Gmail]/迷惑メール``).

    Text that is not valid modified UTF-7 is returned as it is.
    """
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        end = text.find("-", i + 1) if char == "&" else -1
        if char != "&" or end < 0:
            out.append(char)
            i += 1
            continue
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            try:
                raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4), validate=True)
                out.append(raw.decode("utf-16-be"))
            except (binascii.Error, ValueError):
                out.append(text[i : end + 1])
        i = end + 1
    return "".join(out)


def encode_mutf7(name: str) -> str:
    """The modified UTF-7 form of a mailbox name (the inverse of :func:`decode_mutf7`)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)
