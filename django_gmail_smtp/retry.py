"""When to try again: jittered exponential backoff, bounded in attempts and total time.

Pure functions and a small policy object; the randomness is injectable so the
schedule can be tested exactly, and :class:`Timing` carries the clock, sleep and randomness the
delivery loop waits with.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RetryPolicy", "Timing", "backoff_delay"]

# 2**60 seconds is already far beyond any cap; larger exponents only risk overflow.
_MAX_EXPONENT = 60


def backoff_delay(
    retry: int,
    *,
    base: float,
    cap: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``retry`` (1 = the first retry).

    "Equal jitter": the ceiling ``min(cap, base * 2**(retry - 1))`` doubles with
    each retry; the delay is half the ceiling plus a random part of the other
    half, so it always grows but clients that failed together do not retry in
    step. ``rng()`` returns a float in [0, 1).
    """
    if retry < 1:
        raise ValueError(f"retry counts from 1, not {retry!r}.")
    ceiling = min(cap, base * 2.0 ** min(retry - 1, _MAX_EXPONENT))
    ceiling = max(ceiling, 0.0)
    return ceiling / 2 + (ceiling / 2) * rng()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry temporary failures (``GMAIL_SMTP`` RETRY_* knobs)."""

    attempts: int = 3
    """Attempts per message, the first included (1 = never retry)."""
    backoff: float = 1.0
    """Base delay in seconds; doubles with each retry."""
    backoff_max: float = 15.0
    """Cap of one delay, in seconds."""
    timeout: float = 30.0
    """Total seconds one ``send_messages()`` call may spend waiting to retry."""

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry)."""
        return backoff_delay(retry, base=self.backoff, cap=self.backoff_max, rng=rng)


@dataclass(frozen=True)
class Timing:
    """Time and chance for code that waits to retry: the clock, sleep, and the jitter's randomness.

    The defaults are the real ones; a test passes fakes (a sleep that records, a fixed random)
    instead of patching a module.
    """

    clock: Callable[[], float] = time.monotonic
    """Seconds on a monotonic clock."""
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = random.random
    """A float in [0, 1): the jitter of :func:`backoff_delay`."""
