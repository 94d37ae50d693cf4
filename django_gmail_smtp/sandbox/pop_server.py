"""The sandbox's POP3 server (RFC 1939, implicit TLS): Gmail's replies and its POP habits.

``USER``/``PASS`` and ``AUTH XOAUTH2``, ``STAT``, ``LIST``, ``UIDL``, ``TOP``, ``RETR``, ``DELE``,
``RSET``, ``NOOP``, ``CAPA``, ``QUIT``. Like Gmail's POP: the maildrop is the inbox, each message
is shown until one session downloaded it (``RETR``) and ended with QUIT, and ``DELE`` moves the
message to Trash at QUIT (Gmail's "delete Gmail's copy" setting). Same caps as the IMAP server.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from .line_session import LineSession
from .mailstore import StoredMessage
from .state import XOAUTH2_CHALLENGE

__all__ = ["PopSession"]

DISABLED_REPLY = (
    "-ERR [SYS/PERM] Your account is not enabled for POP access. Please visit your Gmail settings "
    "page and enable your account for POP access."
)
BAD_CREDENTIALS_REPLY = "-ERR [AUTH] Username and password not accepted."


class PopSession(LineSession):
    """One POP3 client connection, answered the way pop.gmail.com answers."""

    too_long = "-ERR Line too long."

    login: str | None = None
    maildrop: list[StoredMessage]
    deleted: set[int]
    downloaded: set[int]

    async def serve(self) -> None:
        self.maildrop, self.deleted, self.downloaded = [], set(), set()
        await self.send(f"+OK Gpop ready for requests from {self.client_ip} {self.sid}")
        while True:
            line = (await self.readline()).decode("utf-8", "replace")
            command, _sep, argument = line.partition(" ")
            handler = getattr(self, f"cmd_{command.lower()}", None) if command.isalpha() else None
            if handler is None:
                await self.send("-ERR bad command")
                continue
            if not await handler(argument.strip()):
                return

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
        user = self.state.sasl_user(mechanism.upper(), blob)
        if user is None and mechanism.upper() == "XOAUTH2":  # Gmail's error challenge first
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

    async def _listing(self, argument: str, heading: str, line: Callable[[int, StoredMessage], str]) -> bool:
        """LIST and UIDL: one message (``argument``) or all of them, one ``line`` each."""
        if not await self._need_user():
            return True
        if argument:
            found = self._message(argument)
            await self.send(f"+OK {line(*found)}" if found else "-ERR no such message")
            return True
        await self.send(heading, *[line(n, m) for n, m in self._live()], ".")
        return True

    async def cmd_list(self, argument: str) -> bool:
        return await self._listing(argument, f"+OK {len(self._live())} messages", lambda n, m: f"{n} {len(m.data)}")

    async def cmd_uidl(self, argument: str) -> bool:
        return await self._listing(argument, "+OK", lambda n, m: f"{n} GmailId{m.number:x}")

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
