"""The sandbox's POP3 server (RFC 1939, implicit TLS): Gmail's replies and its POP habits.

``USER``/``PASS`` and ``AUTH XOAUTH2``, ``STAT``, ``LIST``, ``UIDL``, ``TOP``, ``RETR``, ``DELE``,
``RSET``, ``NOOP``, ``CAPA``, ``QUIT``. Like Gmail's POP: the maildrop is the inbox, each message
is shown until one session downloaded it (``RETR``) and ended with QUIT, and ``DELE`` moves the
message to Trash at QUIT (Gmail's "delete Gmail's copy" setting). Same caps as the IMAP server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Callable

from .imap_server import MailboxLimits
from .mailstore import MailStore, StoredMessage
from .protocol import XOAUTH2_CHALLENGE, SandboxState, new_session_id

__all__ = ["PopSession"]

DISABLED_REPLY = (
    "-ERR [SYS/PERM] Your account is not enabled for POP access. Please visit your Gmail settings "
    "page and enable your account for POP access."
)
BAD_CREDENTIALS_REPLY = "-ERR [AUTH] Username and password not accepted."


class _Closed(Exception):
    pass


class PopSession:
    """One POP3 client connection, answered the way pop.gmail.com answers."""

    def __init__(
        self,
        state: SandboxState,
        store: MailStore,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        limits: MailboxLimits | None = None,
        on_close: Callable[[PopSession], None] | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.reader = reader
        self.writer = writer
        self.limits = limits or MailboxLimits()
        self.on_close = on_close
        self.sid = new_session_id().split("-")[0]
        self.login: str | None = None
        self.user: str | None = None
        self.maildrop: list[StoredMessage] = []
        self.deleted: set[int] = set()
        self.downloaded: set[int] = set()

    async def send(self, *lines: str | bytes) -> None:
        for line in lines:
            self.writer.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n")
        await self.writer.drain()

    async def readline(self) -> bytes:
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), self.limits.idle_timeout)
        except asyncio.LimitOverrunError:
            await self.send("-ERR Line too long.")
            raise _Closed from None
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            raise _Closed from None
        return line[:-2]

    async def run(self) -> None:
        try:
            peer = self.writer.get_extra_info("peername")
            client = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
            await self.send(f"+OK Gpop ready for requests from {client} {self.sid}")
            while True:
                line = (await self.readline()).decode("utf-8", "replace")
                command, _sep, argument = line.partition(" ")
                handler = getattr(self, f"cmd_{command.lower()}", None) if command.isalpha() else None
                if handler is None:
                    await self.send("-ERR bad command")
                    continue
                if not await handler(argument.strip()):
                    return
        except (_Closed, ConnectionError):
            return
        finally:
            if self.on_close is not None:
                self.on_close(self)
            with contextlib.suppress(Exception):
                self.writer.close()

    # -- sign-in --
    async def cmd_capa(self, argument: str) -> bool:
        lines = ["+OK Capability list follows", "USER", "RESP-CODES", "EXPIRE 0", "LOGIN-DELAY 300", "TOP", "UIDL"]
        if self.user is None:
            lines.append("SASL PLAIN XOAUTH2")
        await self.send(*lines, ".")
        return True

    async def cmd_user(self, argument: str) -> bool:
        if self.user is not None:
            await self.send("-ERR Already authenticated.")
            return True
        self.login = argument
        await self.send("+OK send PASS")
        return True

    async def _refused(self) -> bool:
        injection = self.state.injections.take(frozenset({"pop_disabled", "mailbox_bad_credentials"}))
        if injection is None:
            return False
        await self.send(DISABLED_REPLY if injection.kind == "pop_disabled" else BAD_CREDENTIALS_REPLY)
        return True

    async def _signed_in(self, user: str) -> None:
        self.user = user
        self.maildrop = self.store.pop_maildrop(user)
        await self.send("+OK Welcome.")

    async def cmd_pass(self, argument: str) -> bool:
        if self.user is not None or self.login is None:
            await self.send("-ERR USER first.")
            return True
        if await self._refused():
            return True
        user = self.state.check_login(self.login.encode(), argument.encode())
        if user is None or not self.store.has(user):
            await self.send(BAD_CREDENTIALS_REPLY)
            return True
        await self._signed_in(user)
        return True

    async def cmd_auth(self, argument: str) -> bool:
        if self.user is not None:
            await self.send("-ERR Already authenticated.")
            return True
        mechanism, _sep, initial = argument.partition(" ")
        if mechanism.upper() not in ("XOAUTH2", "PLAIN"):
            await self.send("-ERR Unsupported mechanism.")
            return True
        if not initial:
            await self.send("+ ")
            initial = (await self.readline()).decode("ascii", "replace")
        try:
            blob = base64.b64decode(initial, validate=True)
        except (binascii.Error, ValueError):
            await self.send("-ERR [AUTH] Invalid SASL argument.")
            return True
        if await self._refused():
            return True
        if mechanism.upper() == "PLAIN":
            parts = blob.split(b"\0")
            user = self.state.check_login(parts[1], parts[2]) if len(parts) == 3 else None
        else:
            fields = dict(p.split("=", 1) for p in blob.decode("utf-8", "replace").split("\x01") if "=" in p)
            bearer = fields.get("auth", "")
            token = bearer[7:] if bearer[:7].lower() == "bearer " else ""
            claimed = fields.get("user", "")
            user = self.state.check_token(claimed, token)[0] if claimed and token else None
            if user is None:
                await self.send(f"+ {XOAUTH2_CHALLENGE}")
                await self.readline()
        if user is None or not self.store.has(user):
            await self.send(BAD_CREDENTIALS_REPLY)
            return True
        await self._signed_in(user)
        return True

    # -- the maildrop --
    def _message(self, argument: str) -> tuple[int, StoredMessage] | None:
        if not argument.isdigit():
            return None
        number = int(argument)
        if not 1 <= number <= len(self.maildrop) or number in self.deleted:
            return None
        return number, self.maildrop[number - 1]

    async def _need_user(self) -> bool:
        if self.user is None:
            await self.send("-ERR Not authenticated.")
            return False
        return True

    def _live(self) -> list[tuple[int, StoredMessage]]:
        return [(n, m) for n, m in enumerate(self.maildrop, start=1) if n not in self.deleted]

    async def cmd_stat(self, argument: str) -> bool:
        if await self._need_user():
            live = self._live()
            await self.send(f"+OK {len(live)} {sum(len(m.data) for _n, m in live)}")
        return True

    async def cmd_list(self, argument: str) -> bool:
        if not await self._need_user():
            return True
        if argument:
            found = self._message(argument)
            await self.send(f"+OK {found[0]} {len(found[1].data)}" if found else "-ERR no such message")
            return True
        await self.send(f"+OK {len(self._live())} messages", *[f"{n} {len(m.data)}" for n, m in self._live()], ".")
        return True

    async def cmd_uidl(self, argument: str) -> bool:
        if not await self._need_user():
            return True
        if argument:
            found = self._message(argument)
            await self.send(f"+OK {found[0]} GmailId{found[1].number:x}" if found else "-ERR no such message")
            return True
        await self.send("+OK", *[f"{n} GmailId{m.number:x}" for n, m in self._live()], ".")
        return True

    async def _content(self, data: bytes) -> None:
        lines = data.split(b"\r\n")
        if lines and lines[-1] == b"":
            lines.pop()
        await self.send(*[b"." + line if line.startswith(b".") else line for line in lines], ".")

    async def cmd_retr(self, argument: str) -> bool:
        if not await self._need_user():
            return True
        found = self._message(argument)
        if found is None:
            await self.send("-ERR no such message")
            return True
        self.downloaded.add(found[0])
        await self.send(f"+OK message follows ({len(found[1].data)} octets)")
        await self._content(found[1].data)
        return True

    async def cmd_top(self, argument: str) -> bool:
        if not await self._need_user():
            return True
        number, _sep, count = argument.partition(" ")
        found = self._message(number)
        if found is None or not count.strip().isdigit():
            await self.send("-ERR no such message")
            return True
        message = found[1]
        header = message.header_bytes
        body_lines = message.data[len(header) :].split(b"\r\n")[: int(count)]
        await self.send("+OK message follows")
        await self._content(header + b"\r\n".join(body_lines) + (b"\r\n" if body_lines else b""))
        return True

    async def cmd_dele(self, argument: str) -> bool:
        if not await self._need_user():
            return True
        found = self._message(argument)
        if found is None:
            await self.send("-ERR no such message")
            return True
        self.deleted.add(found[0])
        await self.send("+OK marked for deletion")
        return True

    async def cmd_rset(self, argument: str) -> bool:
        if await self._need_user():
            self.deleted.clear()
            await self.send("+OK")
        return True

    async def cmd_noop(self, argument: str) -> bool:
        await self.send("+OK")
        return True

    async def cmd_quit(self, argument: str) -> bool:
        if self.user is not None:
            self.store.pop_commit(
                self.user,
                [self.maildrop[n - 1] for n in self.downloaded],
                [self.maildrop[n - 1] for n in self.deleted],
            )
        await self.send(f"+OK Farewell. {self.sid}")
        return False
