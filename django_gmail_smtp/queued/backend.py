"""``QueuedEmailBackend``: what runs in the request, writing each message to the delivery log and enqueuing its tasks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.db import router, transaction
from django.utils.translation import gettext as _

from .. import conf, quota
from ..app_settings import app_setting
from ..exceptions import GmailConfigError
from ..payload import envelope, message_id_of, to_payload
from ..smtp_backend import EmailBackend
from .policy import is_secret, log_details
from .task import SCHEDULER
from .tasks import Scheduler, same_transaction, tasks_backend

if TYPE_CHECKING:
    from ..models import DeliveryLog

__all__ = ["QUEUED_ATTRIBUTE", "QueuedEmailBackend", "QueuedMessage"]

logger = logging.getLogger("django_gmail_smtp.queue")

QUEUED_ATTRIBUTE = "gmail_smtp_queued"
"""The attribute of each queued ``EmailMessage`` that holds its :class:`QueuedMessage`."""


@dataclass(frozen=True)
class QueuedMessage:
    """What ``send_messages()`` leaves on a message it queued: its log entry and Message-ID."""

    log_id: int
    message_id: str


class QueuedEmailBackend(BaseEmailBackend):
    """Queue each message as a task; a worker sends it with ``EmailBackend`` (README.md#background-sending).

    Takes every option of :class:`~django_gmail_smtp.backend.EmailBackend` (keyword arguments,
    ``MAILERS`` OPTIONS, ``EMAIL_*`` settings) plus ``queue_name`` and ``task_backend``.
    Secrets given as keyword arguments are refused: they would have to travel in the queue.
    ``send_messages()`` returns how many messages were queued.
    """

    scheduler: Scheduler = SCHEDULER
    """Enqueues the tasks, on the queue's clock (a subclass or a test may give another)."""

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
        self.tasks = tasks_backend(self.task_backend, self.queue_name)
        self.account_name = self._stored_account(kwargs)

    def _stored_account(self, kwargs: Mapping[str, Any]) -> str:
        """The name of the stored account the messages go out with ("" when the settings provide it)."""
        username = self.config.provenance.get("username")
        if username is None or username.source != conf.SOURCE_DATABASE:
            return ""
        from ..accounts import stored_name

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
            if is_secret(name):
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
        from ..models import DeliveryLog

        payload = to_payload(message)
        payload["mailer"] = {"alias": self.alias, "options": self.carried}
        _, recipients = envelope(payload)
        current = self.scheduler.timing.now()
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
            self.scheduler.schedule(self.task_backend, self.queue_name, log_id=entry.pk, generation=1, when=current)

        if same_transaction(self.tasks, db):  # django-tasks-db: the entry and its tasks in one transaction
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
