"""``QueuedEmailBackend``: send in the background with Django's Tasks framework (README.md#background-sending).

``send_messages()`` turns each message into a JSON-safe payload (:mod:`django_gmail_smtp.payload`), writes it
into a :class:`~django_gmail_smtp.models.DeliveryLog` entry and enqueues the task
``django_gmail_smtp.queued.deliver_queued_message`` with the entry's id (never the message) on a
Tasks backend (``TASKS`` alias
``GMAIL_SMTP["QUEUE_TASK_BACKEND"]`` or the ``task_backend`` option; queue ``QUEUE_NAME`` or
``queue_name``). A worker runs the task, which sends with :class:`~django_gmail_smtp.smtp_backend.EmailBackend`
(connection reuse, pipelining and quick retries included) under the daily-limit guard
(:mod:`django_gmail_smtp.quota`).

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

The package, one job per module: :mod:`.backend` (``QueuedEmailBackend``, in the request),
:mod:`.tasks` (the Tasks framework: backend, queue, scheduling), :mod:`.attempt` (what a worker
does with one message), :mod:`.task` (the task function under its import path), :mod:`.recovery`
(stuck messages and the admin's retry) and :mod:`.policy` (leases, backoff, holds, the clock).
Everything public is importable from here, as before the split.
"""

from __future__ import annotations

from typing import Any

from ..app_settings import app_setting
from .attempt import classify
from .backend import QUEUED_ATTRIBUTE, QueuedEmailBackend, QueuedMessage
from .policy import QUEUE_OPTIONS, Timing, log_details
from .recovery import is_stuck, retry
from .task import SCHEDULER, deliver
from .tasks import TASK_NAME

__all__ = [
    "QUEUED_ATTRIBUTE",
    "QUEUE_OPTIONS",
    "SCHEDULER",
    "TASK_NAME",
    "QueuedEmailBackend",
    "QueuedMessage",
    "Timing",
    "classify",
    "deliver",
    "is_stuck",
    "log_details",
    "retry",
]


def __getattr__(name: str) -> Any:
    """``deliver_queued_message``: the Task object a worker imports (made on first use, not at import)."""
    if name != TASK_NAME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return SCHEDULER.importable_task(app_setting("QUEUE_TASK_BACKEND"), app_setting("QUEUE_NAME"))
