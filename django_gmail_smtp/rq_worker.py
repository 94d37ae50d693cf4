"""An RQ worker for the queued backend: one signed-in connection per worker, and a quick take-over of RQ's scheduler.

* **No fork per message.** RQ's default worker runs each task in a new child process, so each
  message opens its own connection to Gmail and signs in again: eight round trips more per
  message (3 messages a second for one worker at 20 ms RTT, against 9 to 18 with this one;
  benchmarks/bench_queue.py), and Gmail answers too many sign-ins with
  ``454 4.7.0 Too many login attempts``. This worker runs
  the tasks in its own process (RQ's ``SimpleWorker``), so the connection pool keeps the
  signed-in connection from one message to the next; database connections are checked before
  and after each task, as Django does around a request (``CONN_MAX_AGE``).
* **Scheduler take-over.** RQ runs its scheduler (which enqueues delayed tasks: the queued
  backend's retries, held messages and backups) in one worker at a time, under a lock that expires
  61 seconds after its worker's last heartbeat. Another worker takes the lock over only during its
  *maintenance*, which RQ runs every 10 minutes, and an idle worker notices that only when it wakes
  up from waiting for a task (every ``--worker-ttl`` minus 15 seconds; 405 s with django-rq's
  default). This worker runs its maintenance every ``MAINTENANCE_INTERVAL`` seconds (30): with
  ``rqworker --worker-ttl 30`` another worker takes over about a minute after the loss.

Use it with django-rq's setting ``RQ = {"WORKER_CLASS": "django_gmail_smtp.rq_worker.Worker"}``
or ``rqworker --worker-class django_gmail_smtp.rq_worker.Worker`` (README.md#several-machines).
"""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections
from rq.worker import SimpleWorker

__all__ = ["MAINTENANCE_INTERVAL", "Worker"]

MAINTENANCE_INTERVAL = 30
"""Seconds between two maintenance runs (RQ's default: 600)."""


class Worker(SimpleWorker):
    """RQ's in-process worker; maintenance (and the scheduler take-over) every ``MAINTENANCE_INTERVAL`` s."""

    maintenance_every: int = MAINTENANCE_INTERVAL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", self.maintenance_every)
        super().__init__(*args, **kwargs)

    def perform_job(self, *args: Any, **kwargs: Any) -> bool:
        close_old_connections()  # a database connection that broke or aged out is not reused
        try:
            return bool(super().perform_job(*args, **kwargs))
        finally:
            close_old_connections()
