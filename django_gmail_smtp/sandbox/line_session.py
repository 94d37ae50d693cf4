"""What the sandbox's IMAP and POP3 servers share: their caps and one line-based connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from .mailstore import MailStore
from .state import SandboxState, new_session_id

__all__ = ["Closed", "LineSession", "MailboxLimits"]

LINE_LIMIT = 64 * 1024
"""Longest command line (CRLF excluded); longer: ``BAD`` and the connection is closed."""
LITERAL_LIMIT = 64 * 1024
"""Largest literal in a command (the sandbox takes no APPEND)."""
IDLE_TIMEOUT = 1800.0
"""Seconds without a command before the server says BYE (RFC 3501's autologout is at least 30 min)."""
MAX_CONNECTIONS = 100


class MailboxLimits:
    """The caps of one server (the IMAP and the POP3 one share the shape)."""

    def __init__(
        self,
        *,
        line: int = LINE_LIMIT,
        literal: int = LITERAL_LIMIT,
        idle_timeout: float = IDLE_TIMEOUT,
        connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.line = line
        self.literal = literal
        self.idle_timeout = idle_timeout
        self.connections = connections


class Closed(Exception):
    """The client went away (or must be sent away)."""


class LineSession:
    """One client connection of a line-based protocol, with the server's caps.

    Subclasses say what to answer to a line that is too long (``too_long``) and to a client
    that stays silent too long (``expired``, None: just close), and implement ``serve()``.
    """

    too_long = ""
    expired: str | None = None

    def __init__(
        self,
        state: SandboxState,
        store: MailStore,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        limits: MailboxLimits | None = None,
        on_close: Callable[[Any], None] | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.reader = reader
        self.writer = writer
        self.limits = limits or MailboxLimits()
        self.on_close = on_close
        self.sid = new_session_id().split("-")[0]
        self.user: str | None = None

    @property
    def client_ip(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) else "127.0.0.1"

    async def send(self, *lines: str | bytes) -> None:
        for line in lines:
            self.writer.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n")
        await self.writer.drain()

    async def readline(self, timeout: float | None = -1.0) -> bytes:
        """One line without its CRLF; ``timeout`` -1: the idle limit, None: none. Raises :class:`Closed`."""
        wait = self.limits.idle_timeout if timeout == -1.0 else timeout
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), wait)
        except asyncio.LimitOverrunError:
            await self.send(self.too_long)
            raise Closed from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Closed from None
        except TimeoutError:
            if self.expired is not None:
                await self.send(self.expired)
            raise Closed from None
        return line[:-2]

    async def serve(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        try:
            await self.serve()
        except (Closed, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.closed()
            if self.on_close is not None:
                self.on_close(self)
            with contextlib.suppress(Exception):
                self.writer.close()

    def closed(self) -> None:
        """Called once the connection ends (before ``on_close``)."""
