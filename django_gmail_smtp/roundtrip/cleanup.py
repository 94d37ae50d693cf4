"""Leaving the mailbox as it was: deleting the test message (or keeping it), and signing out.

Neither fails the run: the message was delivered; a failure here only leaves it behind, and
is a warning with its cause.
"""

from __future__ import annotations

from collections.abc import Callable

from ..causes import CATALOGUE
from ..diagnosis import WARNING, Run
from .failures import describe_mailbox_error
from .steps import title
from .trip import RoundTrip

__all__ = ["cleanup_step", "goodbye_step"]


def cleanup_step(run: Run, trip: RoundTrip, kept: str, delete: Callable[[], str]) -> None:
    """Delete the test message (``delete()`` says what it did), or keep it with ``--keep``
    (``kept`` says where it stays)."""
    trip.summary["deleted"] = False
    if trip.keep:
        run.skip("round_trip_cleanup", title("round_trip_cleanup"), kept)
        return
    step = run.begin("round_trip_cleanup", title("round_trip_cleanup"))
    try:
        done = delete()
    except Exception as exc:
        step.error = describe_mailbox_error(exc)
        step.cause = CATALOGUE["round_trip_cleanup_failed"]
        run.end(step, WARNING)
        return
    step.details.append(done)
    step.data = {"done": done}
    trip.summary["deleted"] = True
    run.end(step)


def goodbye_step(run: Run, trip: RoundTrip, name: str, goodbye: Callable[[], str], *, commits_deletion: bool) -> None:
    """Sign out (step ``name``; ``goodbye()`` returns the server's answer). ``commits_deletion``:
    the deletion takes effect only now (POP3's QUIT), so failing here means it did not happen."""
    step = run.begin(name, title(name))
    try:
        text = goodbye()
    except Exception as exc:
        step.error = describe_mailbox_error(exc)
        if commits_deletion and trip.summary.get("deleted"):
            step.cause = CATALOGUE["round_trip_cleanup_failed"]
            trip.summary["deleted"] = False
        run.end(step, WARNING)
        return
    if text:
        step.details.append(text)
    run.end(step)
