"""One attempt of a worker at one queued message: claim it, take a slot of the daily limit, send, record.

The state machine of the task (README.md#what-is-guaranteed-at-least-once). An attempt reads the
message's log entry and decides: nothing to do (sent, failed, superseded by a newer generation,
held by a live attempt, not due yet), or *claim* it (one atomic update that holds it for a lease)
and send it. Then it records the outcome: *sent*, *failed* (permanent failure, or attempts used
up), *retrying* (temporary failure: a new generation of tasks after a jittered backoff) or
*held* (over the daily limit: a new generation when a slot frees up). A backup attempt first
arms a backup of its own, so a worker killed at any point leaves a task that takes over.

What it needs from outside comes in as arguments: the :class:`~.tasks.Scheduler` that enqueues
new generations, and the :class:`~.policy.Timing` (clock, randomness) it goes by.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.message import EmailMessage
from django.db import router, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import quota
from ..causes import explain_reply
from ..delivery import STATUS_ATTRIBUTE, UNKNOWN
from ..exceptions import GmailConfigError, one_line, reply_of
from ..payload import PayloadError, from_payload
from ..smtp_backend import EmailBackend
from . import policy
from .policy import MARGIN, REPLY_LIMIT, Timing
from .tasks import Scheduler, same_transaction, tasks_backend

if TYPE_CHECKING:
    from ..models import DeliveryLog

__all__ = ["Attempt", "classify", "smtp_backend_for"]

logger = logging.getLogger("django_gmail_smtp.queue")


def smtp_backend_for(payload: Mapping[str, Any]) -> EmailBackend:
    """The ``EmailBackend`` a queued message goes out with: its mailer's settings and the options it carried."""
    mailer = payload.get("mailer") or {}
    alias = mailer.get("alias")
    options = dict(mailer.get("options") or {})
    if alias is None:
        return EmailBackend(**options)
    mailers = getattr(settings, "MAILERS", None) or {}
    if alias not in mailers:
        raise GmailConfigError(
            _("The message was queued for the mailer %(alias)r, which is no longer in MAILERS.") % {"alias": alias},
            hint=_("Add the mailer back, or retry the message from the admin after queuing it anew."),
            check_id=None,
        )
    configured = {k: v for k, v in (mailers[alias].get("OPTIONS") or {}).items() if k not in policy.QUEUE_OPTIONS}
    return EmailBackend(alias=alias, **(configured | options))


def classify(exc: BaseException) -> tuple[str, str, str]:
    """(``"quota"``, ``"temporary"`` or ``"permanent"``; the reply or error, one line per line; cause id)."""
    code, text = reply_of(exc)
    cause = getattr(exc, "cause", None)
    if cause is None and code is not None:
        cause = explain_reply(code, text)
    reply = f"{code} {text}".strip() if code is not None else one_line(exc)
    cause_id = cause.id if cause is not None else ""
    if cause_id == "daily_quota":
        return "quota", reply, cause_id
    if cause is not None:
        temporary = cause.temporary
    elif code is not None:
        temporary = 400 <= code < 500
    else:
        temporary = isinstance(exc, OSError | smtplib.SMTPServerDisconnected)
    return ("temporary" if temporary else "permanent"), reply, cause_id


def _status_reply(message: EmailMessage) -> str:
    """The server's reply to a sent message, and any refused recipients (from ``gmail_smtp_status``)."""
    status = getattr(message, STATUS_ATTRIBUTE, None)
    if status is None:
        return ""
    reply = getattr(status, "reply", None)
    text = f"{reply.code} {reply.text}".strip() if reply is not None else ""
    refused = getattr(status, "refused", None) or {}
    if refused:
        parts = [f"{addr}: {r.code} {r.text}".strip() if r is not None else addr for addr, r in refused.items()]
        text += "\n" + _("Refused: %(list)s") % {"list": "; ".join(parts)}
    return text


class Attempt:
    """One run of the task for one message."""

    def __init__(self, log_id: int, generation: int, backup: bool, *, scheduler: Scheduler) -> None:
        self.log_id = log_id
        self.generation = generation
        self.backup = backup
        self.scheduler = scheduler
        self.timing: Timing = scheduler.timing
        """The clock the attempt claims, holds and retries by: the scheduler's (tests pass their own)."""

    @property
    def log(self) -> QuerySet[DeliveryLog]:
        from ..models import DeliveryLog

        return DeliveryLog.objects.filter(pk=self.log_id)

    def mine(self) -> QuerySet[DeliveryLog]:
        """The entry while this attempt holds it."""
        from ..models import DeliveryLog

        return self.log.filter(generation=self.generation, status=DeliveryLog.Status.SENDING)

    def run(self) -> str:
        from ..models import DeliveryLog

        Status = DeliveryLog.Status
        entry = self.log.first()
        if entry is None:
            logger.warning(
                "Queued message %s: no delivery log entry (purged, or its transaction rolled back).", self.log_id
            )
            return "missing"
        if entry.status in (Status.SENT, Status.FAILED):
            return str(entry.status)
        if self.generation < entry.generation:
            return "superseded"
        current = self.timing.now()
        if entry.due_at > current:  # a live attempt holds it, or it is scheduled for later
            if self.backup:
                self.arm_backup(entry, entry.due_at + MARGIN)
                return "watching"
            if entry.status != Status.SENDING and self.generation == entry.generation:
                # Early by this machine's clock (the enqueuing machine's runs ahead): come back when due.
                self.scheduler.enqueue(
                    entry.task_backend,
                    entry.queue_name,
                    log_id=entry.pk,
                    generation=self.generation,
                    when=entry.due_at,
                    backup=False,
                )
            return "not due"
        if self.backup:
            self.arm_backup(entry, current + policy.lease() + MARGIN)  # this attempt needs a backup too
        claimed = self.log.filter(
            status__in=[Status.QUEUED, Status.HELD, Status.SENDING],
            generation__lte=self.generation,
            due_at__lte=current,
        ).update(status=Status.SENDING, generation=self.generation, due_at=current + policy.lease())
        if not claimed:
            return "taken"
        if entry.status == Status.SENDING:
            logger.warning(
                "Queued message %s: the attempt that was sending it stopped (worker killed?); sending it again.",
                entry.message_id,
            )
        payload = entry.payload
        if not payload:
            self.finish(Status.FAILED, _("The message's payload is gone; it cannot be sent."), "")
            return "failed"
        return self.send(entry, payload)

    def arm_backup(self, entry: DeliveryLog, when: datetime) -> None:
        self.scheduler.enqueue(
            entry.task_backend, entry.queue_name, log_id=entry.pk, generation=self.generation, when=when, backup=True
        )

    def send(self, entry: DeliveryLog, payload: dict[str, Any]) -> str:
        from ..models import DeliveryLog

        Status = DeliveryLog.Status
        try:
            smtp = smtp_backend_for(payload)
            message = from_payload(payload)
            key = quota.account_key(smtp.config)
            limit = quota.limit_for(smtp.config)
        except (ImproperlyConfigured, PayloadError, ValueError) as exc:
            self.finish(Status.FAILED, str(exc), "config")
            logger.warning("Queued message %s cannot be sent: %s", entry.message_id, exc)
            return "failed"
        try:
            reservation = quota.reserve(key, 1, limit=limit, clock=self.timing.clock)
        except quota.QuotaExceededError as exc:
            return self.hold(entry, key, limit, str(exc.args[0]))
        attempts = entry.attempts + 1
        self.mine().update(attempts=F("attempts") + 1, account=key)
        try:
            with quota.bypass():
                sent = smtp.send_messages([message])
        except (smtplib.SMTPException, OSError) as exc:
            status = getattr(message, STATUS_ATTRIBUTE, None)
            unknown = status is not None and status.status == UNKNOWN
            if unknown:  # it may have been delivered: Gmail may have counted it
                quota.confirm(reservation)
            else:
                quota.release(reservation)
            kind, reply, cause_id = classify(exc)
            if unknown:
                reply = _(
                    "Outcome unknown: the connection broke after the message went out and before the "
                    "server's reply, so it may have been delivered (%(reply)s)."
                ) % {"reply": reply}
            if kind == "quota":
                quota.block(key, reason=reply, clock=self.timing.clock)
                return self.hold(entry, key, limit, reply)
            if kind == "temporary" and attempts < policy.attempts():
                return self.retry(entry, attempts, reply, cause_id)
            self.finish(Status.FAILED, reply, cause_id)
            logger.warning("Queued message %s failed after %d attempt(s): %s", entry.message_id, attempts, reply)
            return "failed"
        except Exception as exc:  # a bug, not a delivery failure: recorded, and raised for the Tasks backend
            quota.release(reservation)
            self.finish(Status.FAILED, f"{type(exc).__name__}: {exc}", "")
            raise
        # SystemExit / KeyboardInterrupt (a worker told to stop) pass through untouched: the message
        # stays "sending", its slot counted, and the backup sends it once the lease has run out.
        if not sent:
            quota.release(reservation)
            self.finish(Status.FAILED, _status_reply(message) or _("The server accepted no recipient."), "")
            return "failed"
        quota.confirm(reservation)
        updated = self.finish(Status.SENT, _status_reply(message), "", sent_at=timezone.now(), payload=None)
        if not updated:
            logger.warning(
                "Queued message %s was sent, but another attempt took it over meanwhile (QUEUE_LEASE too short?); "
                "it may be sent twice.",
                entry.message_id,
            )
        return "sent"

    def finish(self, status: str, reply: str, cause: str, **fields: Any) -> int:
        return self.mine().update(status=status, last_reply=reply[:REPLY_LIMIT], cause=cause[:50], **fields)

    def reschedule(self, entry: DeliveryLog, when: datetime, **fields: Any) -> None:
        """Hand the message to a new generation of tasks, due at ``when``.

        With django-tasks-db the entry and the new tasks change in one transaction. Otherwise the
        tasks are enqueued first: a crash in between leaves this attempt's lease to run out, and its
        backup to take over (the reverse order could leave an entry no task will ever look at).
        """
        generation = self.generation + 1
        db = router.db_for_write(type(entry))
        schedule = self.scheduler.later(
            entry.task_backend, entry.queue_name, log_id=entry.pk, generation=generation, when=when
        )
        if same_transaction(tasks_backend(entry.task_backend, entry.queue_name), db):
            with transaction.atomic(using=db):
                if self.mine().update(generation=generation, due_at=when, **fields):
                    schedule()
            return
        schedule()
        self.mine().update(generation=generation, due_at=when, **fields)

    def retry(self, entry: DeliveryLog, attempts: int, reply: str, cause: str) -> str:
        from ..models import DeliveryLog

        delay = policy.retry_delay(attempts, self.timing)
        logger.info(
            "Queued message %s: temporary failure (%s); retrying in %.1f s.",
            entry.message_id,
            reply,
            delay.total_seconds(),
        )
        self.reschedule(
            entry,
            self.timing.now() + delay,
            status=DeliveryLog.Status.QUEUED,
            last_reply=reply[:REPLY_LIMIT],
            cause=cause[:50],
        )
        return "retrying"

    def hold(self, entry: DeliveryLog, key: str, limit: int | None, reply: str) -> str:
        from ..models import DeliveryLog

        Status = DeliveryLog.Status
        ahead = DeliveryLog.objects.filter(account=key, status=Status.HELD, created_at__lt=entry.created_at).count()
        current = self.timing.now()
        free = quota.next_free(key, limit, ahead=ahead, clock=self.timing.clock)
        when = policy.hold_until(free, current)
        logger.info("Queued message %s held for %s's daily limit until %s.", entry.message_id, key, when.isoformat())
        self.reschedule(
            entry, when, status=Status.HELD, account=key, last_reply=reply[:REPLY_LIMIT], cause="daily_quota"
        )
        return "held"
