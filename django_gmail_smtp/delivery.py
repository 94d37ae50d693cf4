"""A batch of messages on its way: pipelined, retried, reconnected, each outcome recorded.

The rules (README.md#fast-fault-tolerant-delivery):

* A message counts as sent only after the server's final 2xx for it; it is sent
  again only if that reply never came (the connection broke first), and then
  only to the recipients the server had not refused for good.
* Temporary failures (4xx, and sign-in failures Gmail marks temporary) are retried
  with jittered exponential backoff, bounded by ``RETRY_ATTEMPTS`` per message and
  ``RETRY_TIMEOUT`` seconds of waiting per batch. A connection that merely dropped
  (idle timeout, hang-up) is replaced at once the first time.
* Permanent failures (5xx) are not retried: the batch goes on and they are
  reported at the end. Gmail's daily quota (``550 5.4.5``) stops the batch at
  once: retrying only extends the suspension.
* The whole call has a time budget (:func:`send_budget`): every connection, exchange and
  pause to retry ends by it (README.md#hostile-or-broken-servers).
* More than ``MAX_RECIPIENTS`` recipients are split into several transactions;
  a message larger than the server's ``SIZE``, or with a non-ASCII local part
  for a server without ``SMTPUTF8``, is refused before anything is sent.

This module is the loop: it takes sessions from the :class:`Connections` it is given (the
pool layer's, :mod:`.connections`), sends a round on each, and lets :mod:`.settlement` decide
what the replies mean. What happened to each message, and what is raised: :mod:`.outcome`
(its names are importable from here too). Time and chance come in a
:class:`~django_gmail_smtp.retry.Timing`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .app_settings import APP_SETTINGS, flag_setting, gmail_smtp, number_setting
from .connections import ConnectionOptions
from .deadline import Deadline
from .exceptions import one_line
from .outcome import (
    ACCEPTED,
    FAILED,
    NOT_SENT,
    PARTIAL,
    REFUSED,
    SENT,
    STATUS_ATTRIBUTE,
    UNKNOWN,
    DeliveryStatus,
    Job,
    RecipientStatus,
    failure_to_raise,
    message_id,
    report,
)
from .retry import RetryPolicy, Timing
from .session import SMTPSession
from .settlement import Attempt, carried_cause, explained, give_up, halts, settle, unsendable

__all__ = [
    "ACCEPTED",
    "FAILED",
    "NOT_SENT",
    "PARTIAL",
    "REFUSED",
    "SENT",
    "STATUS_ATTRIBUTE",
    "UNKNOWN",
    "Connections",
    "DeliveryOptions",
    "DeliveryStatus",
    "Job",
    "RecipientStatus",
    "failure_to_raise",
    "message_id",
    "report",
    "send_batch",
    "send_budget",
]

logger = logging.getLogger("django_gmail_smtp.delivery")


@dataclass(frozen=True)
class DeliveryOptions(ConnectionOptions):
    """The delivery knobs of ``GMAIL_SMTP``, read once per ``send_messages()`` call."""

    pipelining: bool = APP_SETTINGS["PIPELINING"]
    window: int = APP_SETTINGS["PIPELINE_WINDOW"]
    max_recipients: int = APP_SETTINGS["MAX_RECIPIENTS"]
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_settings(cls) -> DeliveryOptions:
        # One read of GMAIL_SMTP (not one per knob): this runs for every send_mail() call.
        configured = gmail_smtp()
        return cls(
            reuse=flag_setting("REUSE_CONNECTIONS", configured=configured),
            idle_timeout=number_setting("POOL_IDLE_TIMEOUT", configured=configured),
            noop_after=number_setting("POOL_NOOP_AFTER", allow_none=True, configured=configured),
            pipelining=flag_setting("PIPELINING", configured=configured),
            window=number_setting("PIPELINE_WINDOW", integer=True, minimum=1, configured=configured),
            max_recipients=number_setting("MAX_RECIPIENTS", integer=True, minimum=1, configured=configured),
            messages_per_connection=number_setting("MESSAGES_PER_CONNECTION", integer=True, configured=configured),
            retry=RetryPolicy(
                attempts=number_setting("RETRY_ATTEMPTS", integer=True, minimum=1, configured=configured),
                backoff=number_setting("RETRY_BACKOFF", configured=configured),
                backoff_max=number_setting("RETRY_BACKOFF_MAX", configured=configured),
                timeout=number_setting("RETRY_TIMEOUT", configured=configured),
            ),
        )


class Connections(Protocol):
    """Where a batch gets its signed-in connections (:mod:`.connections`: the pool, or an opened backend's)."""

    def acquire(self, limit: Deadline | None = None) -> SMTPSession:
        """A signed-in session; raises the connection's failure (an ``OSError`` with a cause).

        ``limit``: the batch's deadline, which the session must meet from now on (set-up included).
        """
        ...

    def release(self, session: SMTPSession, *, reusable: bool) -> None:
        """Done with ``session``: keep it if ``reusable``, else close it."""
        ...


def send_budget(transactions: int, timeout: float | None, policy: RetryPolicy) -> float | None:
    """Seconds one ``send_messages()`` call may take in all; None without a timeout.

    ``RETRY_TIMEOUT + timeout * (RETRY_ATTEMPTS + transactions)``: a connection set-up
    (within the timeout) for every attempt, one timeout for each transaction (one per message,
    or per ``MAX_RECIPIENTS`` recipients of it), and the pauses before retries.
    """
    if timeout is None or timeout <= 0:
        return None
    return policy.timeout + timeout * (policy.attempts + transactions)


class _Batch:
    def __init__(
        self,
        jobs: Sequence[Job],
        connections: Connections,
        options: DeliveryOptions,
        timing: Timing,
        timeout: float | None,
    ) -> None:
        self.jobs = jobs
        self.connections = connections
        self.options = options
        self.policy = options.retry
        self.timing = timing
        self.stop_error: BaseException | None = None
        self.streak = 0  # consecutive rounds that ended in trouble without any message accepted
        self.waited = 0.0
        self.timeout = timeout
        self.limit: Deadline | None = None

    def run(self) -> None:
        size = self.options.max_recipients
        queue: deque[Attempt] = deque(
            Attempt(job.sender, job.recipients[i : i + size], job.data, job.smtputf8, tag=job)
            for job in self.jobs
            for i in range(0, len(job.recipients), size)
        )
        policy = self.policy
        budget = send_budget(len(queue), self.timeout, policy)
        if budget is not None:
            formula = (
                f"RETRY_TIMEOUT + timeout × (RETRY_ATTEMPTS + transactions) = "
                f"{policy.timeout:g} + {self.timeout:g} × ({policy.attempts} + {len(queue)})"
            )
            self.limit = Deadline(budget, "batch", formula, clock=self.timing.clock)
        session: SMTPSession | None = None
        reusable = False
        try:
            while queue and self.stop_error is None:
                if self.limit is not None and self.limit.expired:
                    self.stop_error = explained(self.limit.error(), "send")
                    break
                if session is None:
                    session = self._connect()
                    if session is None:
                        break
                batch = self._take(queue, session)
                if batch is None:  # recycle: this connection has carried enough messages
                    self._release(session, reusable=False)
                    session = None
                    continue
                if not batch:
                    continue
                session.transact(batch, window=self.options.window, pipelining=self.options.pipelining, stop=halts)
                verdict = settle(batch, attempts=policy.attempts, lost=session.error)
                if verdict.stop is not None:
                    self.stop_error = verdict.stop
                if not session.usable:
                    self._release(session, reusable=False)
                    session = None
                queue.extendleft(reversed(verdict.retry))
                if verdict.trouble is None or self.stop_error is not None:
                    self.streak = 0 if verdict.progress else self.streak
                    continue
                # Throttled rounds in a row (each message also counts its own attempts): stop hammering.
                self.streak = 1 if verdict.progress else self.streak + 1
                if self.streak > policy.attempts:
                    self.stop_error = verdict.trouble
                elif queue and not (verdict.dropped and self.streak == 1):  # a mere hang-up: reconnect at once
                    self._wait(self.streak, verdict.trouble)
            reusable = True
        finally:
            if session is not None:
                self._release(session, reusable=reusable and session.usable)
            for txn in queue:  # given up on, or never tried
                give_up(txn, self.stop_error)

    def _release(self, session: SMTPSession, *, reusable: bool) -> None:
        try:
            self.connections.release(session, reusable=reusable)  # a QUIT here still meets the budget
        finally:
            session.limit = None  # a pooled connection must not carry this call's budget into the next

    def _connect(self) -> SMTPSession | None:
        failures = 0
        while True:
            try:
                return self.connections.acquire(self.limit)
            except OSError as exc:
                found = carried_cause(exc)
                failures += 1
                if found is None or not found.temporary or failures >= self.policy.attempts:
                    self.stop_error = exc
                    return None
                if not self._wait(failures, exc):
                    return None

    def _wait(self, retry: int, trouble: BaseException) -> bool:
        """Back off before retry number ``retry``; False (the batch stops) if over the time budget."""
        timing = self.timing
        delay = self.policy.delay(retry, timing.random)
        limit = self.limit
        if self.waited + delay > self.policy.timeout or (limit is not None and timing.clock() + delay >= limit.at):
            self.stop_error = trouble
            return False
        logger.info("Temporary failure (%s); retrying in %.2f s.", one_line(trouble), delay)
        timing.sleep(delay)
        self.waited += delay
        return True

    def _take(self, queue: deque[Attempt], session: SMTPSession) -> list[Attempt] | None:
        """The next transactions for ``session``; None when it must be recycled first."""
        limit = len(queue)
        per_connection = self.options.messages_per_connection
        if per_connection:
            limit = min(limit, per_connection - session.messages)
            if limit <= 0:
                return None
        batch: list[Attempt] = []
        size_limit, utf8 = session.size_limit, session.smtputf8
        while queue and len(batch) < limit:
            txn = queue.popleft()
            if not unsendable(txn, size_limit, utf8):
                batch.append(txn)
        return batch


_REAL_TIME = Timing()


def send_batch(
    jobs: Sequence[Job],
    connections: Connections,
    options: DeliveryOptions,
    *,
    timing: Timing = _REAL_TIME,
    timeout: float | None = None,
) -> BaseException | None:
    """Send ``jobs`` and fill in their statuses.

    ``timeout`` is the connections' timeout: with it the whole call meets :func:`send_budget`.
    ``timing``: the clock, sleep and randomness the retries wait with (real ones by default).
    Returns the error that stopped the batch early (daily quota, a connection
    that could not be made, the retry budget or the time budget used up), or None.
    """
    run = _Batch(jobs, connections, options, timing, timeout)
    run.run()
    for job in jobs:
        status = job.status
        if not status.sent or status.status == PARTIAL:
            status.error = job.error or run.stop_error
            status.cause = carried_cause(status.error)
    return run.stop_error
