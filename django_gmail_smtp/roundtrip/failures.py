"""How a failed mailbox step is named: its cause, and the server's words for its error field."""

from __future__ import annotations

import ssl

from ..causes import CATALOGUE, Cause
from ..deadline import Deadline
from ..exceptions import MailboxError, describe_error, explain_exception

__all__ = ["connect_cause", "describe_mailbox_error", "mailbox_cause"]


def describe_mailbox_error(exc: BaseException) -> str:
    """The server's words (or the error's), for the step's error field."""
    if isinstance(exc, MailboxError):
        return exc.reply or (str(exc.args[0]) if exc.args else type(exc).__name__)
    return describe_error(exc)


def connect_cause(exc: BaseException, unreachable: str) -> Cause:
    """Why the mailbox server could not be reached: the error's own cause, a certificate's,
    else ``unreachable``."""
    found = getattr(exc, "cause", None)
    if found is not None:
        return found  # type: ignore[no-any-return]
    if isinstance(exc, ssl.SSLCertVerificationError):
        found = explain_exception(exc, stage="tls")
    return found or CATALOGUE[unreachable]


def mailbox_cause(exc: BaseException, deadline: Deadline, protocol_cause: str) -> Cause:
    """Why a step of the mailbox conversation failed: the error's own cause, the round trip's
    time running out, else ``protocol_cause``."""
    found = getattr(exc, "cause", None)
    if found is not None:
        return found  # type: ignore[no-any-return]
    if isinstance(exc, TimeoutError) and deadline.remaining() <= 0:
        return CATALOGUE["round_trip_timeout"]
    return CATALOGUE[protocol_cause]
