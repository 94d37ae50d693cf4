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
"""

from __future__ import annotations

import logging
import random
import re
import smtplib
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .app_settings import flag_setting, gmail_smtp, number_setting
from .causes import CATALOGUE, Cause, explain_reply
from .deadline import Deadline
from .exceptions import explain_exception, one_line, reply_line, with_cause
from .retry import RetryPolicy
from .session import Reply, SMTPSession, Transaction

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
    "send_batch",
    "send_budget",
]

logger = logging.getLogger("django_gmail_smtp.delivery")

STATUS_ATTRIBUTE = "gmail_smtp_status"
"""The attribute of each ``EmailMessage`` that holds its :class:`DeliveryStatus` after sending."""

SENT, PARTIAL, FAILED, NOT_SENT, UNKNOWN = "sent", "partial", "failed", "not_sent", "unknown"
ACCEPTED, REFUSED = "accepted", "refused"


@dataclass
class RecipientStatus:
    """One envelope recipient: ``accepted``, ``refused`` (the server said no: with its reply, or
    refused before sending: too large, SMTPUTF8 needed), ``unknown`` (the message was on its way
    when the connection broke, without the server's reply: it may have been delivered) or
    ``not_sent`` (the server never got the message).
    """

    status: str
    reply: Reply | None = None


@dataclass
class DeliveryStatus:
    """What happened to one message, on ``message.gmail_smtp_status`` after ``send_messages()``.

    ``status`` is ``sent`` (every recipient accepted), ``partial`` (some),
    ``failed`` (none; refused by the server, or before sending), ``unknown``
    (the connection broke after the message went out and before the server's
    reply: it may or may not have been delivered) or ``not_sent`` (the server
    never got it, e.g. after the daily quota stopped the batch). ``reply`` is the
    server's final reply (or the refusal); ``cause`` explains a failure.
    """

    message_id: str | None = None
    recipients: dict[str, RecipientStatus] = field(default_factory=dict)
    reply: Reply | None = None
    attempts: int = 0
    cause: Cause | None = None
    error: BaseException | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        states = [r.status for r in self.recipients.values()]
        if states and all(s == ACCEPTED for s in states):
            return SENT
        if ACCEPTED in states:
            return PARTIAL
        if UNKNOWN in states:
            return UNKNOWN
        return FAILED if REFUSED in states else NOT_SENT

    @property
    def sent(self) -> bool:
        """Counted in ``send_messages()``'s return value: accepted for at least one recipient."""
        return any(r.status == ACCEPTED for r in self.recipients.values())

    @property
    def may_have_gone(self) -> bool:
        """Sent, or possibly delivered (``unknown``): what Gmail may count against its daily limit."""
        return any(r.status in (ACCEPTED, UNKNOWN) for r in self.recipients.values())

    @property
    def accepted(self) -> list[str]:
        return [addr for addr, r in self.recipients.items() if r.status == ACCEPTED]

    @property
    def refused(self) -> dict[str, Reply | None]:
        return {addr: r.reply for addr, r in self.recipients.items() if r.status == REFUSED}


@dataclass(frozen=True)
class DeliveryOptions:
    """The delivery knobs of ``GMAIL_SMTP``, read once per ``send_messages()`` call."""

    reuse: bool = True
    idle_timeout: float = 60.0
    noop_after: float | None = 10.0
    pipelining: bool = True
    window: int = 10
    max_recipients: int = 100
    messages_per_connection: int = 50
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


@dataclass(eq=False)
class Job:
    """One message, prepared: its envelope and wire bytes, and its status so far."""

    message: Any
    sender: str
    recipients: list[str]
    data: bytes
    smtputf8: bool = False
    status: DeliveryStatus = field(default_factory=DeliveryStatus)
    error: BaseException | None = None
    """The first failure, raised (when nothing else is) if the message reached nobody."""

    def __post_init__(self) -> None:
        if self.status.message_id is None:
            self.status.message_id = message_id(self.data)
        for addr in self.recipients:
            self.status.recipients.setdefault(addr, RecipientStatus(NOT_SENT))


@dataclass(eq=False)
class _Txn(Transaction):
    attempts: int = 0
    last: Reply | None = None  # the temporary refusal a give-up reports (None: no reply came)
    last_error: BaseException | None = None
    maybe_delivered: bool = False  # an earlier attempt went out and its reply never came

    def again(self, recipients: list[str]) -> _Txn:
        """The same message to ``recipients``, as a fresh transaction."""
        return _Txn(
            self.sender,
            list(recipients),
            self.data,
            self.smtputf8,
            tag=self.tag,
            attempts=self.attempts,
            last=self.last,
            last_error=self.last_error,
            maybe_delivered=self.maybe_delivered or (self.data_sent and not self.settled),
        )


class Connections(Protocol):
    """Where a batch gets its signed-in connections (the pool, or an opened backend)."""

    def acquire(self, limit: Deadline | None = None) -> SMTPSession:
        """A signed-in session; raises the connection's failure (an ``OSError`` with a cause).

        ``limit``: the batch's deadline, which the session must meet from now on (set-up included).
        """
        ...

    def release(self, session: SMTPSession, *, reusable: bool) -> None:
        """Done with ``session``: keep it if ``reusable``, else close it."""
        ...


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def message_id(data: bytes) -> str | None:
    """The Message-ID header of wire bytes, or None."""
    end = data.find(b"\r\n\r\n")
    found = _MESSAGE_ID.search(data, 0, end if end >= 0 else len(data))
    return found.group(1).strip().decode("ascii", "replace") if found else None


def send_budget(transactions: int, timeout: float | None, policy: RetryPolicy) -> float | None:
    """Seconds one ``send_messages()`` call may take in all; None without a timeout.

    ``RETRY_TIMEOUT + timeout * (RETRY_ATTEMPTS + transactions)``: a connection set-up
    (within the timeout) for every attempt, one timeout for each transaction (one per message,
    or per ``MAX_RECIPIENTS`` recipients of it), and the pauses before retries.
    """
    if timeout is None or timeout <= 0:
        return None
    return policy.timeout + timeout * (policy.attempts + transactions)


def _explained(exc: BaseException, stage: str) -> BaseException:
    return with_cause(exc, explain_exception(exc, stage=stage), stage)


def _is_quota(reply: Reply | None) -> bool:
    return reply is not None and reply.code == 550 and explain_reply(reply.code, reply.text) is CATALOGUE["daily_quota"]


def _carried_cause(exc: BaseException | None) -> Cause | None:
    return getattr(exc, "cause", None)


def _is_drop(exc: BaseException | None, reply: Reply | None) -> bool:
    """A connection that went away (hang-up, idle timeout): no reason to wait before reconnecting."""
    if reply is not None:
        return explain_reply(reply.code, reply.text) is CATALOGUE["idle_timeout"]
    found = _carried_cause(exc)
    return found is None or found.id in ("disconnected", "idle_timeout")


class _Batch:
    def __init__(
        self,
        jobs: Sequence[Job],
        connections: Connections,
        options: DeliveryOptions,
        sleep: Callable[[float], None],
        rng: Callable[[], float],
        timeout: float | None,
    ) -> None:
        self.jobs = jobs
        self.connections = connections
        self.options = options
        self.policy = options.retry
        self.sleep = sleep
        self.rng = rng
        self.stop_error: BaseException | None = None
        self.streak = 0  # consecutive rounds that ended in trouble without any message accepted
        self.waited = 0.0
        self.timeout = timeout
        self.limit: Deadline | None = None

    # -- the loop --------------------------------------------------------------
    def run(self) -> None:
        size = self.options.max_recipients
        queue: deque[_Txn] = deque(
            _Txn(job.sender, job.recipients[i : i + size], job.data, job.smtputf8, tag=job)
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
            self.limit = Deadline(budget, "batch", formula)
        session: SMTPSession | None = None
        reusable = False
        try:
            while queue and self.stop_error is None:
                if self.limit is not None and self.limit.expired:
                    self.stop_error = _explained(self.limit.error(), "send")
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
                session.transact(batch, window=self.options.window, pipelining=self.options.pipelining, stop=self._halt)
                retry, trouble, drop, progress = self._settle(batch, session)
                if not session.usable:
                    self._release(session, reusable=False)
                    session = None
                queue.extendleft(reversed(retry))
                if trouble is None or self.stop_error is not None:
                    self.streak = 0 if progress else self.streak
                    continue
                # Throttled rounds in a row (each message also counts its own attempts): stop hammering.
                self.streak = 1 if progress else self.streak + 1
                if self.streak > self.policy.attempts:
                    self.stop_error = trouble
                elif queue and not (drop and self.streak == 1):  # a mere hang-up: reconnect at once
                    self._wait(self.streak, trouble)
            reusable = True
        finally:
            if session is not None:
                self._release(session, reusable=reusable and session.usable)
            for txn in queue:  # given up on, or never tried
                self._give_up(txn, self.stop_error)

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
                found = _carried_cause(exc)
                failures += 1
                if found is None or not found.temporary or failures >= self.policy.attempts:
                    self.stop_error = exc
                    return None
                if not self._wait(failures, exc):
                    return None

    def _wait(self, retry: int, trouble: BaseException) -> bool:
        """Back off before retry number ``retry``; False (the batch stops) if over the time budget."""
        delay = self.policy.delay(retry, self.rng)
        limit = self.limit
        if self.waited + delay > self.policy.timeout or (limit is not None and time.monotonic() + delay >= limit.at):
            self.stop_error = trouble
            return False
        logger.info("Temporary failure (%s); retrying in %.2f s.", one_line(trouble), delay)
        self.sleep(delay)
        self.waited += delay
        return True

    def _take(self, queue: deque[_Txn], session: SMTPSession) -> list[_Txn] | None:
        """The next transactions for ``session``; None when it must be recycled first."""
        limit = len(queue)
        per_connection = self.options.messages_per_connection
        if per_connection:
            limit = min(limit, per_connection - session.messages)
            if limit <= 0:
                return None
        batch: list[_Txn] = []
        size_limit, utf8 = session.size_limit, session.smtputf8
        while queue and len(batch) < limit:
            txn = queue.popleft()
            if size_limit is not None and len(txn.data) > size_limit:
                text = (
                    f"5.3.4 Message of {len(txn.data)} bytes exceeds the server's SIZE limit of "
                    f"{size_limit} bytes; not sent (checked by django-gmail-smtp before sending)."
                )
                error = _explained(smtplib.SMTPSenderRefused(552, text.encode(), txn.sender), "mail")
                self._refuse(txn.tag, txn.recipients, Reply(552, text), error)
            elif txn.smtputf8 and not utf8:
                error = with_cause(
                    smtplib.SMTPNotSupportedError(
                        "SMTPUTF8 not supported by server: an address has non-ASCII characters before the @."
                    ),
                    CATALOGUE["smtputf8_required"],
                    "mail",
                )
                self._refuse(txn.tag, txn.recipients, None, error)
            else:
                batch.append(txn)
        return batch

    def _halt(self, txn: Transaction) -> bool:
        """Stop issuing after this transaction? (Temporary trouble or the daily quota.)"""
        for reply in (txn.mail, txn.final, *txn.rcpt):
            if reply is not None and (reply.code == 421 or _is_quota(reply)):
                return True
        return (txn.mail is not None and txn.mail.temporary) or (txn.final is not None and txn.final.temporary)

    # -- verdicts --------------------------------------------------------------
    def _settle(self, batch: list[_Txn], session: SMTPSession) -> tuple[list[_Txn], BaseException | None, bool, bool]:
        """Record each transaction's verdict; returns (to retry, trouble, only dropped?, progress?)."""
        retry: list[_Txn] = []
        trouble: BaseException | None = None
        drop = True
        progress = False

        def again(txn: _Txn, recipients: list[str], reply: Reply | None, error: BaseException) -> None:
            nonlocal trouble, drop
            txn.last, txn.last_error = reply, error
            dropped = _is_drop(error, reply)
            if trouble is None or (drop and not dropped):  # a server's reply says more than a hang-up
                trouble = error
            drop = drop and dropped
            if txn.attempts >= self.policy.attempts:
                self._stop_trying(txn, recipients, reply, error)
                return
            retry.append(txn.again(recipients))

        closing = False  # the server said 421 (closing): it acted on nothing sent after that
        for txn in batch:
            if not txn.issued:
                retry.append(txn)
                continue
            if closing and not txn.settled:
                txn.data_sent = False
            closing = closing or any(r is not None and r.code == 421 for r in (txn.mail, txn.final, *txn.rcpt))
            job: Job = txn.tag
            txn.attempts += 1
            job.status.attempts = max(job.status.attempts, txn.attempts)
            replies = list(zip(txn.recipients, txn.rcpt, strict=True))
            if txn.mail is None or not txn.mail.ok:  # RCPT replies after a refused MAIL mean nothing
                replies = [(addr, None) for addr in txn.recipients]
            temporary = [addr for addr, r in replies if r is not None and r.temporary]
            for addr, reply in replies:
                if reply is not None and not reply.ok and not reply.temporary:
                    error = _explained(smtplib.SMTPRecipientsRefused({addr: (reply.code, reply.text.encode())}), "rcpt")
                    self._refuse(job, [addr], reply, error)
                    if _is_quota(reply):
                        self.stop_error = error
            if txn.final is not None and txn.final.ok:
                progress = True
                job.status.reply = txn.final
                for addr, reply in replies:
                    if reply is not None and reply.ok:
                        job.status.recipients[addr] = RecipientStatus(ACCEPTED, reply)
                if temporary:
                    first = next(r for _, r in replies if r is not None and r.temporary)
                    error = _explained(
                        smtplib.SMTPRecipientsRefused(
                            {a: (r.code, r.text.encode()) for a, r in replies if a in temporary and r}
                        ),
                        "rcpt",
                    )
                    if explain_reply(first.code, first.text) is CATALOGUE["too_many_recipients"]:
                        # The server takes fewer per transaction than MAX_RECIPIENTS: send the rest at once.
                        retry.append(txn.again(temporary))
                    else:
                        again(txn, temporary, first, error)
                continue
            if not txn.settled:  # the connection broke before the verdict
                error = session.error or smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
                open_ = [addr for addr, r in replies if r is None or r.ok or r.temporary]
                if open_:
                    again(txn, open_, None, error)
                continue
            mail = txn.mail
            assert mail is not None
            if not mail.ok:
                error = _explained(smtplib.SMTPSenderRefused(mail.code, mail.text.encode(), txn.sender), "mail")
                if mail.temporary:
                    again(txn, txn.recipients, mail, error)
                else:
                    self._refuse(job, txn.recipients, mail, error)
                    if _is_quota(mail):
                        self.stop_error = error
                continue
            accepted = [addr for addr, r in replies if r is not None and r.ok]
            if not accepted:  # every recipient refused; the permanent ones are recorded above
                if temporary:
                    first = next(r for _, r in replies if r is not None and r.temporary)
                    error = _explained(
                        smtplib.SMTPRecipientsRefused({a: (r.code, r.text.encode()) for a, r in replies if r}), "rcpt"
                    )
                    again(txn, temporary, first, error)
                continue
            final = txn.final
            assert final is not None
            error = _explained(smtplib.SMTPDataError(final.code, final.text.encode()), "data")
            if final.temporary:
                again(txn, accepted + temporary, final, error)
            else:
                self._refuse(job, accepted, final, error)
                if _is_quota(final):
                    self.stop_error = error
        return retry, trouble, drop, progress

    def _refuse(self, job: Job, recipients: Iterable[str], reply: Reply | None, error: BaseException) -> None:
        for addr in recipients:
            job.status.recipients[addr] = RecipientStatus(REFUSED, reply)
        if job.error is None:
            job.error = error
        if reply is not None and job.status.reply is None:
            job.status.reply = reply

    def _stop_trying(self, txn: _Txn, recipients: Iterable[str], reply: Reply | None, error: BaseException) -> None:
        """No more attempts: a temporary refusal is reported as such; without any reply the
        outcome is ``unknown`` if the message went out on a connection that then broke, else
        ``not_sent``. Never ``refused`` without the server having said so."""
        if reply is not None:
            self._refuse(txn.tag, recipients, reply, error)
            return
        job: Job = txn.tag
        maybe = txn.maybe_delivered or (txn.data_sent and not txn.settled)
        for addr in recipients:
            job.status.recipients[addr] = RecipientStatus(UNKNOWN if maybe else NOT_SENT)
        if job.error is None:
            job.error = error

    def _give_up(self, txn: _Txn, error: BaseException | None) -> None:
        job: Job = txn.tag
        if txn.last_error is not None:  # tried before: report how that attempt ended
            self._stop_trying(txn, txn.recipients, txn.last, txn.last_error)
        elif job.error is None:
            job.error = error


def send_batch(
    jobs: Sequence[Job],
    connections: Connections,
    options: DeliveryOptions,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    timeout: float | None = None,
) -> BaseException | None:
    """Send ``jobs`` and fill in their statuses.

    ``timeout`` is the connections' timeout: with it the whole call meets :func:`send_budget`.
    Returns the error that stopped the batch early (daily quota, a connection
    that could not be made, the retry budget or the time budget used up), or None.
    """
    run = _Batch(jobs, connections, options, sleep, rng, timeout)
    run.run()
    for job in jobs:
        status = job.status
        if not status.sent or status.status == PARTIAL:
            status.error = job.error or run.stop_error
            status.cause = _carried_cause(status.error)
    return run.stop_error


def report(jobs: Sequence[Job], sender: type, stop_error: BaseException | None) -> None:
    """Log each outcome and send the signals; no secrets (replies and addresses only)."""
    from .signals import message_failed, message_sent

    for job in jobs:
        status = job.status
        mid = status.message_id or "(no Message-ID)"
        if status.sent:
            if status.status == PARTIAL:
                refused = ", ".join(f"{addr} ({_reply_line(r)})" for addr, r in status.refused.items())
                logger.warning(
                    "Message %s sent to %d of %d recipients; refused: %s",
                    mid,
                    len(status.accepted),
                    len(status.recipients),
                    refused,
                )
            else:
                logger.info(
                    "Message %s sent to %d recipient(s): %s", mid, len(status.accepted), _reply_line(status.reply)
                )
            signal = message_sent
        else:
            why = one_line(status.error) if status.error is not None else "not sent"
            cause_id = f" [{status.cause.id}]" if status.cause is not None else ""
            logger.warning("Message %s %s: %s%s", mid, _OUTCOME_WORDS[status.status], why, cause_id)
            signal = message_failed
        for receiver, result in signal.send_robust(sender=sender, message=job.message, status=status):
            if isinstance(result, Exception):
                logger.error(
                    "A %s receiver (%r) failed",
                    "message_sent" if signal is message_sent else "message_failed",
                    receiver,
                    exc_info=result,
                )


_OUTCOME_WORDS = {
    FAILED: "refused",
    NOT_SENT: "not sent",
    UNKNOWN: "of unknown outcome (the connection broke before the server's reply; it may have been delivered)",
}


def _reply_line(reply: Reply | None) -> str:
    return "-" if reply is None else reply_line(reply.code, reply.text)


def failure_to_raise(jobs: Sequence[Job], stop_error: BaseException | None) -> BaseException | None:
    """The exception ``send_messages()`` raises (without ``fail_silently``), or None if all went out."""
    failed = [job for job in jobs if not job.status.sent]
    if not failed:
        return None
    exc = stop_error or next((job.error for job in failed if job.error is not None), None)
    if exc is None:
        exc = smtplib.SMTPException("The message was not sent.")
    sent = sum(1 for job in jobs if job.status.sent)
    exc.sent_count = sent  # type: ignore[attr-defined]
    exc.statuses = [job.status for job in jobs]  # type: ignore[attr-defined]
    unknown = sum(1 for job in failed if job.status.status == UNKNOWN)
    if len(jobs) > 1 or unknown:
        not_sent = sum(1 for job in failed if job.status.status == NOT_SENT)
        refused = len(failed) - not_sent - unknown
        note = f"django-gmail-smtp: {sent} of {len(jobs)} messages were sent, {refused} refused"
        note += f", {unknown} of unknown outcome (may have been delivered)" if unknown else ""
        note += f", {not_sent} not sent" if not_sent else ""
        note += "; each message's outcome is on its gmail_smtp_status."
        if stop_error is not None and stop_error is exc:
            note += " The batch was stopped by this error."
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
    return exc
