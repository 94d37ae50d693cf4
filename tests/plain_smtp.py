"""A plain-text SMTP server on loopback (aiosmtpd), for what the Gmail sandbox does not do.

The sandbox is Gmail: TLS before sign-in, and no mail without signing in. Django's own backend
has no way to trust the sandbox's CA without changing the process's environment, and some of
its behaviours (no sign-in at all, SMTPUTF8 without TLS) only show against a server that
accepts mail in plain text and without AUTH. This one records every message and every AUTH
attempt; it offers AUTH PLAIN/LOGIN over plain text (loopback only) and SMTPUTF8.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["PlainMessage", "PlainSMTPServer"]


@dataclass(frozen=True)
class PlainMessage:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    smtputf8: bool
    auth_user: str | None


class _Handler:
    def __init__(self, server: PlainSMTPServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        data = envelope.original_content or b""
        message = PlainMessage(
            str(envelope.mail_from), tuple(envelope.rcpt_tos), bytes(data), bool(envelope.smtp_utf8), login
        )
        with self.server.lock:
            self.server.messages.append(message)
        return "250 2.0.0 OK"


class PlainSMTPServer:
    """``with PlainSMTPServer() as server:`` -> ``server.host``, ``server.port``, ``server.messages``,
    ``server.auth_attempts`` (``(mechanism, login)`` pairs; never a password)."""

    def __init__(self, *, users: dict[str, str] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.users = dict(users or {})
        self.messages: list[PlainMessage] = []
        self.auth_attempts: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []

    def _authenticate(self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        with self.lock:
            self.auth_attempts.append((mechanism, login))
        return AuthResult(success=self.users.get(login) == password, handled=False, auth_data=data)

    def _protocol(self) -> SMTP:
        protocol = self._new_protocol()
        self._protocols.append(protocol)
        return protocol

    def _new_protocol(self) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="plain.localhost",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=self._authenticate,
            loop=self._loop,
        )

    def __enter__(self) -> PlainSMTPServer:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(self._loop.create_server(self._protocol, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="plain-smtp", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the plain SMTP server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for protocol in self._protocols:  # a client that never said QUIT (a failed sign-in)
                if protocol.transport is not None:
                    protocol.transport.abort()
            await self._server.wait_closed()

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Backend keyword options for this server (plain text, no TLS)."""
        return {"host": self.host, "port": self.port, "use_tls": False, "use_ssl": False, "timeout": 5} | overrides
