"""One SMTP conversation with the sandbox: aiosmtpd's ``SMTP``, taught to talk like Gmail.

aiosmtpd gives us the connection handling, STARTTLS and the AUTH exchanges; everything Gmail
says is ours: the replies of ``replies.py``, CHUNKING (``BDAT``), SMTPUTF8, the size and
recipient limits and the failures a test can inject.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import functools
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from . import replies
from .constants import DEFAULT_IDLE_SECONDS
from .injections import AUTH_KINDS, MAIL_KINDS, Injection
from .received import ReceivedMessage
from .state import XOAUTH2_CHALLENGE, AuthRecord, SandboxState, new_session_id, parse_xoauth2

log = logging.getLogger("django_gmail_smtp.sandbox")

COMMAND_LINE_LIMIT = 1000
"""Longest command line accepted, CRLF excluded (longer: ``555 5.5.2 ... line too long``)."""

STREAM_BUFFER_LIMIT = 2**16
"""aiosmtpd sizes its stream buffer by ``line_length_limit``; a larger one reads DATA faster."""

_AUTH_REPLIES: dict[str, Callable[[str], str]] = {
    "bad_credentials": replies.bad_credentials,
    "app_password_required": replies.app_password_required,
    "web_login_required": replies.web_login_required,
    "too_many_logins": replies.too_many_logins,
}
_MAIL_REPLIES: dict[str, Callable[[str], str]] = {
    "throttled": replies.throttled,
    "temporary": replies.temporary,
    "daily_quota": replies.daily_quota,
}
# Replies aiosmtpd sends from code we do not override, and what Gmail says instead.
_AIOSMTPD_REPLIES: dict[str, Callable[[str], str]] = {
    "220 Ready to start TLS": lambda sid: replies.ready_to_start_tls(),
    "500 Error: bad syntax": replies.syntax_error,
    "500 Command line too long": replies.line_too_long,
    "501 5.5.2 Can't decode base64": replies.cannot_decode,
    "501 5.5.2 Can't split auth value": replies.cannot_decode,
    "501 Syntax: STARTTLS": replies.syntax_error,
}
_PATH = re.compile(r"<(?P<angle>[^<>]*)>(?:\s+(?P<params>.*))?|(?P<bare>[^<>\s]+)(?:\s+(?P<rest>.*))?")
_BDAT = re.compile(r"(\d{1,12})(?:\s+(LAST))?", re.IGNORECASE)


def parse_path(arg: str | None, keyword: str) -> tuple[str, list[str]] | None:
    """Split ``FROM:<addr> PARAMS`` / ``TO:<addr> PARAMS``; None if it does not parse."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    match = _PATH.fullmatch(arg[len(keyword) :].strip())
    if match is None:
        return None
    if match["bare"] is not None:
        return match["bare"], (match["rest"] or "").split()
    return match["angle"].strip(), (match["params"] or "").split()


def valid_address(address: str, smtputf8: bool) -> bool:
    """Loose RFC 5321 mailbox check; non-ASCII only with SMTPUTF8."""
    local, at, domain = address.rpartition("@")
    if not (at and local and domain):
        return False
    if any(char.isspace() or not char.isprintable() for char in address):
        return False
    if not smtputf8 and not address.isascii():
        return False
    return not (".." in domain or domain.startswith(".") or domain.endswith("."))


class _Dispatch(dict[str, Any]):
    """aiosmtpd's command table, routed through :meth:`GmailSMTP.dispatch` (unknown ones too)."""

    def __init__(self, connection: GmailSMTP, methods: dict[str, Any]) -> None:
        super().__init__(methods)
        self._connection = connection

    def get(self, command: str, default: Any = None) -> Any:
        return functools.partial(self._connection.dispatch, command, super().get(command))


class _NoHooks:
    """aiosmtpd wants a handler; every decision is made in :class:`GmailSMTP`."""


class GmailSMTP(SMTP):
    """One client connection, answered the way smtp.gmail.com answers."""

    line_length_limit = STREAM_BUFFER_LIMIT
    command_size_limit = COMMAND_LINE_LIMIT
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(
        self,
        state: SandboxState,
        *,
        port: int,
        implicit_tls: bool,
        tls_context: ssl.SSLContext | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.sandbox = state
        self.sid = new_session_id()
        self.listener_port = port
        self.implicit_tls = implicit_tls
        self.signed_in_user: str | None = None
        self.accepted = 0
        self._hangup: Injection | None = None
        self._auth_failure: Injection | None = None
        self._idle_injection: Injection | None = None
        self._silent = False
        self._bdat_chunks: list[bytes] | None = None
        self._bdat_size = 0
        super().__init__(
            _NoHooks(),
            data_size_limit=state.size_limit,
            enable_SMTPUTF8=True,
            hostname=state.server_name,
            ident=f"ESMTP {self.sid} - gsmtp",
            tls_context=tls_context,
            timeout=DEFAULT_IDLE_SECONDS,
            auth_require_tls=state.require_tls_for_auth,
            loop=loop,
        )
        # aiosmtpd keeps this table on the class and grows it on EHLO: keep ours per connection.
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LINE_LIMIT)
        self._smtp_methods = _Dispatch(self, self._smtp_methods)

    # -- connection life ------------------------------------------------------------------

    @property
    def sess(self) -> Session:
        """The current aiosmtpd session (set once connected)."""
        if self.session is None:
            raise AttributeError("not connected yet")
        return self.session

    @property
    def env(self) -> Envelope:
        """The current mail transaction (set once connected)."""
        if self.envelope is None:
            raise AttributeError("not connected yet")
        return self.envelope

    @property
    def is_tls(self) -> bool:
        """True once the conversation is encrypted (implicit TLS or after STARTTLS)."""
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def _can_starttls(self) -> bool:
        return self.sandbox.offer_starttls and self.tls_context is not None and not self.is_tls

    @property
    def _auth_allowed(self) -> bool:
        return self.is_tls or not self.sandbox.require_tls_for_auth

    @property
    def _client_ip(self) -> str:
        peer = self.sess.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else "127.0.0.1"

    def _tls_info(self) -> dict[str, str | None]:
        """The TLS version and cipher of this connection (None without TLS)."""
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport is not None else None
        if ssl_object is None:
            return {"tls_version": None, "cipher": None}
        cipher = ssl_object.cipher()
        return {"tls_version": ssl_object.version(), "cipher": cipher[0] if cipher else None}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None and self._original_transport is None
        super().connection_made(transport)  # after STARTTLS: a new, unauthenticated session
        self.signed_in_user = None
        if first:
            self.sandbox.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.sandbox.closed(self)
        super().connection_lost(error)

    def abort(self) -> None:
        """Drop the connection at once, without a reply (like a server that goes away)."""
        for transport in (self._original_transport, self.transport):
            if transport is not None:
                cast(asyncio.Transport, transport).abort()

    def _hang_up(self) -> None:
        """Close after the reply just pushed (as after QUIT)."""
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        if self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        if self.sandbox.injections.take("no_greeting"):
            self._silent = True
            await self.loop.create_future()  # wait, mute, until the connection goes away
        await super()._handle_client()

    def _reset_timeout(self, duration: float | None = None) -> None:
        if duration is None:
            self._idle_injection = self.sandbox.injections.peek("idle_timeout")
            if self._idle_injection is not None:
                duration = float(self._idle_injection.params["seconds"])
        super()._reset_timeout(duration)

    def rearm_idle_timer(self) -> None:
        """Apply a newly injected (or removed) ``idle_timeout`` to this open connection."""
        if self.transport is not None and self._timeout_handle is not None:
            self._reset_timeout()

    def _timeout_cb(self) -> None:
        if self.transport is None:
            return
        injection = self._idle_injection
        if injection is not None and not self.sandbox.injections.fire(injection):
            self._reset_timeout()  # used up on another connection meanwhile
            return
        if not self._silent:
            self._writer.write(replies.idle_timeout(self.sid).encode() + b"\r\n")
        self.transport.close()

    async def push(self, status: str | bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if isinstance(status, str):
            translate = _AIOSMTPD_REPLIES.get(status)
            if translate is not None:
                status = translate(self.sid)
            status = status.encode("utf-8", "surrogateescape")
        await super().push(status)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            log.debug("TLS handshake after STARTTLS failed", exc_info=error)
        else:
            log.error("Gmail sandbox: unexpected error in an SMTP session", exc_info=error)
        return replies.local_error(self.sid)

    async def dispatch(
        self, command: str, method: Callable[[str | None], Awaitable[None]] | None, arg: str | None
    ) -> None:
        """Run one command; first hang up if ``disconnect_after`` says so."""
        if self.transport is None or self.transport.is_closing():
            # Hung up: commands a pipelining client already sent must not be acted on
            # (a real server delivers nothing whose 250 it cannot send).
            return
        if self._hangup is not None:
            hangup, self._hangup = self._hangup, None
            if self.sandbox.injections.fire(hangup):
                self.abort()
                return
        if method is None:
            await self.push(replies.unrecognized(self.sid))
            return
        await method(arg)

    # -- greeting and session -------------------------------------------------------------

    async def _helo_refused(self, hostname: str | None) -> bool:
        if not hostname:
            await self.push(replies.empty_helo(self.sid))
        elif not (hostname.isascii() and hostname.isprintable()):
            await self.push(replies.invalid_helo(self.sid, argument=hostname))
        else:
            return False
        self._hang_up()
        return True

    async def smtp_EHLO(self, hostname: str | None) -> None:
        if await self._helo_refused(hostname):
            return
        self._set_rset_state()
        self.sess.extended_smtp = True
        self.sess.host_name = hostname
        extensions = [f"SIZE {self.sandbox.size_limit}", "8BITMIME"]
        if self._can_starttls:
            extensions.append("STARTTLS")
        if self._auth_allowed:
            extensions.append("AUTH LOGIN PLAIN XOAUTH2")
        extensions += ["ENHANCEDSTATUSCODES", "PIPELINING", "CHUNKING", "SMTPUTF8"]
        await self.push(replies.ehlo(self.sandbox.server_name, self._client_ip, extensions))

    async def smtp_HELO(self, hostname: str | None) -> None:
        if await self._helo_refused(hostname):
            return
        self._set_rset_state()
        self.sess.extended_smtp = False
        self.sess.host_name = hostname
        await self.push(replies.helo(server_name=self.sandbox.server_name))

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if not self._can_starttls:
            await self.push(replies.unrecognized(self.sid))
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_NOOP(self, arg: str | None) -> None:
        await self.push(replies.noop(self.sid))

    async def smtp_QUIT(self, arg: str | None) -> None:
        await self.push(replies.closing(self.sid))
        self._hang_up()

    async def smtp_RSET(self, arg: str | None) -> None:
        self._set_rset_state()
        await self.push(replies.flushed(self.sid))

    async def smtp_HELP(self, arg: str | None) -> None:
        await self.push(replies.help_text(self.sid))

    async def smtp_VRFY(self, arg: str | None) -> None:
        await self.push(replies.vrfy(self.sid))

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self.push(replies.unimplemented(self.sid))

    # -- sign-in --------------------------------------------------------------------------

    async def smtp_AUTH(self, arg: str | None) -> None:
        self.sandbox.count_auth()
        if not self.sess.host_name:
            await self.push(replies.bad_sequence(self.sid, text="EHLO/HELO first."))
            return
        if not self._auth_allowed:
            await self.push(replies.must_starttls(self.sid))
            return
        if self.signed_in_user is not None:
            await self.push(replies.bad_sequence(self.sid, text="Already authenticated."))
            return
        if self.env.mail_from is not None:
            await self.push(replies.bad_sequence(self.sid, text="Bad sequence of commands."))
            return
        args = (arg or "").split()
        if not args or len(args) > 2 or args[0].upper() not in ("LOGIN", "PLAIN", "XOAUTH2"):
            await self.push(replies.unrecognized_auth_type(self.sid))
            return
        args[0] = args[0].upper()
        if args[0] == "XOAUTH2":
            await self._auth_xoauth2(args, len(f"AUTH {arg}"))
            return
        result = await self._auth_methods[args[0]].method(self, args)
        credentials = result.auth_data if isinstance(result, AuthResult) else None
        if not isinstance(credentials, LoginPassword):
            return  # the exchange was aborted and aiosmtpd already replied
        # An injected sign-in failure sticks to its connection, as Gmail's verdicts do:
        # smtplib's login() tries PLAIN, then LOGIN, and both must fail alike.
        injection = self._auth_failure = self._auth_failure or self.sandbox.injections.take(AUTH_KINDS)
        login = credentials.login.decode("utf-8", "replace")
        record = functools.partial(AuthRecord, args[0], len(args) == 2, len(f"AUTH {arg}"), login)
        if injection is not None:
            self.sandbox.record_auth(record(False, injection.kind))
            await self.push(_AUTH_REPLIES[injection.kind](self.sid))
            return
        user = self.sandbox.check_login(credentials.login, credentials.password)
        self.sandbox.record_auth(record(user is not None, "" if user else "wrong username or password"))
        if user is None:
            await self.push(replies.bad_credentials(self.sid))
            return
        self.signed_in_user = user
        self.sess.authenticated = True
        await self.push(replies.accepted())

    async def _auth_xoauth2(self, args: list[str], command_length: int) -> None:
        """Google's XOAUTH2: the token on the AUTH line or after an empty ``334``; a bad token
        gets the base64 JSON challenge, then (after the client's empty line) ``535 5.7.8``."""
        initial = len(args) == 2
        if initial:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await self.push(replies.cannot_decode(self.sid))
                return
        else:
            answer = await self.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return  # aborted with '*' or not base64: aiosmtpd already replied
            blob = answer
        claimed, token = parse_xoauth2(blob)
        injection = self._auth_failure = self._auth_failure or self.sandbox.injections.take(AUTH_KINDS)
        if injection is not None:
            self.sandbox.record_auth(AuthRecord("XOAUTH2", initial, command_length, claimed, False, injection.kind))
            await self.push(_AUTH_REPLIES[injection.kind](self.sid))
            return
        user, reason = self.sandbox.check_token(claimed, token) if claimed and token else (None, "malformed")
        self.sandbox.record_auth(
            AuthRecord("XOAUTH2", initial, command_length, claimed or None, user is not None, reason)
        )
        if user is None:
            await self.push(f"334 {XOAUTH2_CHALLENGE}")
            try:
                await self._reader.readline()  # the client's answer to the challenge: an empty line
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            await self.push(replies.bad_credentials(self.sid))
            return
        self.signed_in_user = user
        self.sess.authenticated = True
        await self.push(replies.accepted())

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # aiosmtpd's LOGIN/PLAIN exchanges end here; smtp_AUTH decides, after injections.
        return AuthResult(success=True, handled=False, auth_data=auth_data)

    # -- mail transaction -----------------------------------------------------------------

    def _set_post_data_state(self) -> None:
        self.envelope = Envelope()
        self._bdat_chunks = None
        self._bdat_size = 0

    def _set_rset_state(self) -> None:
        self._set_post_data_state()

    def _refusal(self, *, need_mail: bool = False, need_rcpt: bool = False) -> str | None:
        """Gmail's reply when a transaction command comes too early; None if it may go on."""
        if not self.sess.host_name:
            return replies.bad_sequence(self.sid, text="EHLO/HELO first.")
        if self.sandbox.offer_starttls and not self.is_tls:
            return replies.must_starttls(self.sid)
        if self.signed_in_user is None:
            return replies.auth_required(self.sid)
        if need_mail and self.env.mail_from is None:
            return replies.bad_sequence(self.sid, text="MAIL first.")
        if need_rcpt and not self.env.rcpt_tos:
            return replies.bad_sequence(self.sid, text="RCPT first.")
        return None

    async def smtp_MAIL(self, arg: str | None) -> None:
        refusal = self._refusal()
        if refusal is None and self.env.mail_from is not None:
            refusal = replies.bad_sequence(self.sid, text="Nested MAIL command.")
        if refusal is not None:
            await self.push(refusal)
            return
        parsed = parse_path(arg, "FROM:")
        if parsed is None:
            await self.push(replies.syntax_error(self.sid))
            return
        address, params = parsed
        options: dict[str, str | None] = {}
        for param in params:
            key, eq, given = param.partition("=")
            options[key.upper()] = given if eq else None
        for key, value in options.items():
            valid = (
                (key == "SIZE" and value is not None and value.isdigit())
                or (key == "BODY" and (value or "").upper() in ("7BIT", "8BITMIME"))
                or (key == "SMTPUTF8" and value is None)
            )
            if not valid:
                await self.push(replies.unsupported_option(self.sid, option=key))
                return
        smtputf8 = "SMTPUTF8" in options
        if address and not valid_address(address, smtputf8):
            await self.push(replies.bad_sender(self.sid, address=address))
            return
        injection = self.sandbox.injections.take(MAIL_KINDS)
        if injection is not None:
            await self.push(_MAIL_REPLIES[injection.kind](self.sid))
            if injection.kind == "throttled":
                self._hang_up()
            return
        declared = int(options["SIZE"] or 0) if "SIZE" in options else None
        if self.sandbox.injections.take(
            "too_large",
            when=lambda i: i.params.get("at", "mail" if declared is not None else None) == "mail",
        ) or (declared is not None and declared > self.sandbox.size_limit):
            await self.push(replies.too_large(self.sid))
            return
        self.env.mail_from = address
        self.env.smtp_utf8 = smtputf8
        self.env.mail_options.extend(params)
        await self.push(replies.mail_ok(self.sid))

    async def smtp_RCPT(self, arg: str | None) -> None:
        refusal = self._refusal(need_mail=True)
        if refusal is not None:
            await self.push(refusal)
            return
        parsed = parse_path(arg, "TO:")
        if parsed is None:
            await self.push(replies.syntax_error(self.sid))
            return
        address, params = parsed
        if params:
            await self.push(replies.unsupported_option(self.sid, option=params[0].partition("=")[0]))
            return
        if not valid_address(address, self.env.smtp_utf8) or self.sandbox.injections.take(
            "bad_recipient",
            when=lambda i: i.params.get("address") is None or str(i.params["address"]).lower() == address.lower(),
        ):
            await self.push(replies.bad_recipient(self.sid, address=address))
            return
        if len(self.env.rcpt_tos) >= self.sandbox.max_recipients or (
            self.sandbox.injections.take("too_many_recipients")
        ):
            await self.push(replies.too_many_recipients(self.sid))
            return
        self.env.rcpt_tos.append(address)
        await self.push(replies.rcpt_ok(self.sid))

    async def smtp_DATA(self, arg: str | None) -> None:
        refusal = self._refusal(need_mail=True, need_rcpt=True)
        if refusal is None and self._bdat_chunks is not None:
            refusal = replies.bad_sequence(self.sid, text="DATA cannot follow BDAT; send RSET.")
        if refusal is None and arg:
            refusal = replies.syntax_error(self.sid)
        if refusal is not None:
            await self.push(refusal)
            return
        await self.push(replies.go_ahead(self.sid))
        received = await self._read_dot_terminated()
        if received is not None:
            await self._end_of_data(*received, via_bdat=False)

    async def _read_dot_terminated(self) -> tuple[bytes | None, int] | None:
        """Read DATA up to ``CRLF.CRLF``: (content or None if over the limit, size); None on EOF."""
        limit = self.sandbox.size_limit
        parts: list[bytes] = []
        size = 0
        at_line_start = True
        while True:
            try:
                piece = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as error:  # a very long line: take what is there
                piece = await self._reader.read(error.consumed)
            except asyncio.IncompleteReadError:
                return None
            if at_line_start:
                if piece == b".\r\n":
                    break
                if piece.startswith(b"."):
                    piece = piece[1:]
            at_line_start = piece.endswith(b"\r\n")
            size += len(piece)
            if size <= limit:
                parts.append(piece)
        return (b"".join(parts) if size <= limit else None), size

    async def smtp_BDAT(self, arg: str | None) -> None:
        match = _BDAT.fullmatch((arg or "").strip())
        if match is None:
            await self.push(replies.bdat_syntax(self.sid))
            return
        size, last = int(match[1]), match[2] is not None
        refusal = self._refusal(need_mail=True, need_rcpt=True)
        too_big = refusal is None and self._bdat_size + size > self.sandbox.size_limit
        chunk = await self._read_chunk(size, keep=refusal is None and not too_big)
        if chunk is None:
            return  # the client went away mid-chunk
        if refusal is not None:
            await self.push(refusal)
            return
        if too_big:
            self._set_post_data_state()
            await self.push(replies.too_large(self.sid))
            return
        if self._bdat_chunks is None:
            self._bdat_chunks = []
        self._bdat_chunks.append(chunk)
        self._bdat_size += size
        if last:
            await self._end_of_data(b"".join(self._bdat_chunks), self._bdat_size, via_bdat=True)
        else:
            await self.push(replies.chunk_ok(size=size))

    async def _read_chunk(self, size: int, *, keep: bool) -> bytes | None:
        """Read exactly ``size`` bytes (discarded unless ``keep``); None on EOF."""
        try:
            if keep:
                data: bytes = await self._reader.readexactly(size)
                return data
            while size:
                size -= len(await self._reader.readexactly(min(size, STREAM_BUFFER_LIMIT)))
        except asyncio.IncompleteReadError:
            return None
        return b""

    async def _end_of_data(self, data: bytes | None, size: int, *, via_bdat: bool) -> None:
        envelope = self.env
        self._set_post_data_state()
        too_large = self.sandbox.injections.take("too_large", when=lambda i: i.params.get("at") in (None, "data"))
        if data is None or size > self.sandbox.size_limit or too_large:
            await self.push(replies.too_large(self.sid))
            return
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            auth_user=self.signed_in_user,
            tls=self.is_tls,
            port=self.listener_port,
            smtputf8=bool(envelope.smtp_utf8),
            via_bdat=via_bdat,
            helo=self.sess.host_name or "",
            peer=self._client_ip,
            session_id=self.sid,
            **self._tls_info(),
        )
        try:
            self.sandbox.deliver(message)
        except Exception:
            log.exception("Gmail sandbox: could not store a received message")
            await self.push(replies.local_error(self.sid))
            return
        self.accepted += 1
        self._hangup = self.sandbox.injections.peek(
            "disconnect_after", when=lambda i: self.accepted >= i.params["messages"]
        )
        await self.push(replies.message_ok(self.sid, epoch=int(time.time())))
