"""A small IMAP client for the round trip: sign in, find folders, find a message, read, delete.

Built on ``imaplib`` (implicit TLS, port 993, as Gmail serves IMAP) with what the round trip
needs on top:

* every read bounded by an overall :class:`~.bounded_io.Deadline`, a per-read timeout and size
  caps (a line, a literal, a whole reply, the number of lines of a reply), so a slow or hostile
  server cannot hang ``gmail_check`` or make it allocate without limit;
* a transcript with the sign-in redacted (``LOGIN`` and ``AUTHENTICATE`` arguments and
  continuations never reach it);
* special-use folders (RFC 6154: ``\\All``, ``\\Junk``, ``\\Trash``) found by their flags, with
  names decoded from modified UTF-7 (Gmail's Japanese Spam is ``[Gmail]/迷惑メール``);
* XOAUTH2 with the same access token as SMTP, IDLE (RFC 2177) where offered, and a delete
  that works on Gmail (move to Trash, then expunge only that message there).
"""

from __future__ import annotations

import base64
import imaplib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _

from .bounded_io import BoundedReader, ReplyTooLarge
from .causes import CATALOGUE, Cause, Reply
from .exceptions import MailboxError
from .mailbox_session import MailboxSession, Refusals, explain_refusal, library_text
from .mutf7 import decode_mutf7, encode_mutf7
from .redaction import REDACTED
from .transcript import CLIENT, INFO, SERVER
from .xoauth2 import parse_challenge, xoauth2_response

__all__ = [
    "ImapClient",
    "ImapFolder",
    "decode_mutf7",
    "encode_mutf7",
    "explain_imap_reply",
    "parse_list_line",
    "quote",
]

MAX_LINE = 64 * 1024
"""Longest response line accepted (``imaplib`` allows 1,000,000 bytes)."""
MAX_LITERAL = 1024 * 1024
"""Largest literal accepted: the round trip fetches only headers (Gmail allows 500 KB of them)."""
MAX_REPLY = 8 * 1024 * 1024
"""Bytes of one reply (every line and literal up to the tagged completion)."""
MAX_LINES = 20000
"""Lines of one reply: enough for LIST on an account with Gmail's maximum of 10,000 labels."""

SPECIAL_USE = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash", "\\Important")


def quote(text: str) -> str:
    """An IMAP quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- LIST -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImapFolder:
    """One mailbox from LIST: its wire name (modified UTF-7), its name for people, its flags."""

    wire: str
    name: str
    flags: frozenset[str] = field(default_factory=frozenset)
    delimiter: str = ""

    @property
    def selectable(self) -> bool:
        return not ({"\\noselect", "\\nonexistent"} & {flag.lower() for flag in self.flags})

    def has(self, flag: str) -> bool:
        return flag.lower() in {f.lower() for f in self.flags}

    @property
    def role(self) -> str:
        """``inbox``, ``all``, ``junk``, ``trash``, ``sent``... (from the special-use flag) or ``""``."""
        if self.wire.upper() == "INBOX":
            return "inbox"
        for flag in SPECIAL_USE:
            if self.has(flag):
                return flag[1:].lower()
        return ""


_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delimiter>"(?:[^"\\]|\\.)*"|NIL) ?(?P<name>.*)$', re.DOTALL)


def _unquote(value: bytes) -> str:
    text = value.decode("utf-8", "replace")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def parse_list_line(item: bytes | tuple[bytes, bytes]) -> ImapFolder | None:
    """One LIST response (a line, or a line ending in a literal and the literal) as a folder."""
    literal: bytes | None = None
    if isinstance(item, tuple):
        line, literal = item
    else:
        line = item
    match = _LIST_LINE.match(line)
    if match is None:
        return None
    flags = frozenset(match["flags"].decode("ascii", "replace").split())
    delimiter = "" if match["delimiter"] == b"NIL" else _unquote(match["delimiter"])
    wire = literal.decode("utf-8", "replace") if literal is not None else _unquote(match["name"].strip())
    if not wire:
        return None
    return ImapFolder(wire=wire, name=decode_mutf7(wire), flags=flags, delimiter=delimiter)


# -- what a refusal means ---------------------------------------------------------------------


IMAP_REFUSALS: Refusals = (
    Reply("imap_disabled", words=("not enabled for imap", "imap access is disabled", "imap is disabled")),
    Reply("imap_app_password_required", words=("application-specific password required",)),
    Reply("imap_web_login_required", words=("web browser", "weblogin")),
    Reply("imap_unavailable", words=("too many simultaneous connections", "[unavailable]", "[limit]")),
)
"""What Gmail's words in a ``NO`` to LOGIN or AUTHENTICATE mean."""


def explain_imap_reply(text: str) -> Cause:
    """The cause of a refused IMAP sign-in, from the server's ``NO`` text (Gmail's words)."""
    return explain_refusal(text, IMAP_REFUSALS)


# -- the client -------------------------------------------------------------------------------


class _IMAP(imaplib.IMAP4_SSL):
    """``imaplib.IMAP4_SSL`` reading through a :class:`BoundedReader` and keeping a redacted transcript."""

    def __init__(self, owner: ImapClient, host: str, port: int) -> None:
        self.owner = owner  # before imaplib's constructor, which connects through open()
        super().__init__(host, port, timeout=owner.timeout)

    def open(self, host: str = "", port: int | None = None, timeout: float | None = None) -> None:
        self.host, self.port = host, port or 993
        self.sock, reader = self.owner.open_tls(
            host, self.port, max_line=MAX_LINE, max_reply=MAX_REPLY, max_lines=MAX_LINES
        )
        self.file = reader  # type: ignore[assignment]  # stands in for sock.makefile("rb")

    @property
    def reader(self) -> BoundedReader:
        reader = self.file
        assert isinstance(reader, BoundedReader)
        return reader

    def readline(self) -> bytes:
        line = self.reader.readline()
        self.owner.heard(line)
        return line

    def read(self, size: int) -> bytes:
        if size > MAX_LITERAL:
            raise ReplyTooLarge(f"the server announced a literal of {size} bytes (the limit is {MAX_LITERAL})")
        data = self.reader.read(size)
        self.owner.transcript.add(SERVER, f"<{len(data)} bytes>")
        return data

    def send(self, data: Any) -> None:
        data = bytes(data)
        self.owner.said(data)
        self.reader.new_reply()
        self.sock.sendall(data)


@dataclass
class FetchedMessage:
    """What the round trip reads of a found message."""

    uid: int
    header: bytes = field(repr=False)
    internaldate: float | None = None
    """The server's arrival time (epoch seconds), when it said."""


class ImapClient(MailboxSession[_IMAP]):
    """One IMAP conversation over implicit TLS, bounded by ``deadline``.

    Failures raise :class:`~.exceptions.MailboxError` carrying a cause and the ``stage``
    (``connect``, ``tls``, ``greeting``, ``auth``, ``list``, ``select``, ``search``, ``fetch``,
    ``delete``, ``idle``); ``OSError`` subclasses (timeouts, TLS) pass through with ``stage`` set.
    """

    protocol = "IMAP"
    protocol_cause = "imap_protocol"
    library_errors = (imaplib.IMAP4.error,)
    refusals = IMAP_REFUSALS

    capabilities: frozenset[str] = frozenset()
    challenge: dict[str, Any] | None = None
    """The JSON of a refused XOAUTH2 token's error challenge."""
    selected = ""
    _secret_exchange = False
    _idle_number = 0

    # -- the transcript --
    def said(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            return
        words = text.split(" ")
        if len(words) >= 2 and words[1].upper() in ("LOGIN", "AUTHENTICATE"):
            self._secret_exchange = True
            keep = 3 if words[1].upper() == "AUTHENTICATE" else 2
            text = " ".join(words[:keep] + ([REDACTED] if len(words) > keep else []))
        elif self._secret_exchange:
            text = REDACTED
        self.record(CLIENT, text)

    def heard(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if self._secret_exchange and not text.startswith(("*", "+")):
            self._secret_exchange = False  # the tagged end of the sign-in
        self.record(SERVER, text)

    # -- steps --
    def connect(self) -> str:
        """TCP, TLS (verified with ``ssl_cafile``, as for SMTP) and the greeting; returns it."""
        try:
            client = _IMAP(self, self.config.imap_host, self.config.imap_port)
        except BaseException as exc:  # an imaplib error here: a greeting that is not IMAP's
            raise self.fail(exc) from None
        self.connection = client
        self.greeting = client.welcome.decode("utf-8", "replace")
        self.capabilities = frozenset(str(c).upper() for c in client.capabilities)
        return self.greeting

    def _refresh_capabilities(self) -> None:
        client = self.open_connection()
        typ, data = client.capability()
        if typ == "OK" and data and data[-1]:
            self.capabilities = frozenset(data[-1].decode("ascii", "replace").upper().split())

    def login(self) -> str:
        """Sign in with the configuration's credentials: LOGIN, or AUTHENTICATE XOAUTH2 for OAuth2."""
        text = super().login()
        self._refresh_capabilities()  # servers announce more once signed in (MOVE, UIDPLUS, IDLE)
        return text

    def refusal(self, exc: BaseException) -> str | None:
        if isinstance(exc, imaplib.IMAP4.error) and not isinstance(exc, imaplib.IMAP4.abort):
            return library_text(exc)
        return None

    def password(self, client: _IMAP) -> str:
        self.mechanism = "LOGIN"
        typ, data = client.login(self.config.username, self.config.password)
        return _join(data[-1:]) or typ

    def xoauth2(self, client: _IMAP) -> str:
        self.mechanism = "XOAUTH2"
        force = False
        while True:
            token, cached = self.token(force)
            initial = base64.b64decode(xoauth2_response(self.config.username, token))
            self.challenge = None

            def answer(challenge: bytes, initial: bytes = initial) -> bytes:
                if not challenge:
                    return initial
                self.challenge = parse_challenge(base64.b64encode(challenge)) or {}
                return b""  # XOAUTH2: an empty line answers the error challenge

            try:
                typ, data = client.authenticate("XOAUTH2", answer)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                # A cached token may have been revoked since: refresh it once.
                if force or not cached or explain_imap_reply(library_text(exc)).id != "imap_bad_credentials":
                    raise
                self.transcript.add(INFO, _("The access token was refused: refreshing it and signing in again."))
                force = True
                continue
            return _join(data[-1:]) or typ

    def folders(self) -> list[ImapFolder]:
        """Every folder (LIST "" "*"), flags included."""
        self.stage = "list"
        client = self.open_connection()
        try:
            typ, data = client.list('""', '"*"')
        except BaseException as exc:
            raise self.fail(exc) from None
        if typ != "OK":
            raise MailboxError(_join(data), cause=CATALOGUE["imap_no_folder"], stage="list", reply=_join(data))
        found: list[ImapFolder] = []
        for item in data:
            if item is None:
                continue
            folder = parse_list_line(item)
            if folder is not None:
                found.append(folder)
        return found

    def select(self, folder: ImapFolder, *, readonly: bool = True) -> int:
        """EXAMINE (or SELECT when writing) ``folder``; returns its message count."""
        self.stage = "select"
        client = self.open_connection()
        try:
            typ, data = client.select(quote(folder.wire), readonly=readonly)
        except BaseException as exc:
            raise self.fail(exc) from None
        if typ != "OK":
            reply = _join(data)
            raise MailboxError(
                _("%(folder)s could not be opened: %(reply)s") % {"folder": folder.name, "reply": reply},
                cause=CATALOGUE["imap_no_folder"],
                stage="select",
                reply=reply,
            )
        self.selected = folder.wire
        try:
            return int(data[0] or 0)
        except (TypeError, ValueError):
            return 0

    def _uid(self, command: str, *args: str) -> list[Any]:
        client = self.open_connection()
        try:
            typ, data = client.uid(command, *args)
        except BaseException as exc:
            raise self.fail(exc) from None
        if typ != "OK":
            reply = _join(data)
            raise MailboxError(
                _("The server refused UID %(command)s: %(reply)s") % {"command": command, "reply": reply},
                cause=CATALOGUE["imap_protocol"],
                stage=self.stage,
                reply=reply,
            )
        return list(data)

    def search_message_id(self, message_id: str) -> list[int]:
        """UIDs of the messages in the selected folder whose Message-ID header is ``message_id``."""
        self.stage = "search"
        data = self._uid("SEARCH", "HEADER", "Message-ID", quote(message_id))
        return _numbers(data)

    def fetch(self, uid: int) -> FetchedMessage:
        """The header and the arrival time (INTERNALDATE) of message ``uid``, without marking it read."""
        self.stage = "fetch"
        data = self._uid("FETCH", str(uid), "(INTERNALDATE BODY.PEEK[HEADER])")
        header = b""
        internaldate: float | None = None
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes) and not header:
                header = item[1]
            if isinstance(line, bytes) and b"INTERNALDATE" in line:
                stamp = imaplib.Internaldate2tuple(line)
                if stamp is not None:
                    internaldate = time.mktime(stamp)
        if not header:
            raise MailboxError(
                _("The server returned no header for message %(uid)s.") % {"uid": uid},
                cause=CATALOGUE["imap_protocol"],
                stage="fetch",
            )
        return FetchedMessage(uid=uid, header=header, internaldate=internaldate)

    def delete(self, folder: ImapFolder, uids: Sequence[int], message_id: str, trash: ImapFolder | None) -> str:
        """Delete the test message for good, the way Gmail needs it.

        On Gmail, expunging from INBOX only removes a label (the message stays in All Mail):
        the message is moved to Trash (``\\Trash``) first and expunged there. Only the message's
        own UIDs are expunged (``UID EXPUNGE``); without UIDPLUS, a plain EXPUNGE runs only when no
        other message of the folder is marked deleted. Returns what was done, for people.
        """
        self.stage = "delete"
        self.select(folder, readonly=False)
        self.stage = "delete"
        if trash is not None and trash.wire != folder.wire:
            uid_set = ",".join(str(uid) for uid in uids)
            if "MOVE" in self.capabilities:
                self._uid("MOVE", uid_set, quote(trash.wire))
            else:
                self._uid("COPY", uid_set, quote(trash.wire))
                self._expunge(uids)
            self.select(trash, readonly=False)
            self.stage = "delete"
            in_trash = self.search_message_id(message_id)
            self.stage = "delete"
            if not in_trash:
                return _("moved to %(trash)s (the server expunged it there itself)") % {"trash": trash.name}
            done = self._expunge(in_trash)
            return (
                _("moved to %(trash)s and expunged there") % {"trash": trash.name}
                if done
                else _("moved to %(trash)s and marked deleted there") % {"trash": trash.name}
            )
        done = self._expunge(uids)
        return (
            _("expunged from %(folder)s") % {"folder": folder.name}
            if done
            else _("marked deleted in %(folder)s") % {"folder": folder.name}
        )

    def _expunge(self, uids: Iterable[int]) -> bool:
        """Mark ``uids`` deleted and expunge exactly them; False when that could not be done safely."""
        uid_list = [str(uid) for uid in uids]
        if not uid_list:
            return True
        uid_set = ",".join(uid_list)
        self._uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self.capabilities:
            self._uid("EXPUNGE", uid_set)
            return True
        others = set(_numbers(self._uid("SEARCH", "DELETED"))) - {int(uid) for uid in uid_list}
        if others:  # a plain EXPUNGE would also remove messages the user marked deleted
            return False
        client = self.open_connection()
        try:
            typ, _data = client.expunge()
        except BaseException as exc:
            raise self.fail(exc) from None
        return typ == "OK"

    @property
    def offers_idle(self) -> bool:
        return "IDLE" in self.capabilities

    def idle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` in IDLE (RFC 2177) on the selected folder; True when the server
        announced a new message (``EXISTS``). Ends IDLE with ``DONE`` before returning."""
        self.stage = "idle"
        client = self.open_connection()
        self._idle_number += 1
        tag = f"IDLE{self._idle_number}"
        try:
            client.send(f"{tag} IDLE\r\n".encode("ascii"))
            first = client.readline()
            if not first.startswith(b"+"):
                return False  # refused (tagged NO/BAD): the caller polls instead
            arrived = False
            reader = client.reader
            reader.timeout, saved = max(0.05, seconds), reader.timeout
            ends = time.monotonic() + seconds
            try:
                while time.monotonic() < ends and self.deadline.remaining() > 0:
                    reader.timeout = max(0.05, ends - time.monotonic())
                    try:
                        line = client.readline()
                    except TimeoutError:
                        break
                    if not line:
                        raise MailboxError(
                            _("The server closed the connection during IDLE."),
                            cause=CATALOGUE["imap_protocol"],
                            stage="idle",
                        )
                    if re.match(rb"\* \d+ EXISTS", line):
                        arrived = True
                        break
            finally:
                reader.timeout = saved
            client.send(b"DONE\r\n")
            while True:
                line = client.readline()
                if not line:
                    raise MailboxError(
                        _("The server closed the connection after IDLE."),
                        cause=CATALOGUE["imap_protocol"],
                        stage="idle",
                    )
                if line.startswith(tag.encode("ascii") + b" "):
                    return arrived
        except MailboxError:
            raise
        except BaseException as exc:
            raise self.fail(exc) from None

    def noop(self) -> None:
        client = self.open_connection()
        try:
            client.noop()
        except BaseException as exc:
            raise self.fail(exc) from None

    def say_goodbye(self, client: _IMAP) -> str:
        """LOGOUT; returns the server's BYE text."""
        _typ, data = client.logout()
        return _join(data)


def _join(data: Sequence[Any] | None) -> str:
    parts = []
    for item in data or ():
        if isinstance(item, bytes):
            parts.append(item.decode("utf-8", "replace"))
        elif isinstance(item, tuple):
            parts.append(item[0].decode("utf-8", "replace") if isinstance(item[0], bytes) else str(item[0]))
    return " ".join(parts)


def _numbers(data: Sequence[Any]) -> list[int]:
    found: list[int] = []
    for item in data:
        if isinstance(item, bytes):
            found += [int(word) for word in item.split() if word.isdigit()]
    return found
