"""The round trip in the mailbox, the course IMAP and POP3 share: connect, sign in, wait for
the message, read it, clean up, sign out.

:class:`MailboxRound` walks that course and keeps the steps' books; :mod:`.imap_round` and
:mod:`.pop_round` say how each protocol finds the message (and, for IMAP, the folders first).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from django.utils.translation import gettext as _

from ..causes import CATALOGUE
from ..conf import SmtpConfig
from ..deadline import Deadline
from ..diagnosis import Run, Step, tls_facts
from ..exceptions import GmailConfigError
from ..mailbox_session import MailboxSession
from ..session import Transcript
from .analysis import analyse
from .cleanup import goodbye_step
from .failures import connect_cause, describe_mailbox_error, mailbox_cause
from .trip import Delivered, RoundTrip

__all__ = ["FIRST_PAUSE", "MailboxRound"]

FIRST_PAUSE = 1.0
"""Seconds between the first searches; the pause grows to the protocol's longest (polite polling)."""

Client = TypeVar("Client", bound=MailboxSession[Any])


def _access_token(config: SmtpConfig) -> Callable[[bool], tuple[str, bool]] | None:
    if not config.uses_oauth2:
        return None

    def get(force: bool) -> tuple[str, bool]:
        from .. import oauth

        token = oauth.access_token(config, force=force)
        return token.token, token.cached

    return get


class MailboxRound(Generic[Client]):
    """One walk through the mailbox for ``trip``, adding its steps to ``run``.

    The subclass names its steps and causes, where the server is, how to make a client, and
    how to find the message (:meth:`wait`) and delete it (:meth:`cleanup`).
    """

    connect_name = auth_name = goodbye_name = ""
    """The names of the connect, sign-in and sign-out steps."""
    unreachable = ""
    """The cause of a server that cannot be reached."""
    longest_pause = 5.0
    """Seconds between two searches at most."""
    inbox_only = False
    """The protocol sees only the inbox (POP3)."""

    def __init__(
        self,
        trip: RoundTrip,
        run: Run,
        config: SmtpConfig,
        timeout: float,
        deadline: Deadline,
        transcript: Transcript,
    ) -> None:
        self.trip = trip
        self.run = run
        self.config = config
        self.timeout = timeout
        self.deadline = deadline
        self.transcript = transcript
        self.client = self.new_client()

    # -- what the subclass says --
    @property
    def address(self) -> tuple[str, int]:
        """The mailbox server's host and port."""
        raise NotImplementedError

    def new_client(self) -> Client:
        """A client for this round trip (not connected yet): :meth:`open` with its class."""
        raise NotImplementedError

    def prepare(self) -> bool:
        """What comes between the sign-in and the wait (IMAP: the folders); False stops."""
        return True

    def wait(self) -> Delivered | None:
        """Find the message (the arrival step); None when it did not arrive or the search failed."""
        raise NotImplementedError

    def cleanup(self, found: Delivered) -> None:
        """The cleanup step for ``found`` (:func:`.cleanup.cleanup_step`)."""
        raise NotImplementedError

    # -- the course --
    def walk(self) -> None:
        host, port = self.address
        self.trip.summary.update(host=host, port=port, arrived=False, kept=self.trip.keep)
        try:
            if not self.connect_step() or not self.auth_step() or not self.prepare():
                return
            found = self.wait()
            if found is None:
                return
            analyse(self.run, self.trip, self.config, found, inbox_only=self.inbox_only)
            self.cleanup(found)
            goodbye_step(self.run, self.trip, self.goodbye_name, self.client.goodbye, commits_deletion=self.inbox_only)
        finally:
            self.client.abort()

    def open(self, kind: type[Client]) -> Client:
        """A client of ``kind`` for this round trip (not connected yet)."""
        return kind(
            self.config,
            deadline=self.deadline,
            timeout=self.timeout,
            transcript=self.transcript,
            access_token=_access_token(self.config),
            redactor=self.run.diagnosis.redactor,
        )

    def failed(self, step: Step, exc: BaseException, protocol_cause: str) -> None:
        self.run.fail(step, mailbox_cause(exc, self.deadline, protocol_cause), describe_mailbox_error(exc))

    # -- the connection --
    def connect_step(self) -> bool:
        client, (host, port) = self.client, self.address
        step = self.run.begin(
            self.connect_name,
            _("%(protocol)s connection to %(host)s:%(port)s (implicit TLS)")
            % {"protocol": client.protocol, "host": host, "port": port},
        )
        try:
            greeting = client.connect()
        except Exception as exc:
            step.data = {"host": host, "port": port, "stage": getattr(exc, "stage", "") or client.stage}
            if isinstance(exc, ssl.SSLCertVerificationError):
                step.details.append(
                    _("Verified with the CA file %(file)s.") % {"file": self.config.ssl_cafile}
                    if self.config.ssl_cafile
                    else _("Verified with the system's CA certificates (no SSL_CAFILE set).")
                )
            self.run.fail(step, connect_cause(exc, self.unreachable), describe_mailbox_error(exc))
            return False
        sock = client.tls_socket
        if sock is not None:
            tls_facts(step, sock, self.config, host=host)
        step.details.insert(0, greeting)
        step.data.update(host=host, port=port, greeting=greeting)
        self.run.end(step)
        return True

    def auth_step(self) -> bool:
        client = self.client
        step = self.run.begin(self.auth_name, _("Mailbox sign-in as %(username)s") % {"username": self.config.username})
        try:
            text = client.login()
        except GmailConfigError as exc:
            self.run.fail(
                step, CATALOGUE["oauth_extra_missing"] if exc.check_id == "gmail_smtp.E014" else None, exc.message
            )
            return False
        except Exception as exc:
            step.data = {"mechanism": client.mechanism}
            self.failed(step, exc, "imap_bad_credentials")
            return False
        step.details.append(text)
        step.details.append(_("method: %(mechanism)s") % {"mechanism": client.mechanism})
        step.data = {"username": self.config.username, "mechanism": client.mechanism, "reply": text}
        self.run.end(step)
        return True

    # -- the wait --
    def begin_wait(self, **data: Any) -> Step:
        """The arrival step, begun; ``data`` are its first facts."""
        step = self.run.begin(
            "round_trip_arrival",
            _("Waiting for the test message (up to %(seconds)s s)") % {"seconds": f"{self.trip.timeout:g}"},
        )
        step.data = {"message_id": self.trip.message_id, **data}
        return step

    def pause(self, number: int) -> float:
        """How long to wait before search ``number`` + 1: growing, and never past the arrival deadline."""
        left = self.trip.arrival_deadline() - self.trip.clock()
        return max(0.0, min(FIRST_PAUSE * (1.5**number), self.longest_pause, left))

    def not_arrived(self, step: Step, searched: Sequence[str]) -> None:
        step.details.append(
            _("Not found after %(seconds).1f s (searched: %(folders)s).")
            % {"seconds": self.trip.timeout, "folders": ", ".join(searched) or "-"}
        )
        step.data.update(arrived=False, searched=list(searched))
        self.run.fail(step, CATALOGUE["round_trip_timeout"], str(CATALOGUE["round_trip_timeout"].summary))

    def arrived(self, step: Step, found: Delivered) -> None:
        trip = self.trip
        step.details.append(
            _("Found %(seconds).1f s after the server's 250, in %(folder)s.")
            % {"seconds": found.seconds, "folder": found.folder}
        )
        step.details.append(_("Message-ID: %(id)s") % {"id": trip.message_id})
        delay = None
        if found.internaldate is not None:
            step.details.append(
                _("The server recorded its arrival at %(time)s.")
                % {"time": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(found.internaldate))}
            )
            delay = found.internaldate
        step.data.update(arrived=True, seconds=round(found.seconds, 3), folder=found.folder, internaldate=delay)
        trip.summary.update(arrived=True, seconds=round(found.seconds, 3), folder=found.folder, folder_role=found.role)
        self.run.end(step)
