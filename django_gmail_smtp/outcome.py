"""What happened to each message: its status, the log lines and signals about it, what is raised.

After ``send_messages()`` every message carries a :class:`DeliveryStatus` on
``message.gmail_smtp_status`` (README.md#per-message-status-signals-logging); :func:`report`
logs each outcome and sends ``message_sent`` / ``message_failed``; :func:`failure_to_raise` is
the exception ``send_messages()`` raises without ``fail_silently``.
"""

from __future__ import annotations

import logging
import re
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .causes import Cause
from .exceptions import one_line, reply_line
from .pipeline import Reply

__all__ = [
    "ACCEPTED",
    "FAILED",
    "NOT_SENT",
    "PARTIAL",
    "REFUSED",
    "SENT",
    "STATUS_ATTRIBUTE",
    "UNKNOWN",
    "DeliveryStatus",
    "Job",
    "RecipientStatus",
    "failure_to_raise",
    "message_id",
    "report",
]

logger = logging.getLogger("django_gmail_smtp.delivery")

STATUS_ATTRIBUTE = "gmail_smtp_status"
"""The attribute of each ``EmailMessage`` that holds its :class:`DeliveryStatus` after sending."""

SENT, PARTIAL, FAILED, NOT_SENT, UNKNOWN = "sent", "partial", "failed", "not_sent", "unknown"
ACCEPTED, REFUSED = "accepted", "refused"


@dataclass
class RecipientStatus:
    """One envelope recipient: ``accepted``, ``refused`` (the server said no: with its reply, or
    refused before sending: too large, SMTPUTF8 needed), ``unknown`` (the message was on its way
    when the connection broke, without the server's reply: it may have been delivered) or
    ``not_sent`` (the server never got the message).
    """

    status: str
    reply: Reply | None = None


@dataclass
class DeliveryStatus:
    """What happened to one message, on ``message.gmail_smtp_status`` after ``send_messages()``.

    ``status`` is ``sent`` (every recipient accepted), ``partial`` (some),
    ``failed`` (none; refused by the server, or before sending), ``unknown``
    (the connection broke after the message went out and before the server's
    reply: it may or may not have been delivered) or ``not_sent`` (the server
    never got it, e.g. after the daily quota stopped the batch). ``reply`` is the
    server's final reply (or the refusal); ``cause`` explains a failure.
    """

    message_id: str | None = None
    recipients: dict[str, RecipientStatus] = field(default_factory=dict)
    reply: Reply | None = None
    attempts: int = 0
    cause: Cause | None = None
    error: BaseException | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        states = [r.status for r in self.recipients.values()]
        if states and all(s == ACCEPTED for s in states):
            return SENT
        if ACCEPTED in states:
            return PARTIAL
        if UNKNOWN in states:
            return UNKNOWN
        return FAILED if REFUSED in states else NOT_SENT

    @property
    def sent(self) -> bool:
        """Counted in ``send_messages()``'s return value: accepted for at least one recipient."""
        return any(r.status == ACCEPTED for r in self.recipients.values())

    @property
    def may_have_gone(self) -> bool:
        """Sent, or possibly delivered (``unknown``): what Gmail may count against its daily limit."""
        return any(r.status in (ACCEPTED, UNKNOWN) for r in self.recipients.values())

    @property
    def accepted(self) -> list[str]:
        return [addr for addr, r in self.recipients.items() if r.status == ACCEPTED]

    @property
    def refused(self) -> dict[str, Reply | None]:
        return {addr: r.reply for addr, r in self.recipients.items() if r.status == REFUSED}


@dataclass(eq=False)
class Job:
    """One message, prepared: its envelope and wire bytes, and its status so far."""

    message: Any
    sender: str
    recipients: list[str]
    data: bytes
    smtputf8: bool = False
    status: DeliveryStatus = field(default_factory=DeliveryStatus)
    error: BaseException | None = None
    """The first failure, raised (when nothing else is) if the message reached nobody."""

    def __post_init__(self) -> None:
        if self.status.message_id is None:
            self.status.message_id = message_id(self.data)
        for addr in self.recipients:
            self.status.recipients.setdefault(addr, RecipientStatus(NOT_SENT))


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def message_id(data: bytes) -> str | None:
    """The Message-ID header of wire bytes, or None."""
    end = data.find(b"\r\n\r\n")
    found = _MESSAGE_ID.search(data, 0, end if end >= 0 else len(data))
    return found.group(1).strip().decode("ascii", "replace") if found else None


def report(jobs: Sequence[Job], sender: type) -> None:
    """Log each outcome and send the signals; no secrets (replies and addresses only)."""
    from .signals import message_failed, message_sent

    for job in jobs:
        status = job.status
        mid = status.message_id or "(no Message-ID)"
        if status.sent:
            if status.status == PARTIAL:
                refused = ", ".join(f"{addr} ({_reply_line(r)})" for addr, r in status.refused.items())
                logger.warning(
                    "Message %s sent to %d of %d recipients; refused: %s",
                    mid,
                    len(status.accepted),
                    len(status.recipients),
                    refused,
                )
            else:
                logger.info(
                    "Message %s sent to %d recipient(s): %s", mid, len(status.accepted), _reply_line(status.reply)
                )
            signal = message_sent
        else:
            why = one_line(status.error) if status.error is not None else "not sent"
            cause_id = f" [{status.cause.id}]" if status.cause is not None else ""
            logger.warning("Message %s %s: %s%s", mid, _OUTCOME_WORDS[status.status], why, cause_id)
            signal = message_failed
        for receiver, result in signal.send_robust(sender=sender, message=job.message, status=status):
            if isinstance(result, Exception):
                logger.error(
                    "A %s receiver (%r) failed",
                    "message_sent" if signal is message_sent else "message_failed",
                    receiver,
                    exc_info=result,
                )


_OUTCOME_WORDS = {
    FAILED: "refused",
    NOT_SENT: "not sent",
    UNKNOWN: "of unknown outcome (the connection broke before the server's reply; it may have been delivered)",
}


def _reply_line(reply: Reply | None) -> str:
    return "-" if reply is None else reply_line(reply.code, reply.text)


def failure_to_raise(jobs: Sequence[Job], stop_error: BaseException | None) -> BaseException | None:
    """The exception ``send_messages()`` raises (without ``fail_silently``), or None if all went out."""
    failed = [job for job in jobs if not job.status.sent]
    if not failed:
        return None
    exc = stop_error or next((job.error for job in failed if job.error is not None), None)
    if exc is None:
        exc = smtplib.SMTPException("The message was not sent.")
    sent = sum(1 for job in jobs if job.status.sent)
    exc.sent_count = sent  # type: ignore[attr-defined]
    exc.statuses = [job.status for job in jobs]  # type: ignore[attr-defined]
    unknown = sum(1 for job in failed if job.status.status == UNKNOWN)
    if len(jobs) > 1 or unknown:
        not_sent = sum(1 for job in failed if job.status.status == NOT_SENT)
        refused = len(failed) - not_sent - unknown
        note = f"django-gmail-smtp: {sent} of {len(jobs)} messages were sent, {refused} refused"
        note += f", {unknown} of unknown outcome (may have been delivered)" if unknown else ""
        note += f", {not_sent} not sent" if not_sent else ""
        note += "; each message's outcome is on its gmail_smtp_status."
        if stop_error is not None and stop_error is exc:
            note += " The batch was stopped by this error."
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
    return exc
