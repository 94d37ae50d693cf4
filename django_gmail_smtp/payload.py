"""An ``EmailMessage`` as a JSON-safe payload, and back: what the queued backend puts in a task.

Pure functions, no database and no network. What is kept: subject, body, sender, To/Cc/Bcc/
Reply-To, the extra headers in their order, alternatives, attachments (bytes as base64, text as
text, so each part comes back exactly as it was), the body's subtype and charset, and the
envelope. The ``Message-ID`` and ``Date`` headers are fixed here, when the message is queued, so
every attempt sends the same message and a resend after a crash can be recognised.

What is not kept: the message's Python class (a subclass of ``EmailMessage`` comes back as
``EmailMessage`` or ``EmailMultiAlternatives``, so a subclass that overrides ``message()`` loses
that override) and the ``connection`` attribute. ``message/rfc822`` attachments and raw MIME
parts attached with ``attach(MIMEPart)`` are kept as the bytes they render to when queued.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.mime.base import MIMEBase
from email.utils import format_datetime, make_msgid
from typing import Any

import django
from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.utils import DNS_NAME
from django.utils.encoding import force_str
from django.utils.timezone import get_current_timezone

__all__ = ["PAYLOAD_VERSION", "PayloadError", "envelope", "from_payload", "message_id_of", "to_payload"]

PAYLOAD_VERSION = 1

Payload = dict[str, Any]


class PayloadError(ValueError):
    """A payload this version cannot turn back into a message."""


# -- values ---------------------------------------------------------------------------------


def _content(value: Any) -> dict[str, str]:
    """A body, alternative or attachment content: text stays text, anything else becomes base64."""
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, EmailMessage):  # message/rfc822: the Django message, rendered now
        return {"message": base64.b64encode(value.message().as_bytes()).decode("ascii")}
    if isinstance(value, email.message.Message):
        return {"message": base64.b64encode(value.as_bytes()).decode("ascii")}
    return {"text": force_str(value)}  # lazy strings and the like


def _uncontent(value: Mapping[str, str]) -> str | bytes:
    if "text" in value:
        return value["text"]
    if "base64" in value:
        return base64.b64decode(value["base64"])
    if "message" in value:
        return base64.b64decode(value["message"])
    raise PayloadError(f"Unknown content encoding {sorted(value)!r}.")


class _RawMIMEBase(MIMEBase):
    """A MIME part parsed from bytes, for Django 5.2 (which attaches only ``MIMEBase`` instances)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        email.message.Message.__init__(self, policy=kwargs.get("policy", email.policy.compat32))


def _raw_part(data: bytes) -> Any:
    if django.VERSION >= (6, 0):
        return email.message_from_bytes(data, _class=email.message.MIMEPart, policy=email.policy.default)  # type: ignore[arg-type]
    return email.message_from_bytes(data, _class=_RawMIMEBase)


# -- headers --------------------------------------------------------------------------------


def _has_header(headers: Sequence[Sequence[str]], name: str) -> bool:
    return any(key.lower() == name for key, _ in headers)


def _now_header() -> str:
    """A ``Date`` header value, as Django would write it when the message is rendered."""
    tz = get_current_timezone() if getattr(settings, "EMAIL_USE_LOCALTIME", False) else UTC
    return format_datetime(datetime.now(tz))


def message_id_of(payload: Mapping[str, Any]) -> str:
    """The Message-ID fixed when the payload was made."""
    return str(payload.get("message_id", ""))


def envelope(payload: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(sender, recipients) as given to the message (before address encoding)."""
    env = payload.get("envelope") or {}
    return str(env.get("from", "")), [str(r) for r in env.get("recipients", [])]


# -- the payload ----------------------------------------------------------------------------


def to_payload(message: EmailMessage) -> Payload:
    """``message`` as a JSON-safe dict; its ``Message-ID`` and ``Date`` are fixed now if not set.

    The message itself is not changed. Raises ``ValueError`` (Django's own message for it) for a
    ``Bcc`` header.
    """
    headers = [[force_str(name), force_str(value)] for name, value in (message.extra_headers or {}).items()]
    if _has_header(headers, "bcc"):
        raise ValueError(
            'Bcc is not a valid email header. Use the "bcc" argument to specify blind carbon copy recipients.'
        )
    if not _has_header(headers, "date"):
        headers.append(["Date", _now_header()])
    if not _has_header(headers, "message-id"):
        headers.append(["Message-ID", make_msgid(domain=str(DNS_NAME))])
    mid = next(value for key, value in headers if key.lower() == "message-id")
    payload: Payload = {
        "version": PAYLOAD_VERSION,
        "message_id": mid,
        "subject": force_str(message.subject),
        "body": _content(message.body or ""),
        "content_subtype": message.content_subtype,
        "encoding": None if message.encoding is None else str(message.encoding),
        "from_email": force_str(message.from_email),
        "to": [force_str(a) for a in message.to],
        "cc": [force_str(a) for a in message.cc],
        "bcc": [force_str(a) for a in message.bcc],
        "reply_to": [force_str(a) for a in message.reply_to],
        "headers": headers,
        "attachments": [_attachment(item) for item in message.attachments],
        "envelope": {
            "from": force_str(message.from_email),
            "recipients": [force_str(a) for a in message.recipients()],
        },
    }
    if isinstance(message, EmailMultiAlternatives):
        payload["alternatives"] = [
            {"content": _content(content), "mimetype": str(mimetype)} for content, mimetype in message.alternatives
        ]
    # Django 5.2's (undocumented) subtypes; Django 6.x refuses them, so they are carried only when changed.
    for name, default in (("mixed_subtype", "mixed"), ("alternative_subtype", "alternative")):
        value = getattr(message, name, default)
        if value != default:
            payload[name] = value
    return payload


def _attachment(item: Any) -> dict[str, Any]:
    if isinstance(item, email.message.Message):  # attach(MIMEPart) / attach(MIMEBase)
        return {"mime": base64.b64encode(item.as_bytes()).decode("ascii")}
    filename, content, mimetype = item
    return {
        "filename": None if filename is None else force_str(filename),
        "content": _content(content),
        "mimetype": None if mimetype is None else str(mimetype),
    }


def from_payload(payload: Mapping[str, Any]) -> EmailMessage:
    """The message ``to_payload`` was given (same parts, same headers, same Message-ID)."""
    version = payload.get("version")
    if version != PAYLOAD_VERSION:
        raise PayloadError(f"Payload version {version!r} is not supported (this version reads {PAYLOAD_VERSION}).")
    from django.core.mail.message import EmailAlternative, EmailAttachment

    kwargs: dict[str, Any] = {
        "subject": payload["subject"],
        "body": _uncontent(payload["body"]),
        "from_email": payload["from_email"],
        "to": list(payload["to"]),
        "cc": list(payload["cc"]),
        "bcc": list(payload["bcc"]),
        "reply_to": list(payload["reply_to"]),
        "headers": {name: value for name, value in payload["headers"]},
    }
    message: EmailMessage
    if "alternatives" in payload:
        message = EmailMultiAlternatives(**kwargs)
        message.alternatives = [
            EmailAlternative(_uncontent(item["content"]), item["mimetype"]) for item in payload["alternatives"]
        ]
    else:
        message = EmailMessage(**kwargs)
    message.content_subtype = payload.get("content_subtype") or "plain"
    if payload.get("encoding") is not None:
        message.encoding = payload["encoding"]
    for name in ("mixed_subtype", "alternative_subtype"):
        if name in payload:
            setattr(message, name, payload[name])
    attachments: list[Any] = []
    for item in payload.get("attachments", []):
        if "mime" in item:
            attachments.append(_raw_part(base64.b64decode(item["mime"])))
        else:
            attachments.append(EmailAttachment(item["filename"], _uncontent(item["content"]), item["mimetype"]))
    message.attachments = attachments
    return message
