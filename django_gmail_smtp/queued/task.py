"""The task a worker runs, under the import path that tasks already waiting in queues name.

Workers import ``django_gmail_smtp.queued.deliver_queued_message`` (the package gives the Task
object, made on first use): the function below carries that module and name, whatever module
defines it. :data:`SCHEDULER` enqueues it.
"""

from __future__ import annotations

from typing import Any

from .attempt import Attempt
from .policy import Timing
from .tasks import TASK_MODULE, TASK_NAME, Scheduler

__all__ = ["SCHEDULER", "deliver"]


def deliver(
    payload: dict[str, Any] | None, *, log_id: int, generation: int, backup: bool = False, timing: Timing | None = None
) -> str:
    """Run one attempt for the queued message ``log_id`` (what the task does); returns what happened.

    The message comes from the log entry. ``payload`` is ignored: tasks enqueued by earlier
    versions carried a copy of the message (the entry has it too); new tasks pass None.
    ``timing``: the clock and randomness to go by (default: the settings' clock, ``random``).

    ``sent``, ``failed``, ``retrying``, ``held``; or, doing nothing: ``missing``, ``superseded``,
    ``not due``, ``watching``, ``taken`` (another attempt holds it), ``sent``/``failed`` (done already).
    """
    scheduler = SCHEDULER if timing is None else SCHEDULER.with_timing(timing)
    return Attempt(log_id, generation, backup, scheduler=scheduler).run()


def _task(payload: dict[str, Any] | None = None, log_id: int = 0, generation: int = 1, backup: bool = False) -> str:
    # ``payload``: only in tasks enqueued by earlier versions, which carried a copy of the message.
    return deliver(payload, log_id=log_id, generation=generation, backup=backup)


# The worker imports the task by this path (the package's __getattr__ gives the Task object).
_task.__module__ = TASK_MODULE
_task.__name__ = _task.__qualname__ = TASK_NAME

SCHEDULER = Scheduler(_task)
"""Enqueues the task; :mod:`.backend` and :mod:`.recovery` schedule with it."""
