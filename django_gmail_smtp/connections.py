"""Where a batch gets its signed-in sessions: the pool (a backend not opened) or an opened backend's own.

:class:`Sessions` makes the sessions of one configuration (its transcript, TLS context and
sign-in) and gives them back when a batch is done with them: to the pool, or with QUIT. The
delivery takes its sessions from one of two sources, chosen by the backend and passed down:

* :class:`PooledConnections` -- a backend that was not opened: this thread's idle connection
  from :mod:`.pool` if it is still good, else a new one; put back into the pool afterwards.
* :class:`HeldConnection` -- an opened backend: its one connection, kept until ``close()``,
  replaced when it breaks or is worn out.

A connection that has carried ``MESSAGES_PER_CONNECTION`` messages is worn out: it is closed
(QUIT without waiting for the reply) instead of being kept, and the next message gets a new one.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from . import pool
from .app_settings import APP_SETTINGS
from .conf import SmtpConfig
from .deadline import Deadline
from .session import SMTPSession
from .transcript import Transcript

__all__ = ["ConnectionOptions", "HeldConnection", "PooledConnections", "Sessions"]


@dataclass(frozen=True)
class ConnectionOptions:
    """The ``GMAIL_SMTP`` knobs of connection reuse (README.md#connection-reuse)."""

    reuse: bool = APP_SETTINGS["REUSE_CONNECTIONS"]
    idle_timeout: float = APP_SETTINGS["POOL_IDLE_TIMEOUT"]
    noop_after: float | None = APP_SETTINGS["POOL_NOOP_AFTER"]
    messages_per_connection: int = APP_SETTINGS["MESSAGES_PER_CONNECTION"]

    def worn(self, session: SMTPSession) -> bool:
        """``session`` has carried as many messages as one connection may."""
        return bool(self.messages_per_connection) and session.messages >= self.messages_per_connection


class Sessions:
    """New and reused sessions of one configuration, recording into one transcript."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        transcript: Transcript,
        ssl_context: Callable[[], ssl.SSLContext],
    ) -> None:
        self.config = config
        self.transcript = transcript
        self.ssl_context = ssl_context
        """Called when TLS starts (a backend's one context, built then)."""

    def new(self, limit: Deadline | None = None) -> SMTPSession:
        """A new signed-in session; raises the failure (an ``OSError`` with a cause)."""
        session = SMTPSession(self.config, transcript=self.transcript, ssl_context=self.ssl_context)
        session.limit = limit
        session.connect()
        return session

    def reused(self, options: ConnectionOptions, limit: Deadline | None = None) -> SMTPSession | None:
        """This thread's pooled session for the configuration, if reuse is on and it is still good."""
        if not options.reuse:
            return None
        session = pool.checkout(
            self.config, noop_after=options.noop_after, idle_timeout=options.idle_timeout, limit=limit
        )
        if session is not None:
            session.attach(self.transcript)
        return session

    def give_back(
        self, session: SMTPSession, options: ConnectionOptions, *, reusable: bool, fail_silently: bool
    ) -> None:
        """Into the pool if ``reusable`` (and reuse is on, and it is not worn out); else closed."""
        worn = options.worn(session)
        if reusable and session.usable and options.reuse and not worn:
            pool.checkin(self.config, session, idle_timeout=options.idle_timeout)
            return
        if not session.usable:
            session.abort()
            return
        if worn:  # recycled mid-flow: no need to wait for the 221
            session.quit(wait=False)
            return
        try:
            session.quit()
        except smtplib.SMTPException:
            if not fail_silently:
                raise


class PooledConnections:
    """A backend that was not opened: sessions come from, and go back to, the pool."""

    def __init__(self, sessions: Sessions, options: ConnectionOptions, *, fail_silently: bool = False) -> None:
        self.sessions = sessions
        self.options = options
        self.fail_silently = fail_silently

    def acquire(self, limit: Deadline | None = None) -> SMTPSession:
        return self.sessions.reused(self.options, limit) or self.sessions.new(limit)

    def release(self, session: SMTPSession, *, reusable: bool) -> None:
        self.sessions.give_back(session, self.options, reusable=reusable, fail_silently=self.fail_silently)


class HeldConnection:
    """An opened backend's connection: kept until :meth:`close`, replaced when it breaks or is worn out."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.session: SMTPSession | None = None

    def open(self, options: ConnectionOptions) -> None:
        """Hold a signed-in session (a pooled one if it is still good); raises the failure."""
        if self.session is None:
            self.session = self.sessions.reused(options) or self.sessions.new()

    def connections(self, options: ConnectionOptions, *, fail_silently: bool = False) -> _Held:
        """The source a batch takes this connection from."""
        return _Held(self, options, fail_silently)

    def close(self, options: ConnectionOptions, *, fail_silently: bool = False) -> None:
        """Give the session back (to the pool, or QUIT); tolerates a server that already hung up."""
        session, self.session = self.session, None
        if session is not None:
            self.sessions.give_back(session, options, reusable=True, fail_silently=fail_silently)


class _Held:
    def __init__(self, held: HeldConnection, options: ConnectionOptions, fail_silently: bool) -> None:
        self.held = held
        self.options = options
        self.fail_silently = fail_silently

    def acquire(self, limit: Deadline | None = None) -> SMTPSession:
        held = self.held
        session = held.session
        if session is not None:
            session.limit = limit
            if session.idle_check(self.options.noop_after):
                return session
        held.session = None
        held.session = session = held.sessions.new(limit)
        return session

    def release(self, session: SMTPSession, *, reusable: bool) -> None:
        held = self.held
        if reusable and session.usable:
            return  # kept until close() (a worn-out one is replaced when the next batch starts)
        if held.session is session:
            held.session = None
        held.sessions.give_back(session, self.options, reusable=False, fail_silently=self.fail_silently)
