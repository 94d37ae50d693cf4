"""The queue's rules of time: leases, retries with backoff, holds, what is stuck; the clock and the dice.

Read from ``GMAIL_SMTP`` at each use (``QUEUE_LEASE``, ``QUEUE_RETRY_ATTEMPTS``,
``QUEUE_RETRY_BACKOFF``, ``QUEUE_RETRY_BACKOFF_MAX``, ``QUOTA_HOLD_MAX``, ``LOG_RECIPIENTS``,
``LOG_SUBJECTS``). The time the queue goes by and the randomness of its backoff come in a
:class:`Timing`: the default reads the clock of the daily-limit guard (``GMAIL_SMTP["CLOCK"]``,
else ``timezone.now()``) and Python's ``random``; tests pass fakes instead.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .. import conf, quota
from ..app_settings import flag_setting, number_setting
from ..retry import RetryPolicy

__all__ = [
    "MARGIN",
    "QUEUE_OPTIONS",
    "REPLY_LIMIT",
    "Timing",
    "attempts",
    "hold_until",
    "is_secret",
    "lease",
    "log_details",
    "retry_delay",
    "stuck_before",
]

QUEUE_OPTIONS = ("queue_name", "task_backend")
"""Options of the queued backend itself; every other option is the SMTP backend's."""

MARGIN = timedelta(seconds=1)
"""A backup runs this long after the lease it watches ends; a held message waits at least this long."""

STUCK_AFTER = MARGIN * 60
"""How far past its lease an unsent message must be to count as stuck (no worker, or its task lost)."""

REPLY_LIMIT = 2000
"""Characters of a server's reply kept in the delivery log."""


@dataclass(frozen=True)
class Timing:
    """The clock the queue goes by and the randomness of its retries (fakes for tests).

    Not :class:`~django_gmail_smtp.retry.Timing` (the delivery's monotonic seconds and sleep): the
    queue's times are dates stored in the delivery log, and a worker never sleeps.
    """

    clock: Callable[[], datetime] = field(default=quota.now)
    """An aware ``datetime`` now: by default the guard's (``GMAIL_SMTP["CLOCK"]``, else ``timezone.now()``)."""
    random: Callable[[], float] = field(default=random.random)
    """A float in [0, 1): the jitter of the retry backoff."""

    def now(self) -> datetime:
        return self.clock()


def lease() -> timedelta:
    """How long an attempt holds its message (``QUEUE_LEASE``); its backup runs after it."""
    return timedelta(seconds=float(number_setting("QUEUE_LEASE", minimum=1.0)))


def attempts() -> int:
    """Attempts per message for temporary failures, the first included (``QUEUE_RETRY_ATTEMPTS``)."""
    return int(number_setting("QUEUE_RETRY_ATTEMPTS", integer=True, minimum=1))


def retry_delay(attempt: int, timing: Timing) -> timedelta:
    """The wait after ``attempt`` attempts failed: jittered exponential backoff (``QUEUE_RETRY_BACKOFF*``)."""
    policy = RetryPolicy(
        backoff=float(number_setting("QUEUE_RETRY_BACKOFF", minimum=0.0)),
        backoff_max=float(number_setting("QUEUE_RETRY_BACKOFF_MAX", minimum=0.0)),
    )
    return timedelta(seconds=policy.delay(attempt, rng=timing.random))


def hold_until(free: datetime, current: datetime) -> datetime:
    """When a held message is looked at again: when a slot frees up, at most ``QUOTA_HOLD_MAX`` ahead."""
    hold_max = number_setting("QUOTA_HOLD_MAX", minimum=1.0, allow_none=True)
    if hold_max is not None:
        free = min(free, current + timedelta(seconds=hold_max))
    return max(free, current + MARGIN)


def stuck_before(current: datetime) -> datetime:
    """An unsent message due before this is stuck: more than a lease overdue."""
    return current - lease() - STUCK_AFTER


def is_secret(name: str) -> bool:
    """An option that must never travel in the queue."""
    return name in conf.SECRET_OPTIONS or any(word in name for word in ("password", "secret", "token"))


def log_details(payload: Mapping[str, Any], recipients: Sequence[str]) -> dict[str, str]:
    """The delivery log's ``to`` and ``subject`` for a message, as ``LOG_RECIPIENTS`` / ``LOG_SUBJECTS`` allow."""
    subject = " ".join(str(payload.get("subject") or "").split())
    return {
        "to": "\n".join(recipients) if flag_setting("LOG_RECIPIENTS") else "",
        "subject": (subject if len(subject) <= 255 else subject[:254] + "…") if flag_setting("LOG_SUBJECTS") else "",
    }
