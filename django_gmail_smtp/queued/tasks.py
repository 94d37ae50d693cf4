"""The Tasks-framework adapter: which Tasks backend and queue, the task object, scheduling a sender and its backup.

A message is handed to a worker as two tasks that carry the log entry's id, its generation and
whether the task is the backup (never the message): the *sender*, due at once or at the time
given, and the *backup*, one lease later. Times are on the queue's clock (:class:`.Timing`);
a task's ``run_after`` is on the wall clock, so the delay between the two is what carries over.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router
from django.utils import timezone
from django.utils.translation import gettext as _

from ..exceptions import GmailConfigError
from .policy import MARGIN, Timing, lease

__all__ = ["TASK_MODULE", "TASK_NAME", "Scheduler", "same_transaction", "tasks_backend"]

TASK_NAME = "deliver_queued_message"
TASK_MODULE = "django_gmail_smtp.queued"
"""Where workers import the task from (``django_gmail_smtp.queued.deliver_queued_message``): tasks
already waiting in users' queues name this path, so it never changes."""


def tasks_backend(alias: str, queue_name: str) -> Any:
    """The Tasks backend ``alias``, checked for what the queue needs; :class:`GmailConfigError` if unfit."""
    try:
        from ..tasks_compat import task_backends
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


def same_transaction(backend: Any, db: str) -> bool:
    """True when enqueuing writes to the log's database (django-tasks-db): atomic with the log entry."""
    try:
        from django_tasks_db.backend import DatabaseBackend
    except ImportError:
        return False
    if not isinstance(backend, DatabaseBackend):
        return False
    from django_tasks_db.models import DBTaskResult

    return router.db_for_write(DBTaskResult) == db


@dataclass(frozen=True)
class Scheduler:
    """Enqueues the task function ``func`` for log entries, on the clock of ``timing``."""

    func: Callable[..., str]
    timing: Timing = field(default_factory=Timing)

    def with_timing(self, timing: Timing) -> Scheduler:
        """The same scheduler on another clock (tests pass a fake one)."""
        return dataclasses.replace(self, timing=timing)

    def task(self, alias: str, queue_name: str) -> Any:
        """The Task object for ``func`` on that Tasks backend and queue; :class:`GmailConfigError` if unfit."""
        backend = tasks_backend(alias, queue_name)
        return backend.task_class(
            priority=0, func=self.func, queue_name=queue_name, backend=alias, run_after=None, takes_context=False
        )

    def importable_task(self, alias: str, queue_name: str) -> Any:
        """The Task object a worker imports: for the configured backend and queue, else any valid one.

        A worker re-targets the task at the backend and queue it was enqueued on, so any will do.
        """
        try:
            return self.task(alias, queue_name)
        except GmailConfigError:
            from ..tasks_compat import task_backends

            for other in task_backends.settings:
                backend = task_backends[other]
                for name in sorted(getattr(backend, "queues", None) or ["default"]):
                    try:
                        return self.task(other, name)
                    except GmailConfigError:
                        continue
            raise

    def run_after(self, when: datetime) -> datetime | None:
        """``when`` (on the queue's clock) as a wall-clock ``run_after``; None if it is due already."""
        delay = when - self.timing.now()
        if delay <= timedelta(0):
            return None
        return timezone.now() + delay

    def enqueue(
        self, alias: str, queue_name: str, *, log_id: int, generation: int, when: datetime, backup: bool
    ) -> None:
        """One task for the log entry ``log_id``: its id, not its message (the Tasks backend keeps its arguments)."""
        task = self.task(alias, queue_name)
        run_after = self.run_after(when)
        if run_after is not None:
            task = task.using(run_after=run_after)
        task.enqueue(log_id=log_id, generation=generation, backup=backup)

    def schedule(self, alias: str, queue_name: str, *, log_id: int, generation: int, when: datetime) -> None:
        """The sender at ``when`` and its backup one lease later."""
        self.enqueue(alias, queue_name, log_id=log_id, generation=generation, when=when, backup=False)
        self.enqueue(alias, queue_name, log_id=log_id, generation=generation, when=when + lease() + MARGIN, backup=True)

    def later(self, alias: str, queue_name: str, *, log_id: int, generation: int, when: datetime) -> Callable[[], None]:
        """:meth:`schedule` as a callable without arguments, for ``transaction.on_commit()``."""
        return functools.partial(self.schedule, alias, queue_name, log_id=log_id, generation=generation, when=when)
