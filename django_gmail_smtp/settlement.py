"""The delivery state machine: what one round's replies make of each message, and what comes next.

After a round of transactions on one connection, :func:`settle` turns each transaction's
replies (or their absence) into its recipients' statuses, the transactions to send again, the
trouble to back off from, and the error that stops the batch. No I/O, no clock: the loop
(:mod:`.delivery`) connects, waits and sends; this decides (README.md#fast-fault-tolerant-delivery):

* ``2xx`` to the final ``BDAT LAST``/``DATA``: sent, to the recipients accepted at ``RCPT``;
* ``5xx`` at ``MAIL``, ``RCPT`` or the final reply: refused for good (those recipients), with that
  reply; Gmail's daily quota (``550 5.4.5``) also stops the batch;
* ``4xx`` (``421`` included): sent again to the recipients concerned, while attempts are left;
  then refused with that reply;
* no verdict (the connection broke, or the server said ``421``: it acted on nothing after that):
  sent again while attempts are left; then ``unknown`` if the message's bytes went out (the
  server may have taken it), ``not_sent`` if they did not. Never ``refused`` without a reply.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .causes import CATALOGUE, Cause, explain_reply
from .exceptions import explain_exception, with_cause
from .outcome import ACCEPTED, NOT_SENT, REFUSED, UNKNOWN, Job, RecipientStatus
from .pipeline import Reply, Transaction

__all__ = [
    "Attempt",
    "Round",
    "carried_cause",
    "explained",
    "give_up",
    "halts",
    "is_quota",
    "refuse",
    "settle",
    "unsendable",
]


@dataclass(eq=False)
class Attempt(Transaction):
    """A transaction of a :class:`~django_gmail_smtp.outcome.Job` (its ``tag``), and how its tries went."""

    attempts: int = 0
    last: Reply | None = None
    """The temporary refusal a give-up reports (None: no reply came)."""
    last_error: BaseException | None = None
    maybe_delivered: bool = False
    """An earlier try went out and its reply never came."""

    def again(self, recipients: list[str]) -> Attempt:
        """The same message to ``recipients``, as a fresh transaction."""
        return Attempt(
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


@dataclass
class Round:
    """What one round came to, for the loop."""

    retry: list[Attempt] = field(default_factory=list)
    """To send again, in order (and the transactions never issued)."""
    trouble: BaseException | None = None
    """The temporary failure of this round (a server's reply rather than a mere hang-up)."""
    dropped: bool = True
    """Every trouble was the connection going away: reconnect at once rather than wait."""
    progress: bool = False
    """A message was accepted."""
    stop: BaseException | None = None
    """Gmail's daily quota: the batch stops."""


def explained(exc: BaseException, stage: str) -> BaseException:
    return with_cause(exc, explain_exception(exc, stage=stage), stage)


def is_quota(reply: Reply | None) -> bool:
    return reply is not None and reply.code == 550 and explain_reply(reply.code, reply.text) is CATALOGUE["daily_quota"]


def carried_cause(exc: BaseException | None) -> Cause | None:
    return getattr(exc, "cause", None)


def _is_drop(exc: BaseException | None, reply: Reply | None) -> bool:
    """A connection that went away (hang-up, idle timeout): no reason to wait before reconnecting."""
    if reply is not None:
        return explain_reply(reply.code, reply.text) is CATALOGUE["idle_timeout"]
    found = carried_cause(exc)
    return found is None or found.id in ("disconnected", "idle_timeout")


def halts(txn: Transaction) -> bool:
    """Stop issuing after this transaction? (Temporary trouble or the daily quota.)"""
    for reply in (txn.mail, txn.final, *txn.rcpt):
        if reply is not None and (reply.code == 421 or is_quota(reply)):
            return True
    return (txn.mail is not None and txn.mail.temporary) or (txn.final is not None and txn.final.temporary)


def refuse(job: Job, recipients: Iterable[str], reply: Reply | None, error: BaseException) -> None:
    """Refused for good: by the server (``reply``), or before sending."""
    for addr in recipients:
        job.status.recipients[addr] = RecipientStatus(REFUSED, reply)
    if job.error is None:
        job.error = error
    if reply is not None and job.status.reply is None:
        job.status.reply = reply


def _stop_trying(txn: Attempt, recipients: Iterable[str], reply: Reply | None, error: BaseException) -> None:
    """No more attempts: a temporary refusal is reported as such; without any reply the
    outcome is ``unknown`` if the message went out on a connection that then broke, else
    ``not_sent``. Never ``refused`` without the server having said so."""
    job: Job = txn.tag
    if reply is not None:
        refuse(job, recipients, reply, error)
        return
    maybe = txn.maybe_delivered or (txn.data_sent and not txn.settled)
    for addr in recipients:
        job.status.recipients[addr] = RecipientStatus(UNKNOWN if maybe else NOT_SENT)
    if job.error is None:
        job.error = error


def give_up(txn: Attempt, error: BaseException | None) -> None:
    """Never sent again (the batch stopped): report how its last try ended, or ``error``."""
    job: Job = txn.tag
    if txn.last_error is not None:  # tried before: report how that attempt ended
        _stop_trying(txn, txn.recipients, txn.last, txn.last_error)
    elif job.error is None:
        job.error = error


def unsendable(txn: Attempt, size_limit: int | None, smtputf8: bool) -> bool:
    """Refuse, before sending, what this server cannot take (over its ``SIZE``, or an SMTPUTF8
    address without SMTPUTF8); True if refused."""
    if size_limit is not None and len(txn.data) > size_limit:
        text = (
            f"5.3.4 Message of {len(txn.data)} bytes exceeds the server's SIZE limit of "
            f"{size_limit} bytes; not sent (checked by django-gmail-smtp before sending)."
        )
        error = explained(smtplib.SMTPSenderRefused(552, text.encode(), txn.sender), "mail")
        refuse(txn.tag, txn.recipients, Reply(552, text), error)
        return True
    if txn.smtputf8 and not smtputf8:
        not_supported = smtplib.SMTPNotSupportedError(
            "SMTPUTF8 not supported by server: an address has non-ASCII characters before the @."
        )
        refuse(txn.tag, txn.recipients, None, with_cause(not_supported, CATALOGUE["smtputf8_required"], "mail"))
        return True
    return False


def _refused_recipients(replies: Iterable[tuple[str, Reply | None]]) -> BaseException:
    return explained(
        smtplib.SMTPRecipientsRefused({a: (r.code, r.text.encode()) for a, r in replies if r is not None}), "rcpt"
    )


def settle(batch: Sequence[Attempt], *, attempts: int, lost: BaseException | None) -> Round:
    """Record each transaction's verdict on its job; say what to retry and what stops the batch.

    ``attempts``: tries per message (``RETRY_ATTEMPTS``); ``lost``: what broke the connection
    during the round, if anything did.
    """
    result = Round()

    def again(txn: Attempt, recipients: list[str], reply: Reply | None, error: BaseException) -> None:
        txn.last, txn.last_error = reply, error
        dropped = _is_drop(error, reply)
        if result.trouble is None or (result.dropped and not dropped):  # a reply says more than a hang-up
            result.trouble = error
        result.dropped = result.dropped and dropped
        if txn.attempts >= attempts:
            _stop_trying(txn, recipients, reply, error)
            return
        result.retry.append(txn.again(recipients))

    closing = False  # the server said 421 (closing): it acted on nothing sent after that
    for txn in batch:
        if not txn.issued:
            result.retry.append(txn)
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
                error = explained(smtplib.SMTPRecipientsRefused({addr: (reply.code, reply.text.encode())}), "rcpt")
                refuse(job, [addr], reply, error)
                if is_quota(reply):
                    result.stop = error
        first_temporary = next((r for _, r in replies if r is not None and r.temporary), None)
        if txn.final is not None and txn.final.ok:
            result.progress = True
            job.status.reply = txn.final
            for addr, reply in replies:
                if reply is not None and reply.ok:
                    job.status.recipients[addr] = RecipientStatus(ACCEPTED, reply)
            if first_temporary is not None:
                error = _refused_recipients((a, r) for a, r in replies if a in temporary)
                if explain_reply(first_temporary.code, first_temporary.text) is CATALOGUE["too_many_recipients"]:
                    # The server takes fewer per transaction than MAX_RECIPIENTS: send the rest at once.
                    result.retry.append(txn.again(temporary))
                else:
                    again(txn, temporary, first_temporary, error)
            continue
        if not txn.settled:  # the connection broke before the verdict
            error = lost or smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            still_open = [addr for addr, r in replies if r is None or r.ok or r.temporary]
            if still_open:
                again(txn, still_open, None, error)
            continue
        mail = txn.mail
        assert mail is not None
        if not mail.ok:
            error = explained(smtplib.SMTPSenderRefused(mail.code, mail.text.encode(), txn.sender), "mail")
            if mail.temporary:
                again(txn, txn.recipients, mail, error)
            else:
                refuse(job, txn.recipients, mail, error)
                if is_quota(mail):
                    result.stop = error
            continue
        accepted = [addr for addr, r in replies if r is not None and r.ok]
        if not accepted:  # every recipient refused; the permanent ones are recorded above
            if first_temporary is not None:
                again(txn, temporary, first_temporary, _refused_recipients(replies))
            continue
        final = txn.final
        assert final is not None
        error = explained(smtplib.SMTPDataError(final.code, final.text.encode()), "data")
        if final.temporary:
            again(txn, accepted + temporary, final, error)
        else:
            refuse(job, accepted, final, error)
            if is_quota(final):
                result.stop = error
    return result
