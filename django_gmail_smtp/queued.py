"""``QueuedEmailBackend``: send in the background with Django's Tasks framework (README.md#background-sending).

``send_messages()`` turns each message into a JSON-safe payload (:mod:`.payload`), writes it
into a :class:`~django_gmail_smtp.models.DeliveryLog` entry and enqueues the task
``django_gmail_smtp.queued.deliver_queued_message`` with the entry's id (never the message) on a
Tasks backend (``TASKS`` alias
``GMAIL_SMTP["QUEUE_TASK_BACKEND"]`` or the ``task_backend`` option; queue ``QUEUE_NAME`` or
``queue_name``). A worker runs the task, which sends with :class:`~.smtp_backend.EmailBackend`
(connection reuse, pipelining and quick retries included) under the daily-limit guard
(:mod:`.quota`).

Delivery is *at least once*:

* Each message is scheduled as a pair of tasks: the sender, and a backup that runs one lease
  (``QUEUE_LEASE``, 300 s) later. An attempt claims the message in the log (an atomic update)
  and holds it for one lease; a task that finds the message sent, or claimed by a live
  attempt, or superseded by a newer schedule (the log's *generation*), does nothing. A backup
  that finds an attempt whose lease ran out (its worker died) sends the message itself, after
  arming a backup of its own. So a message whose worker is killed is sent by the next worker,
  whatever the Tasks backend does with the killed task.
* The one case that sends a message twice: the worker dies after the server accepted the message
  and before the log says so. The resend carries the same ``Message-ID`` and ``Date`` (fixed
  when queued), so the copies can be recognised.
* Temporary failures (4xx, dropped connections) are retried with jittered exponential backoff by
  re-scheduling (``QUEUE_RETRY_ATTEMPTS`` attempts, ``QUEUE_RETRY_BACKOFF`` doubling up to
  ``QUEUE_RETRY_BACKOFF_MAX`` seconds); permanent failures are recorded with the server's reply.
* A message over the daily limit is *held*: re-scheduled for when a slot frees up (at most
  ``QUOTA_HOLD_MAX`` seconds ahead, then checked again). Gmail's own ``550 5.4.5`` blocks the
  account for a window and holds the message too.

No password or other secret is ever put in a payload: the worker resolves the credentials from
the settings (``MAILERS[alias]["OPTIONS"]``, ``EMAIL_*``, ``GMAIL_SMTP``, a stored account).
The message itself stays out of the Tasks backend's storage (django-tasks-db's table, a Redis
queue, a Celery broker), which keeps what it ran: a task carries the log entry's id, its
generation and whether it is a backup; the worker reads the message from the entry, which
forgets it once sent. Tasks enqueued by earlier versions, which carried a copy of the message
(``payload=``), are still accepted and delivered from the entry.
"""

from __future__ import annotations

import functools
import logging
import random
import smtplib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.db import router, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from . import conf, quota
from .app_settings import app_setting, flag_setting, number_setting
from .causes import explain_reply
from .delivery import STATUS_ATTRIBUTE, UNKNOWN
from .exceptions import GmailConfigError, one_line, reply_of
from .payload import PayloadError, envelope, from_payload, message_id_of, to_payload
from .retry import backoff_delay
from .smtp_backend import EmailBackend

if TYPE_CHECKING:
    from .models import DeliveryLog

__all__ = [
    "QUEUE_OPTIONS",
    "TASK_NAME",
    "QueuedEmailBackend",
    "QueuedMessage",
    "deliver",
    "is_stuck",
    "log_details",
    "retry",
]

logger = logging.getLogger("django_gmail_smtp.queue")

QUEUE_OPTIONS = ("queue_name", "task_backend")
"""Options of the queued backend itself; every other option is the SMTP backend's."""

TASK_NAME = "deliver_queued_message"
QUEUED_ATTRIBUTE = "gmail_smtp_queued"
"""The attribute of each queued ``EmailMessage`` that holds its :class:`QueuedMessage`."""

_MARGIN = timedelta(seconds=1)  # a backup runs this long after the lease it watches ends
_REPLY_LIMIT = 2000


@dataclass(frozen=True)
class QueuedMessage:
    """What ``send_messages()`` leaves on a message it queued: its log entry and Message-ID."""

    log_id: int
    message_id: str


def log_details(payload: Mapping[str, Any], recipients: Sequence[str]) -> dict[str, str]:
    """The delivery log's ``to`` and ``subject`` for a message, as ``LOG_RECIPIENTS`` / ``LOG_SUBJECTS`` allow."""
    subject = " ".join(str(payload.get("subject") or "").split())
    return {
        "to": "\n".join(recipients) if flag_setting("LOG_RECIPIENTS") else "",
        "subject": (subject if len(subject) <= 255 else subject[:254] + "…") if flag_setting("LOG_SUBJECTS") else "",
    }


def _is_secret(name: str) -> bool:
    return name in conf.SECRET_OPTIONS or any(word in name for word in ("password", "secret", "token"))


def _seconds(key: str, minimum: float = 0.0) -> float:
    return float(number_setting(key, minimum=minimum))


def _attempts() -> int:
    return int(number_setting("QUEUE_RETRY_ATTEMPTS", integer=True, minimum=1))


def _lease() -> timedelta:
    return timedelta(seconds=_seconds("QUEUE_LEASE", 1.0))


# -- the Tasks framework ------------------------------------------------------------------------


def _tasks_backend(alias: str, queue_name: str) -> Any:
    """The Tasks backend ``alias``, checked for what the queue needs; :class:`GmailConfigError` if unfit."""
    try:
        from .tasks_compat import task_backends
    except ImportError:
        raise GmailConfigError(
            _(
                "The queued email backend needs Django's Tasks framework: Django 6.0 or later, or on "
                "Django 5.2 the django-tasks backport."
            ),
            hint=_('Install it with: pip install "django-gmail-smtp[tasks]" (see README.md#background-sending).'),
            check_id=None,
        ) from None
    try:
        backend = task_backends[alias]
    except ImproperlyConfigured as exc:
        raise GmailConfigError(
            _("The queued email backend sends through the Tasks backend %(alias)r, which is not usable: %(error)s")
            % {"alias": alias, "error": exc},
            hint=_(
                "Define it in TASKS, or choose another with GMAIL_SMTP['QUEUE_TASK_BACKEND'] or the "
                "'task_backend' option."
            ),
            check_id=None,
        ) from None
    if not getattr(backend, "supports_defer", False):
        raise GmailConfigError(
            _(
                "The Tasks backend %(alias)r (%(backend)s) cannot run a task later (supports_defer is "
                "False); the queued email backend needs that for retries and the daily limit."
            )
            % {"alias": alias, "backend": type(backend).__name__},
            hint=_(
                "Use a backend with a worker: django_tasks_db.DatabaseBackend ('manage.py db_worker'), "
                "or an RQ- or Celery-based one (README.md#background-sending)."
            ),
            check_id=None,
        )
    queues = getattr(backend, "queues", None)
    if queues and queue_name not in queues:
        raise GmailConfigError(
            _("The queue %(queue)r is not one of the QUEUES of the Tasks backend %(alias)r (%(queues)s).")
            % {"queue": queue_name, "alias": alias, "queues": ", ".join(sorted(map(str, queues)))},
            hint=_("Add it to TASKS[%(alias)r]['QUEUES'] or set GMAIL_SMTP['QUEUE_NAME'] / 'queue_name'.")
            % {"alias": alias},
            check_id=None,
        )
    return backend


def _make_task(alias: str, queue_name: str) -> Any:
    backend = _tasks_backend(alias, queue_name)
    return backend.task_class(
        priority=0, func=_deliver, queue_name=queue_name, backend=alias, run_after=None, takes_context=False
    )


def __getattr__(name: str) -> Any:
    """``deliver_queued_message``: the Task object a worker imports (made on first use, not at import)."""
    if name != TASK_NAME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return _make_task(app_setting("QUEUE_TASK_BACKEND"), app_setting("QUEUE_NAME"))
    except GmailConfigError:
        # A worker re-targets the task at its own backend and queue: any valid one will do here.
        from .tasks_compat import task_backends

        for alias in task_backends.settings:
            backend = task_backends[alias]
            for queue_name in sorted(getattr(backend, "queues", None) or ["default"]):
                try:
                    return _make_task(alias, queue_name)
                except GmailConfigError:
                    continue
        raise


def _real_time(when: datetime) -> datetime | None:
    """``when`` (on the queue's clock) as a wall-clock ``run_after``; None if it is due already."""
    delay = when - quota.now()
    if delay <= timedelta(0):
        return None
    return timezone.now() + delay


def _enqueue(alias: str, queue_name: str, *, log_id: int, generation: int, when: datetime, backup: bool) -> None:
    """One task for the log entry ``log_id``: its id, not its message (the Tasks backend keeps its arguments)."""
    task = _make_task(alias, queue_name)
    run_after = _real_time(when)
    if run_after is not None:
        task = task.using(run_after=run_after)
    task.enqueue(log_id=log_id, generation=generation, backup=backup)


def _schedule(alias: str, queue_name: str, *, log_id: int, generation: int, when: datetime) -> None:
    """The sender at ``when`` and its backup one lease later."""
    _enqueue(alias, queue_name, log_id=log_id, generation=generation, when=when, backup=False)
    _enqueue(alias, queue_name, log_id=log_id, generation=generation, when=when + _lease() + _MARGIN, backup=True)


def _same_transaction(backend: Any, db: str) -> bool:
    """True when enqueuing writes to the log's database (django-tasks-db): atomic with the log entry."""
    try:
        from django_tasks_db.backend import DatabaseBackend
    except ImportError:
        return False
    if not isinstance(backend, DatabaseBackend):
        return False
    from django_tasks_db.models import DBTaskResult

    return router.db_for_write(DBTaskResult) == db


# -- the backend --------------------------------------------------------------------------------


class QueuedEmailBackend(BaseEmailBackend):
    """Queue each message as a task; a worker sends it with ``EmailBackend`` (README.md#background-sending).

    Takes every option of :class:`~django_gmail_smtp.backend.EmailBackend` (keyword arguments,
    ``MAILERS`` OPTIONS, ``EMAIL_*`` settings) plus ``queue_name`` and ``task_backend``.
    Secrets given as keyword arguments are refused: they would have to travel in the queue.
    ``send_messages()`` returns how many messages were queued.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        queue_name: str | None = None,
        task_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        alias = kwargs.get("alias")
        super().__init__(**{k: v for k, v in kwargs.items() if k in ("alias", "_ignore_unknown_kwargs")})
        self.alias: str | None = alias
        self.fail_silently = fail_silently
        # Resolves and checks the SMTP options now (a wrong setting fails in the request, not later).
        self.smtp: EmailBackend = EmailBackend(**kwargs)
        self.config = self.smtp.config
        self.queue_name: str = queue_name or app_setting("QUEUE_NAME")
        self.task_backend: str = task_backend or app_setting("QUEUE_TASK_BACKEND")
        self.carried = self._carried_options(kwargs)
        self.tasks = _tasks_backend(self.task_backend, self.queue_name)
        self.account_name = self._stored_account(kwargs)

    def _stored_account(self, kwargs: Mapping[str, Any]) -> str:
        """The name of the stored account the messages go out with ("" when the settings provide it)."""
        username = self.config.provenance.get("username")
        if username is None or username.source != conf.SOURCE_DATABASE:
            return ""
        from .accounts import stored_name

        return stored_name(str(kwargs.get("account") or app_setting("ACCOUNT")))[:100]

    def _carried_options(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The options the worker needs besides the settings; refuses secrets."""
        configured: Mapping[str, Any] = {}
        if self.alias is not None:
            configured = (getattr(settings, "MAILERS", {}).get(self.alias) or {}).get("OPTIONS", {})
        carried = {}
        for name, value in kwargs.items():
            if name in ("alias", "_ignore_unknown_kwargs") or value is None:
                continue
            if _is_secret(name):
                if self.alias is not None and configured.get(name) == value:
                    continue  # the worker reads it from MAILERS itself
                raise GmailConfigError(
                    _(
                        "The queued email backend was given %(name)r as an argument; secrets are never put "
                        "in the queue, so the worker could not sign in."
                    )
                    % {"name": name},
                    hint=_(
                        "Configure it in settings (EMAIL_HOST_PASSWORD, MAILERS OPTIONS, GMAIL_SMTP) or in a "
                        "stored Gmail account, and do not pass it to get_connection() / send_mail()."
                    ),
                    check_id=None,
                )
            carried[name] = value
        return carried

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Queue the messages; return how many were queued.

        Each queued message gets ``message.gmail_smtp_queued`` (:class:`QueuedMessage`). Errors
        while queuing are raised unless ``fail_silently``; configuration errors always are.
        """
        queued = 0
        for message in email_messages or ():
            if not message.recipients():
                continue
            try:
                self._queue(message)
            except (ImproperlyConfigured, ValueError):
                raise
            except Exception:
                if not self.fail_silently:
                    raise
                logger.exception("Could not queue a message")
                continue
            queued += 1
        return queued

    def _queue(self, message: EmailMessage) -> None:
        from .models import DeliveryLog

        payload = to_payload(message)
        payload["mailer"] = {"alias": self.alias, "options": self.carried}
        _, recipients = envelope(payload)
        current = quota.now()
        db = router.db_for_write(DeliveryLog)

        def create() -> DeliveryLog:
            return DeliveryLog.objects.using(db).create(
                message_id=message_id_of(payload)[:255],
                status=DeliveryLog.Status.QUEUED,
                mailer=self.alias or "",
                account=quota.account_key(self.config),
                account_name=self.account_name,
                recipients=len(recipients),
                **log_details(payload, recipients),
                task_backend=self.task_backend,
                queue_name=self.queue_name,
                generation=1,
                due_at=current,
                payload=payload,
            )

        def schedule(entry: DeliveryLog) -> None:
            _schedule(self.task_backend, self.queue_name, log_id=entry.pk, generation=1, when=current)

        if _same_transaction(self.tasks, db):  # django-tasks-db: the entry and its tasks in one transaction
            # Inside the request's transaction, no savepoint (two queries fewer): a failed insert
            # spoils that transaction anyway, as Django's own Model.save() does. fail_silently
            # keeps it, so that the request can go on without the message.
            with transaction.atomic(using=db, savepoint=self.fail_silently):
                entry = create()
                schedule(entry)
        elif transaction.get_connection(db).in_atomic_block:  # a worker must not look before the entry exists
            entry = create()
            transaction.on_commit(functools.partial(schedule, entry), using=db)
        else:
            entry = create()
            schedule(entry)
        setattr(message, QUEUED_ATTRIBUTE, QueuedMessage(entry.pk, entry.message_id))


# -- the task -----------------------------------------------------------------------------------


def _deliver(payload: dict[str, Any] | None = None, log_id: int = 0, generation: int = 1, backup: bool = False) -> str:
    # ``payload``: only in tasks enqueued by earlier versions, which carried a copy of the message.
    return deliver(payload, log_id=log_id, generation=generation, backup=backup)


# The worker imports the task by this name (module __getattr__ above gives the Task object).
_deliver.__name__ = _deliver.__qualname__ = TASK_NAME


def _smtp_backend(payload: Mapping[str, Any]) -> EmailBackend:
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
    configured = {k: v for k, v in (mailers[alias].get("OPTIONS") or {}).items() if k not in QUEUE_OPTIONS}
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


class _Attempt:
    """One run of the task for one message."""

    def __init__(self, log_id: int, generation: int, backup: bool) -> None:
        self.log_id = log_id
        self.generation = generation
        self.backup = backup

    @property
    def log(self) -> QuerySet[DeliveryLog]:
        from .models import DeliveryLog

        return DeliveryLog.objects.filter(pk=self.log_id)

    def mine(self) -> QuerySet[DeliveryLog]:
        """The entry while this attempt holds it."""
        from .models import DeliveryLog

        return self.log.filter(generation=self.generation, status=DeliveryLog.Status.SENDING)

    def run(self) -> str:
        from .models import DeliveryLog

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
        current = quota.now()
        if entry.due_at > current:  # a live attempt holds it, or it is scheduled for later
            if self.backup:
                self.arm_backup(entry, entry.due_at + _MARGIN)
                return "watching"
            if entry.status != Status.SENDING and self.generation == entry.generation:
                # Early by this machine's clock (the enqueuing machine's runs ahead): come back when due.
                _enqueue(
                    entry.task_backend,
                    entry.queue_name,
                    log_id=entry.pk,
                    generation=self.generation,
                    when=entry.due_at,
                    backup=False,
                )
            return "not due"
        if self.backup:
            self.arm_backup(entry, current + _lease() + _MARGIN)  # this attempt needs a backup too
        claimed = self.log.filter(
            status__in=[Status.QUEUED, Status.HELD, Status.SENDING],
            generation__lte=self.generation,
            due_at__lte=current,
        ).update(status=Status.SENDING, generation=self.generation, due_at=current + _lease())
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
        return self.send(entry, payload, current)

    def arm_backup(self, entry: DeliveryLog, when: datetime) -> None:
        _enqueue(
            entry.task_backend, entry.queue_name, log_id=entry.pk, generation=self.generation, when=when, backup=True
        )

    def send(self, entry: DeliveryLog, payload: dict[str, Any], current: datetime) -> str:
        from .models import DeliveryLog

        Status = DeliveryLog.Status
        try:
            smtp = _smtp_backend(payload)
            message = from_payload(payload)
            key = quota.account_key(smtp.config)
            limit = quota.limit_for(smtp.config)
        except (ImproperlyConfigured, PayloadError, ValueError) as exc:
            self.finish(Status.FAILED, str(exc), "config")
            logger.warning("Queued message %s cannot be sent: %s", entry.message_id, exc)
            return "failed"
        try:
            reservation = quota.reserve(key, 1, limit=limit)
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
                quota.block(key, reason=reply)
                return self.hold(entry, key, limit, reply)
            if kind == "temporary" and attempts < _attempts():
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
        return self.mine().update(status=status, last_reply=reply[:_REPLY_LIMIT], cause=cause[:50], **fields)

    def reschedule(self, entry: DeliveryLog, when: datetime, **fields: Any) -> None:
        """Hand the message to a new generation of tasks, due at ``when``.

        With django-tasks-db the entry and the new tasks change in one transaction. Otherwise the
        tasks are enqueued first: a crash in between leaves this attempt's lease to run out, and its
        backup to take over (the reverse order could leave an entry no task will ever look at).
        """
        generation = self.generation + 1
        db = router.db_for_write(type(entry))

        def schedule() -> None:
            _schedule(entry.task_backend, entry.queue_name, log_id=entry.pk, generation=generation, when=when)

        if _same_transaction(_tasks_backend(entry.task_backend, entry.queue_name), db):
            with transaction.atomic(using=db):
                if self.mine().update(generation=generation, due_at=when, **fields):
                    schedule()
            return
        schedule()
        self.mine().update(generation=generation, due_at=when, **fields)

    def retry(self, entry: DeliveryLog, attempts: int, reply: str, cause: str) -> str:
        from .models import DeliveryLog

        delay = backoff_delay(
            attempts, base=_seconds("QUEUE_RETRY_BACKOFF"), cap=_seconds("QUEUE_RETRY_BACKOFF_MAX"), rng=random.random
        )
        when = quota.now() + timedelta(seconds=delay)
        logger.info("Queued message %s: temporary failure (%s); retrying in %.1f s.", entry.message_id, reply, delay)
        self.reschedule(
            entry, when, status=DeliveryLog.Status.QUEUED, last_reply=reply[:_REPLY_LIMIT], cause=cause[:50]
        )
        return "retrying"

    def hold(self, entry: DeliveryLog, key: str, limit: int | None, reply: str) -> str:
        from .models import DeliveryLog

        Status = DeliveryLog.Status
        ahead = DeliveryLog.objects.filter(account=key, status=Status.HELD, created_at__lt=entry.created_at).count()
        current = quota.now()
        when = quota.next_free(key, limit, ahead=ahead)
        hold_max = number_setting("QUOTA_HOLD_MAX", minimum=1.0, allow_none=True)
        if hold_max is not None:
            when = min(when, current + timedelta(seconds=hold_max))
        when = max(when, current + _MARGIN)
        logger.info("Queued message %s held for %s's daily limit until %s.", entry.message_id, key, when.isoformat())
        self.reschedule(
            entry, when, status=Status.HELD, account=key, last_reply=reply[:_REPLY_LIMIT], cause="daily_quota"
        )
        return "held"


def deliver(payload: dict[str, Any] | None, *, log_id: int, generation: int, backup: bool = False) -> str:
    """Run one attempt for the queued message ``log_id`` (what the task does); returns what happened.

    The message comes from the log entry. ``payload`` is ignored: tasks enqueued by earlier
    versions carried a copy of the message (the entry has it too); new tasks pass None.

    ``sent``, ``failed``, ``retrying``, ``held``; or, doing nothing: ``missing``, ``superseded``,
    ``not due``, ``watching``, ``taken`` (another attempt holds it), ``sent``/``failed`` (done already).
    """
    return _Attempt(log_id, generation, backup).run()


# -- for the admin and the commands -------------------------------------------------------------


def is_stuck(entry: DeliveryLog, current: datetime | None = None) -> bool:
    """An unsent message whose next step is more than a lease overdue (no worker, or its task lost)."""
    from .models import DeliveryLog

    open_ = entry.status in (DeliveryLog.Status.QUEUED, DeliveryLog.Status.HELD, DeliveryLog.Status.SENDING)
    return open_ and entry.due_at + _lease() + _MARGIN * 60 < (current or quota.now())


def retry(
    entries: Sequence[DeliveryLog] | QuerySet[DeliveryLog], *, on_error: Callable[..., None] | None = None
) -> int:
    """Queue failed (or stuck) messages again, with a fresh count of attempts; returns how many."""
    from .models import DeliveryLog

    done = 0
    current = quota.now()
    db = router.db_for_write(DeliveryLog)
    for entry in entries:
        if not (entry.status == DeliveryLog.Status.FAILED or is_stuck(entry, current)) or not entry.payload:
            continue
        generation = entry.generation + 1
        schedule = functools.partial(
            _schedule, entry.task_backend, entry.queue_name, log_id=entry.pk, generation=generation, when=current
        )
        try:
            same = _same_transaction(_tasks_backend(entry.task_backend, entry.queue_name), db)
            # The entry first, then its tasks (in the same transaction, or once it is committed):
            # a worker that looked in between would find the old generation and give up.
            with transaction.atomic(using=db):
                updated = (
                    DeliveryLog.objects.using(db)
                    .filter(pk=entry.pk, generation=entry.generation)
                    .update(status=DeliveryLog.Status.QUEUED, generation=generation, due_at=current, attempts=0)
                )
                if updated:
                    if same:
                        schedule()
                    else:
                        transaction.on_commit(schedule, using=db)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(entry, exc)
            continue
        done += updated
    return done
