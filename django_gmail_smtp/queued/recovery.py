"""For the admin and the commands: which messages are stuck, and queuing failed or stuck ones again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import router, transaction
from django.db.models import QuerySet

from .policy import Timing, stuck_before
from .task import SCHEDULER
from .tasks import same_transaction, tasks_backend

if TYPE_CHECKING:
    from ..models import DeliveryLog

__all__ = ["is_stuck", "retry"]


def is_stuck(entry: DeliveryLog, current: datetime | None = None) -> bool:
    """An unsent message whose next step is more than a lease overdue (no worker, or its task lost)."""
    from ..models import DeliveryLog

    open_ = entry.status in (DeliveryLog.Status.QUEUED, DeliveryLog.Status.HELD, DeliveryLog.Status.SENDING)
    return open_ and entry.due_at < stuck_before(current or SCHEDULER.timing.now())


def retry(
    entries: Sequence[DeliveryLog] | QuerySet[DeliveryLog],
    *,
    on_error: Callable[..., None] | None = None,
    timing: Timing | None = None,
) -> int:
    """Queue failed (or stuck) messages again, with a fresh count of attempts; returns how many."""
    from ..models import DeliveryLog

    scheduler = SCHEDULER if timing is None else SCHEDULER.with_timing(timing)
    done = 0
    current = scheduler.timing.now()
    db = router.db_for_write(DeliveryLog)
    for entry in entries:
        if not (entry.status == DeliveryLog.Status.FAILED or is_stuck(entry, current)) or not entry.payload:
            continue
        generation = entry.generation + 1
        schedule = scheduler.later(
            entry.task_backend, entry.queue_name, log_id=entry.pk, generation=generation, when=current
        )
        try:
            same = same_transaction(tasks_backend(entry.task_backend, entry.queue_name), db)
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
