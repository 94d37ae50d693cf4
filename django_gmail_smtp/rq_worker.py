"""An RQ worker that takes over the scheduler sooner when the worker running it dies.

RQ runs its scheduler (the process that enqueues delayed tasks: the queued backend's retries,
held messages and backups) in one worker at a time, under a lock that expires 61 seconds after
its worker's last heartbeat. Another worker takes the lock over only during its *maintenance*,
which RQ runs every 10 minutes, and an idle worker notices that only when it wakes up from
waiting for a task (every ``--worker-ttl`` minus 15 seconds, 405 s with django-rq's default).
So with RQ's defaults delayed messages can wait about a quarter of an hour after the machine
running the scheduler is lost.

This worker runs its maintenance every ``MAINTENANCE_INTERVAL`` seconds (30): with
``rqworker --worker-ttl 30`` another worker takes over the scheduler about 1 to 1.5 minutes
after the loss (README.md#several-machines-rq). Use it with django-rq's setting
``RQ = {"WORKER_CLASS": "django_gmail_smtp.rq_worker.Worker"}`` or ``--worker-class``.
"""

from __future__ import annotations

from typing import Any

from rq.worker import Worker as RQWorker

__all__ = ["MAINTENANCE_INTERVAL", "Worker"]

MAINTENANCE_INTERVAL = 30
"""Seconds between two maintenance runs (RQ's default: 600)."""


class Worker(RQWorker):
    """RQ's worker with maintenance (and so the scheduler take-over) every ``MAINTENANCE_INTERVAL`` s."""

    maintenance_every: int = MAINTENANCE_INTERVAL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", self.maintenance_every)
        super().__init__(*args, **kwargs)
