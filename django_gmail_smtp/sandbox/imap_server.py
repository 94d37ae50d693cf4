"""The sandbox's IMAP server: implicit TLS, Gmail's folders, replies and failures, on asyncio.

Enough IMAP4rev1 (RFC 3501) for mail clients' round trips and tests: ``LOGIN``, ``AUTHENTICATE``
(XOAUTH2 with the sandbox's OAuth2 tokens, and PLAIN), ``LIST`` with special-use flags (RFC 6154),
``SELECT``/``EXAMINE``, ``SEARCH`` (``HEADER``, ``SUBJECT``, ``FROM``, ``TO``, ``DELETED``...),
``FETCH`` (flags, ``INTERNALDATE``, size, ``BODY[]``/``BODY[HEADER]`` with ``PEEK``), ``STORE``,
``EXPUNGE``, ``COPY``, ``MOVE`` (RFC 6851), ``UID`` forms with ``UID EXPUNGE`` (RFC 4315) and
``IDLE`` (RFC 2177). The mailbox behaves like Gmail's (:mod:`.mailstore`).

Bounded like a server facing the internet: command lines and literals have size caps, a
connection that says nothing for ``idle_timeout`` seconds is closed, and the number of
connections is capped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..mutf7 import decode_mutf7, encode_mutf7
from .imap_syntax import (
    LITERAL_AT_END,
    BadCommand,
    argument,
    as_text,
    internaldate,
    parse_set,
    quoted,
    tokenize,
)
from .line_session import Closed, LineSession, MailboxLimits
from .mailstore import Folder, MailStore, StoredMessage
from .state import XOAUTH2_CHALLENGE, SandboxState

log = logging.getLogger("django_gmail_smtp.sandbox")

__all__ = ["IMAP_EXTENSIONS", "ImapSession", "MailboxLimits"]

#: Optional extensions the server offers (the others are always on); leave some out to test clients.
IMAP_EXTENSIONS = ("IDLE", "MOVE", "UIDPLUS")

DISABLED_REPLY = (
    "[ALERT] Your account is not enabled for IMAP use. Please visit your Gmail settings page and "
    "enable your account for IMAP access. (Failure)"
)
BAD_CREDENTIALS_REPLY = "[AUTHENTICATIONFAILED] Invalid credentials (Failure)"

_SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "\\Seen")


# -- one connection ---------------------------------------------------------------------------


class ImapSession(LineSession):
    """One client connection, answered the way imap.gmail.com answers."""

    too_long = "* BAD [TOOBIG] Command line too long (Failure)"
    expired = "* BYE Session expired, please login again."

    def __init__(
        self,
        state: SandboxState,
        store: MailStore,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        extensions: Iterable[str] = IMAP_EXTENSIONS,
        limits: MailboxLimits | None = None,
        on_close: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(state, store, reader, writer, limits=limits, on_close=on_close)
        self.extensions = {e.upper() for e in extensions}
        self.folder: Folder | None = None
        self.readonly = False
        self.view: list[int] = []
        self.changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:  # the store may change from another thread (a test filing mail)
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self.changed.set)

        self._stop_listening = store.listen(wake)

    def closed(self) -> None:
        self._stop_listening()

    async def read_command(self) -> tuple[str, list[bytes]]:
        """One command (literals cut out, see :func:`tokenize`)."""
        parts: list[bytes] = []
        literals: list[bytes] = []
        while True:
            line = await self.readline()
            found = LITERAL_AT_END.search(line)
            if found is None:
                parts.append(line)
                break
            size = int(found[1])
            if size > self.limits.literal or sum(map(len, parts)) + len(line) > self.limits.line:
                await self.send("* BAD [TOOBIG] Literal too large (Failure)")
                raise Closed
            if not found[2]:
                await self.send("+ go ahead")
            try:
                literal = await asyncio.wait_for(self.reader.readexactly(size), self.limits.idle_timeout)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                raise Closed from None
            parts.append(line[: found.start()] + f"\x00{len(literals)}\x00".encode())
            literals.append(literal)
        return b"".join(parts).decode("utf-8", "replace"), literals

    # -- the loop --
    async def serve(self) -> None:
        await self.send(f"* OK Gimap ready for requests from {self.client_ip} {self.sid}")
        while True:
            text, literals = await self.read_command()
            if not await self.dispatch(text, literals):
                return

    async def dispatch(self, text: str, literals: list[bytes]) -> bool:
        """Run one command; False once the connection should close."""
        tag, _sep, rest = text.partition(" ")
        if not tag or not rest or not re.fullmatch(r"[A-Za-z0-9.\-_]+", tag):
            await self.send("* BAD Invalid tag (Failure)")
            return True
        name, _sep, arguments = rest.partition(" ")
        name = name.upper()
        uid = False
        if name == "UID":
            uid = True
            name, _sep, arguments = arguments.partition(" ")
            name = name.upper()
            if name not in ("FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE"):
                await self.send(f"{tag} BAD Unknown UID command {self.sid}")
                return True
        handler = getattr(self, f"cmd_{name.lower()}", None) if re.fullmatch(r"[A-Z]+", name) else None
        if handler is None:
            await self.send(f"{tag} BAD Unknown command {self.sid}")
            return True
        try:
            args = tokenize(arguments, literals)
            if name in ("FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE"):
                return bool(await handler(tag, args, uid=uid))
            return bool(await handler(tag, args))
        except BadCommand as error:
            await self.send(f"{tag} BAD Could not parse command: {error} {self.sid}")
            return True

    # -- state checks --
    async def _need(self, tag: str, *, selected: bool = False, writable: bool = False) -> bool:
        if self.user is None:
            await self.send(f"{tag} BAD Command not allowed in the not-authenticated state {self.sid}")
            return False
        if selected and self.folder is None:
            await self.send(f"{tag} BAD Command not allowed in the authenticated state {self.sid}")
            return False
        if writable and self.readonly:
            await self.send(f"{tag} NO [READ-ONLY] The mailbox was opened with EXAMINE (Failure)")
            return False
        return True

    def capabilities(self) -> str:
        words = ["IMAP4rev1", "UNSELECT", "NAMESPACE", "ID", "CHILDREN", "SPECIAL-USE", "LITERAL+"]
        words += sorted(self.extensions & set(IMAP_EXTENSIONS))
        if self.user is None:
            words += ["SASL-IR", "AUTH=XOAUTH2", "AUTH=PLAIN"]
        return " ".join(words)

    async def sync(self) -> None:
        """Tell the client what changed in the selected folder since it last looked."""
        if self.folder is None or self.user is None:
            return
        current = self.store.uids(self.user, self.folder.name)
        present = set(current)
        for position in range(len(self.view), 0, -1):
            if self.view[position - 1] not in present:
                del self.view[position - 1]
                await self.send(f"* {position} EXPUNGE")
        known = set(self.view)
        new = [uid for uid in current if uid not in known]
        if new:
            self.view.extend(new)
            await self.send(f"* {len(self.view)} EXISTS")

    # -- any state --
    async def cmd_capability(self, tag: str, args: list[Any]) -> bool:
        await self.send(f"* CAPABILITY {self.capabilities()}", f"{tag} OK Thats all she wrote! {self.sid}")
        return True

    async def cmd_noop(self, tag: str, args: list[Any]) -> bool:
        await self.sync()
        await self.send(f"{tag} OK Success")
        return True

    async def cmd_check(self, tag: str, args: list[Any]) -> bool:
        return await self.cmd_noop(tag, args)

    async def cmd_logout(self, tag: str, args: list[Any]) -> bool:
        await self.send("* BYE LOGOUT Requested", f"{tag} OK 73 good day (Success)")
        return False

    async def cmd_id(self, tag: str, args: list[Any]) -> bool:
        await self.send('* ID ("name" "GImap" "vendor" "Google, Inc." "support-url" "http://support.google.com/mail")')
        await self.send(f"{tag} OK Success")
        return True

    async def cmd_namespace(self, tag: str, args: list[Any]) -> bool:
        if not await self._need(tag):
            return True
        await self.send('* NAMESPACE (("" "/")) NIL NIL', f"{tag} OK Success")
        return True

    # -- sign-in --
    async def _signed_in(self, tag: str, user: str) -> None:
        self.user = user
        await self.send(f"* CAPABILITY {self.capabilities()}", f"{tag} OK {user} authenticated (Success)")

    async def _refused_by_injection(self, tag: str) -> bool:
        injection = self.state.injections.take(frozenset({"imap_disabled", "mailbox_bad_credentials"}))
        if injection is None:
            return False
        reply = DISABLED_REPLY if injection.kind == "imap_disabled" else BAD_CREDENTIALS_REPLY
        await self.send(f"{tag} NO {reply}")
        return True

    async def cmd_login(self, tag: str, args: list[Any]) -> bool:
        if self.user is not None:
            await self.send(f"{tag} BAD Already authenticated {self.sid}")
            return True
        login, password = as_text(argument(args, 0)), as_text(argument(args, 1))
        if await self._refused_by_injection(tag):
            return True
        user = self.state.check_login(login.encode(), password.encode())
        if user is None or not self.store.has(user):
            await self.send(f"{tag} NO {BAD_CREDENTIALS_REPLY}")
            return True
        await self._signed_in(tag, user)
        return True

    async def cmd_authenticate(self, tag: str, args: list[Any]) -> bool:
        if self.user is not None:
            await self.send(f"{tag} BAD Already authenticated {self.sid}")
            return True
        mechanism = as_text(argument(args, 0)).upper()
        if mechanism not in ("XOAUTH2", "PLAIN"):
            await self.send(f"{tag} NO [CANNOT] Unsupported authentication mechanism (Failure)")
            return True
        if len(args) > 1:
            answer = as_text(args[1])
        else:
            await self.send("+ ")
            answer = (await self.readline()).decode("ascii", "replace")
        if answer == "*":
            await self.send(f"{tag} BAD Authentication aborted {self.sid}")
            return True
        try:
            blob = base64.b64decode(answer, validate=True)
        except (binascii.Error, ValueError):
            await self.send(f"{tag} BAD Invalid SASL argument. {self.sid}")
            return True
        if await self._refused_by_injection(tag):
            return True
        user = self.state.sasl_user(mechanism, blob)
        if user is None and mechanism == "XOAUTH2":  # Gmail's error challenge, then NO after the empty answer
            await self.send(f"+ {XOAUTH2_CHALLENGE}")
            await self.readline()
        if user is None or not self.store.has(user):
            await self.send(f"{tag} NO {BAD_CREDENTIALS_REPLY}")
            return True
        await self._signed_in(tag, user)
        return True

    # -- folders --
    async def cmd_list(self, tag: str, args: list[Any]) -> bool:
        if not await self._need(tag):
            return True
        special_only = False
        if args and isinstance(args[0], list):
            special_only = "SPECIAL-USE" in [str(a).upper() for a in args[0]]
            args = args[1:]
        reference, pattern = as_text(argument(args, 0)), as_text(argument(args, 1))
        assert self.user is not None
        if pattern == "":
            await self.send('* LIST (\\Noselect) "/" ""', f"{tag} OK Success")
            return True
        wanted = re.compile(
            "".join(
                ".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in decode_mutf7(reference + pattern)
            ),
            re.IGNORECASE,
        )
        folders = self.store.folders(self.user)
        for folder in folders:
            if not wanted.fullmatch(folder.name) or (special_only and not folder.special_use):
                continue
            children = any(other.name.startswith(folder.name + "/") for other in folders)
            flags = ["\\HasChildren" if children else "\\HasNoChildren"]
            if not folder.selectable:
                flags.insert(0, "\\Noselect")
            if folder.special_use:
                flags.append(folder.special_use)
            await self.send(f'* LIST ({" ".join(flags)}) "/" {quoted(encode_mutf7(folder.name))}')
        await self.send(f"{tag} OK Success")
        return True

    async def _open(self, tag: str, args: list[Any], *, readonly: bool) -> bool:
        if not await self._need(tag):
            return True
        assert self.user is not None
        name = decode_mutf7(as_text(argument(args, 0)))
        folder = self.store.folder(self.user, name)
        self.folder, self.view = None, []
        if folder is None or not folder.selectable:
            await self.send(f"{tag} NO [NONEXISTENT] Unknown Mailbox: {name} (now in authenticated state) (Failure)")
            return True
        self.folder, self.readonly = folder, readonly
        self.view = self.store.uids(self.user, folder.name)
        flags = " ".join(_SYSTEM_FLAGS)
        await self.send(
            f"* FLAGS ({flags})",
            f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted.",
            f"* OK [UIDVALIDITY {self.store.uidvalidity}] UIDs valid.",
            f"* {len(self.view)} EXISTS",
            "* 0 RECENT",
            f"* OK [UIDNEXT {self.store.uidnext(self.user, folder.name)}] Predicted next UID.",
            f"{tag} OK [{'READ-ONLY' if readonly else 'READ-WRITE'}] {folder.name} selected. (Success)",
        )
        return True

    async def cmd_select(self, tag: str, args: list[Any]) -> bool:
        return await self._open(tag, args, readonly=False)

    async def cmd_examine(self, tag: str, args: list[Any]) -> bool:
        return await self._open(tag, args, readonly=True)

    async def cmd_unselect(self, tag: str, args: list[Any]) -> bool:
        if not await self._need(tag, selected=True):
            return True
        self.folder, self.view = None, []
        await self.send(f"{tag} OK Returned to authenticated state. (Success)")
        return True

    async def cmd_close(self, tag: str, args: list[Any]) -> bool:
        if not await self._need(tag, selected=True):
            return True
        assert self.user is not None
        assert self.folder is not None
        if not self.readonly:
            self.store.expunge(self.user, self.folder.name)
        self.folder, self.view = None, []
        await self.send(f"{tag} OK Returned to authenticated state. (Success)")
        return True

    # -- messages --
    def _targets(self, text: str, *, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) of the messages a set names, in order."""
        if uid:
            wanted = parse_set(text, self.view[-1] if self.view else 0)
            return [(i + 1, u) for i, u in enumerate(self.view) if u in wanted]
        wanted = parse_set(text, len(self.view))
        return [(i + 1, u) for i, u in enumerate(self.view) if i + 1 in wanted]

    def _message(self, uid: int) -> StoredMessage | None:
        assert self.user is not None
        assert self.folder is not None
        return self.store.get(self.user, self.folder.name, uid)

    def _flags(self, uid: int, message: StoredMessage) -> str:
        assert self.user is not None
        assert self.folder is not None
        flags = set(message.flags)
        if self.store.is_deleted(self.user, self.folder.name, uid):
            flags.add("\\Deleted")
        return "(" + " ".join(sorted(flags)) + ")"

    async def cmd_fetch(self, tag: str, args: list[Any], *, uid: bool) -> bool:
        if not await self._need(tag, selected=True):
            return True
        targets = self._targets(as_text(argument(args, 0)), uid=uid)
        items = argument(args, 1)
        items = [str(i) for i in items] if isinstance(items, list) else [str(items)]
        macros = {"FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"], "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]}
        wanted = [part for item in items for part in macros.get(item.upper(), [item])]
        if uid and "UID" not in [w.upper() for w in wanted]:
            wanted.insert(0, "UID")
        for number, message_uid in targets:
            message = self._message(message_uid)
            if message is None:
                continue
            pieces: list[bytes] = []
            for item in wanted:
                pieces.append(self._fetch_item(item, message_uid, message))
            self.writer.write(f"* {number} FETCH (".encode() + b" ".join(pieces) + b")\r\n")
        await self.writer.drain()
        if uid:
            await self.sync()
        await self.send(f"{tag} OK Success")
        return True

    def _fetch_item(self, item: str, uid: int, message: StoredMessage) -> bytes:
        key = item.upper()
        if key == "UID":
            return f"UID {uid}".encode()
        if key == "FLAGS":
            return f"FLAGS {self._flags(uid, message)}".encode()
        if key == "INTERNALDATE":
            return f"INTERNALDATE {internaldate(message.internaldate)}".encode()
        if key == "RFC822.SIZE":
            return f"RFC822.SIZE {len(message.data)}".encode()
        sections = {
            "BODY[]": ("BODY[]", message.data, True),
            "BODY.PEEK[]": ("BODY[]", message.data, False),
            "RFC822": ("RFC822", message.data, True),
            "BODY[HEADER]": ("BODY[HEADER]", message.header_bytes, True),
            "BODY.PEEK[HEADER]": ("BODY[HEADER]", message.header_bytes, False),
            "RFC822.HEADER": ("RFC822.HEADER", message.header_bytes, False),
        }
        if key not in sections:
            raise BadCommand(f"unsupported FETCH item {item}")
        label, data, seen = sections[key]
        if seen:
            message.flags.add("\\Seen")
        return f"{label} {{{len(data)}}}\r\n".encode() + data

    async def cmd_search(self, tag: str, args: list[Any], *, uid: bool) -> bool:
        if not await self._need(tag, selected=True):
            return True
        if args and str(args[0]).upper() == "CHARSET":
            args = args[2:]
        matches = [(n, u) for n, u in self._targets("1:*", uid=False) if self._matches(args, n, u)]
        found = " ".join(str(u if uid else n) for n, u in matches)
        await self.send(f"* SEARCH {found}".rstrip())
        if uid:
            await self.sync()
        await self.send(f"{tag} OK SEARCH completed (Success)")
        return True

    def _matches(self, criteria: list[Any], number: int, uid: int) -> bool:
        message = self._message(uid)
        if message is None:
            return False
        i = 0
        while i < len(criteria):
            key = criteria[i]
            if isinstance(key, list):
                if not self._matches(key, number, uid):
                    return False
                i += 1
                continue
            word = str(key).upper()
            if word in ("ALL",):
                i += 1
            elif word in ("DELETED", "UNDELETED"):
                assert self.user is not None
                assert self.folder is not None
                deleted = self.store.is_deleted(self.user, self.folder.name, uid)
                if deleted != (word == "DELETED"):
                    return False
                i += 1
            elif word in ("SEEN", "UNSEEN"):
                if ("\\Seen" in message.flags) != (word == "SEEN"):
                    return False
                i += 1
            elif word == "HEADER":
                name, value = as_text(argument(criteria, i + 1)), as_text(argument(criteria, i + 2)).lower()
                if not any(value in v.lower() for v in message.header(name)):
                    return False
                i += 3
            elif word in ("SUBJECT", "FROM", "TO"):
                value = as_text(argument(criteria, i + 1)).lower()
                if not any(value in v.lower() for v in message.header(word.title())):
                    return False
                i += 2
            elif word == "UID":
                if uid not in parse_set(as_text(argument(criteria, i + 1)), self.view[-1] if self.view else 0):
                    return False
                i += 2
            elif word == "NOT":
                if self._matches([argument(criteria, i + 1)], number, uid):
                    return False
                i += 2
            elif re.fullmatch(r"[0-9:*,]+", word):
                if number not in parse_set(word, len(self.view)):
                    return False
                i += 1
            else:
                raise BadCommand(f"unsupported search key {word}")
        return True

    async def cmd_store(self, tag: str, args: list[Any], *, uid: bool) -> bool:
        if not await self._need(tag, selected=True, writable=True):
            return True
        assert self.user is not None
        assert self.folder is not None
        targets = self._targets(as_text(argument(args, 0)), uid=uid)
        action = as_text(argument(args, 1)).upper()
        match = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", action)
        if match is None:
            raise BadCommand(f"bad STORE action {action}")
        value = argument(args, 2)
        flags = {str(f) for f in (value if isinstance(value, list) else [value])}
        self.store.set_flags(self.user, self.folder.name, [u for _n, u in targets], flags, match[1] or "=")
        if not match[2]:
            for number, message_uid in targets:
                message = self._message(message_uid)
                if message is not None:
                    extra = f"UID {message_uid} " if uid else ""
                    await self.send(f"* {number} FETCH ({extra}FLAGS {self._flags(message_uid, message)})")
        await self.send(f"{tag} OK Success")
        return True

    async def cmd_expunge(self, tag: str, args: list[Any], *, uid: bool) -> bool:
        if uid and "UIDPLUS" not in self.extensions:
            await self.send(f"{tag} BAD Unknown UID command {self.sid}")
            return True
        if not await self._need(tag, selected=True, writable=True):
            return True
        assert self.user is not None
        assert self.folder is not None
        chosen = [u for _n, u in self._targets(as_text(argument(args, 0)), uid=True)] if uid else None
        self.store.expunge(self.user, self.folder.name, chosen)
        await self.sync()
        await self.send(f"{tag} OK Success")
        return True

    async def _copy(self, tag: str, args: list[Any], *, uid: bool, move: bool) -> bool:
        if not await self._need(tag, selected=True, writable=move):
            return True
        assert self.user is not None
        assert self.folder is not None
        targets = self._targets(as_text(argument(args, 0)), uid=uid)
        name = decode_mutf7(as_text(argument(args, 1)))
        target = self.store.folder(self.user, name)
        if target is None or not target.selectable:
            await self.send(f"{tag} NO [TRYCREATE] Unknown Mailbox: {name} (Failure)")
            return True
        pairs = self.store.copy(self.user, self.folder.name, [u for _n, u in targets], target.name, move=move)
        code = ""
        if pairs and "UIDPLUS" in self.extensions:
            sources = ",".join(str(s) for s, _t in pairs)
            copies = ",".join(str(t) for _s, t in pairs)
            code = f"[COPYUID {self.store.uidvalidity} {sources} {copies}] "
        if move:
            if code:
                await self.send(f"* OK {code}(Success)")
            await self.sync()
            await self.send(f"{tag} OK Success")
        else:
            await self.send(f"{tag} OK {code}(Success)")
        return True

    async def cmd_copy(self, tag: str, args: list[Any], *, uid: bool) -> bool:
        return await self._copy(tag, args, uid=uid, move=False)

    async def cmd_move(self, tag: str, args: list[Any], *, uid: bool) -> bool:
        if "MOVE" not in self.extensions:
            await self.send(f"{tag} BAD Unknown command {self.sid}")
            return True
        return await self._copy(tag, args, uid=uid, move=True)

    async def cmd_idle(self, tag: str, args: list[Any]) -> bool:
        if "IDLE" not in self.extensions:
            await self.send(f"{tag} BAD Unknown command {self.sid}")
            return True
        if not await self._need(tag):
            return True
        await self.send("+ idling")
        ends = time.monotonic() + self.limits.idle_timeout
        done = asyncio.ensure_future(self.readline(None))
        try:
            while True:
                self.changed.clear()
                await self.sync()
                left = ends - time.monotonic()
                if left <= 0:
                    await self.send("* BYE Session expired, please login again.")
                    return False
                change = asyncio.ensure_future(self.changed.wait())
                finished, _pending = await asyncio.wait(
                    {done, change}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                change.cancel()
                if done in finished:
                    line = done.result()
                    if line.upper() != b"DONE":
                        await self.send(f"{tag} BAD Expected DONE {self.sid}")
                        return True
                    await self.send(f"{tag} OK IDLE terminated (Success)")
                    return True
        finally:
            if not done.done():
                done.cancel()
                with contextlib.suppress(BaseException):
                    await done
