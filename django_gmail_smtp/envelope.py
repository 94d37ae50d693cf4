"""The envelope and wire bytes of an ``EmailMessage``, exactly as Django's SMTP backend makes them.

Used by the backend (every message), ``gmail_check`` and the round trip (their test messages).
Pure functions over Django's mail API: no settings of this app, no network. Non-ASCII local
parts (SMTPUTF8, RFC 6531/6532) are kept as UTF-8 where Django would write encoded-words,
which make such an address undeliverable.
"""

from __future__ import annotations

import email.errors
import email.header
import email.policy
import functools
import re
from email.headerregistry import Address, AddressHeader
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.core.mail.message import EmailMessage
from django.utils.encoding import force_str, punycode

__all__ = ["build_envelope", "needs_smtputf8", "prep_address"]

# Django 6.0+ prepares addresses with EmailBackend.prep_address(); 5.2 with sanitize_address().
_HAS_PREP_ADDRESS = hasattr(DjangoSMTPBackend, "prep_address")


def build_envelope(email_message: EmailMessage, *, smtputf8: bool = False) -> tuple[str, list[str], bytes]:
    """Envelope sender, recipients and wire bytes, exactly as Django's backend makes them.

    Raises ``ValueError`` for header injection and invalid addresses. With
    ``smtputf8``, addresses keep their non-ASCII local parts (domains are
    still IDNA-encoded) and the headers are UTF-8 (RFC 6531/6532) instead of
    Django's encoded-words, which make such an address undeliverable.
    """
    if _HAS_PREP_ADDRESS:
        # prep_address() uses no instance state: call it without a backend (and its configuration).
        prep = functools.partial(DjangoSMTPBackend.prep_address, None)  # type: ignore[arg-type]
        if smtputf8:
            from_email = _idna_domain(prep(email_message.from_email, force_ascii=False))
            recipients = [_idna_domain(prep(addr, force_ascii=False)) for addr in email_message.recipients()]
            data = email_message.message(policy=email.policy.SMTPUTF8).as_bytes()
            return from_email, recipients, data
        from_email = prep(email_message.from_email)
        recipients = [prep(addr) for addr in email_message.recipients()]
        data = email_message.message(policy=email.policy.SMTP).as_bytes()
        return from_email, recipients, data
    from django.core.mail.message import sanitize_address

    if smtputf8:
        from_email = _utf8_addr_spec(email_message.from_email)
        recipients = [_utf8_addr_spec(addr) for addr in email_message.recipients()]
        message = email_message.message()
        _utf8_address_headers(message)
        return from_email, recipients, message.as_bytes(linesep="\r\n")  # type: ignore[call-arg]
    encoding = email_message.encoding or settings.DEFAULT_CHARSET
    from_email = sanitize_address(email_message.from_email, encoding)
    recipients = [sanitize_address(addr, encoding) for addr in email_message.recipients()]
    return from_email, recipients, email_message.message().as_bytes(linesep="\r\n")  # type: ignore[call-arg]


# Defects of the header parser that do not make an envelope address invalid.
_HARMLESS_DEFECTS = ("addr-spec local part with no domain",)  # Django allows "From: webmaster"
_NON_ASCII_LOCAL_DEFECT = "non-ASCII"


def prep_address(address: Any, *, force_ascii: bool = True) -> str:
    """The addr-spec of one address (``"Name <a@b>"`` -> ``a@b``), as Django 6.x prepares it.

    ``ValueError`` when the address does not parse cleanly, holds several mailboxes or
    injects a line break. With ``force_ascii`` a non-ASCII domain is IDNA-encoded and a
    non-ASCII local part is refused (no ASCII form exists); without it both stay Unicode.
    """
    text = force_str(address)
    try:
        parsed = AddressHeader.value_parser(text)
    except (email.errors.HeaderParseError, IndexError) as exc:  # Python 3.11's parser fails on "a@"
        raise ValueError(f"Invalid address {text!r}: {exc}") from None
    defects = list(dict.fromkeys(str(d) for d in parsed.all_defects if str(d) not in _HARMLESS_DEFECTS))
    if not force_ascii:  # SMTPUTF8 carries a non-ASCII local part as it is
        defects = [defect for defect in defects if _NON_ASCII_LOCAL_DEFECT not in defect]
    if defects:
        raise ValueError(f"Invalid address {text!r}: {'; '.join(defects)}")
    mailboxes = parsed.all_mailboxes
    if len(mailboxes) != 1:
        raise ValueError(f"Invalid address {text!r}: must be a single address")
    mailbox = mailboxes[0]
    local, domain = mailbox.local_part, mailbox.domain or ""
    if force_ascii and not local.isascii():
        raise ValueError(f"Invalid address {text!r}: the local part has non-ASCII characters")
    if force_ascii and domain and not domain.isascii():
        return str(Address(username=local, domain=punycode(domain)))
    return str(mailbox.addr_spec)


def needs_smtputf8(message: EmailMessage) -> bool:
    """True if the sender or a recipient has non-ASCII characters before the @."""
    for address in (message.from_email, *message.recipients()):
        if isinstance(address, tuple):
            address = address[1]
        text = force_str(address)
        if text.isascii():
            continue
        addr = parseaddr(text)[1]
        if addr and not addr.rpartition("@")[0].isascii():
            return True
    return False


def _idna_domain(addr_spec: str) -> str:
    local, at, domain = addr_spec.rpartition("@")
    if at and not domain.isascii():
        domain = punycode(domain)
    return f"{local}{at}{domain}" if at else addr_spec


def _utf8_addr_spec(address: Any) -> str:
    """Django 5.2's sanitize_address, keeping a non-ASCII local part as UTF-8."""
    from email import _header_value_parser as parser  # as Django 5.2 itself does

    if isinstance(address, tuple):
        local, _, domain = str(address[1]).rpartition("@")
    else:
        text = force_str(address)
        try:
            token, rest = parser.get_mailbox(text)
        except (email.errors.HeaderParseError, ValueError, IndexError):
            raise ValueError(f'Invalid address "{text}"') from None
        if rest:
            raise ValueError(f'Invalid address; only {token} could be parsed from "{text}"')
        local, domain = token.local_part, token.domain or ""
    if "\n" in local + domain or "\r" in local + domain:
        raise ValueError("Invalid address; address parts cannot contain newlines.")
    return Address(username=local, domain=punycode(domain) if domain else "").addr_spec


# Django 5.2 writes a non-ASCII local part as encoded-words right before the "@".
_ENCODED_LOCAL_PART = re.compile(r"((?:=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=\s*)+)(?=@)")
_ADDRESS_HEADERS = ("From", "Sender", "Reply-To", "To", "Cc", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc")


def _utf8_local_part(match: re.Match[str]) -> str:
    local = str(email.header.make_header(email.header.decode_header(match.group(1).strip())))
    return Address(username=local, domain="x").addr_spec.rpartition("@")[0]


def _utf8_address_headers(message: Any) -> None:
    """Django 5.2: turn encoded-word local parts in address headers into raw UTF-8 (RFC 6532)."""
    for name in _ADDRESS_HEADERS:
        value = message.get(name)
        if value is None or "=?" not in str(value):
            continue
        utf8 = _ENCODED_LOCAL_PART.sub(_utf8_local_part, str(value))
        if utf8 == str(value):
            continue
        if len(utf8.encode()) > 900:  # raw values are not folded for us: fold between addresses
            utf8 = re.sub(r",\s*", ",\r\n ", utf8)
        # surrogateescape: compat32 writes such a value as raw bytes instead of encoding it again.
        message.replace_header(name, utf8.encode("utf-8").decode("ascii", "surrogateescape"))
