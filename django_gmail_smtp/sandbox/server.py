"""The Gmail sandbox: a Gmail-like SMTP server on loopback, with real TLS, in a thread.

::

    with GmailSandbox() as sb:
        ...  # send to sb.host:sb.starttls_port (STARTTLS) or sb.ssl_port (implicit TLS),
        ...  # trusting sb.ca_file, signing in as SANDBOX_USER / SANDBOX_PASSWORD
        assert sb.wait_for_messages(1)[0].rcpt_tos == ["to@example.com"]

Mail to a sandbox account lands in its mailbox (:attr:`GmailSandbox.mailbox`), which the
sandbox serves over IMAP (``sb.imap_port``) and POP3 (``sb.pop_port``), implicit TLS both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import json
import logging
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import trustme

from .constants import (
    DEFAULT_SERVER_NAME,
    GMAIL_MAX_RECIPIENTS,
    GMAIL_SIZE_LIMIT,
    SANDBOX_CA_ORGANIZATION,
    SANDBOX_PASSWORD,
    SANDBOX_USER,
)
from .imap_server import IMAP_EXTENSIONS, ImapSession, MailboxLimits
from .inbox import delivered_copy
from .injections import Injection, validate
from .loopback import loopback_host
from .mailstore import INBOX, SENT, SPAM, MailStore
from .oauth_server import OAuthServer
from .pop_server import PopSession
from .protocol import GmailSMTP
from .received import ReceivedMessage
from .state import AuthRecord, SandboxState

log = logging.getLogger("django_gmail_smtp.sandbox")

_STOP_TIMEOUT = 5.0


class PortInUseError(OSError):
    """A port the sandbox was asked to listen on is taken."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"Port {port} on {host} is already in use.")
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.host, self.port)


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Clients failing the TLS handshake or vanishing are routine here: keep them off stderr."""
    error = context.get("exception")
    routine = error is None or isinstance(error, ssl.SSLError | ConnectionError | TimeoutError)
    log.log(
        logging.DEBUG if routine else logging.ERROR,
        "Gmail sandbox event loop: %s",
        context.get("message"),
        exc_info=error,
    )


class GmailSandbox:
    """A Gmail-like SMTP server: a STARTTLS port and an implicit-TLS port on loopback, and the
    accounts' mailboxes over IMAP and POP3 (implicit TLS).

    ``aliases``: each account's verified "Send mail as" addresses (any other From is rewritten
    to the account in its mailbox copy). ``mailbox_language``: the names of Gmail's folders
    (``"en"``, or ``"ja"`` for ``[Gmail]/迷惑メール``...). ``imap_extensions``: the optional IMAP
    extensions offered (IDLE, MOVE, UIDPLUS). ``mailbox_limits``: the IMAP/POP3 servers' caps.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        starttls_port: int = 0,
        ssl_port: int = 0,
        *,
        imap_port: int = 0,
        pop_port: int = 0,
        aliases: Mapping[str, Sequence[str]] | None = None,
        mailbox_language: str = "en",
        imap_extensions: Collection[str] = IMAP_EXTENSIONS,
        mailbox_limits: MailboxLimits | None = None,
        users: Mapping[str, str] | None = None,
        server_name: str = DEFAULT_SERVER_NAME,
        cert_hostnames: tuple[str, ...] = ("localhost", "127.0.0.1"),
        state_dir: str | Path | None = None,
        keep_files: bool = False,
        offer_starttls: bool = True,
        require_tls_for_auth: bool = True,
        size_limit: int = GMAIL_SIZE_LIMIT,
        max_recipients: int = GMAIL_MAX_RECIPIENTS,
        on_message: Callable[[ReceivedMessage], None] | None = None,
        oauth: OAuthServer | None = None,
    ) -> None:
        self.host = loopback_host(host)
        self.starttls_port = starttls_port
        self.ssl_port = ssl_port
        self.users: dict[str, str] = dict(users if users is not None else {SANDBOX_USER: SANDBOX_PASSWORD})
        if not self.users:
            raise ValueError("The Gmail sandbox needs at least one user.")
        self.server_name = server_name
        self.cert_hostnames = tuple(cert_hostnames)
        self.keep_files = keep_files
        self.on_message = on_message
        self.imap_port = imap_port
        self.pop_port = pop_port
        self.aliases = {user.lower(): tuple(found) for user, found in (aliases or {}).items()}
        self.imap_extensions = tuple(imap_extensions)
        self.mailbox_limits = mailbox_limits or MailboxLimits()
        self.mailbox = MailStore(self.users, language=mailbox_language)
        """The accounts' mailboxes (what IMAP and POP3 show)."""
        self._mailbox_sessions: set[ImapSession | PopSession] = set()
        self.mailbox_connections = 0
        """IMAP and POP3 connections accepted since the start or the last :meth:`reset`."""
        self._requested_ports = (starttls_port, ssl_port)
        self._requested_dir = Path(state_dir) if state_dir is not None else None
        self._temp_dir: Path | None = None
        self.state_dir: Path | None = None
        self.ca_file = ""
        self._state = SandboxState(
            users=self.users,
            server_name=server_name,
            size_limit=size_limit,
            max_recipients=max_recipients,
            offer_starttls=offer_starttls,
            require_tls_for_auth=require_tls_for_auth,
            deliver=self._deliver,
        )
        self.oauth: OAuthServer | None = None
        if oauth is not None:
            self.attach_oauth(oauth)
        self._messages: list[ReceivedMessage] = []
        self._arrived = threading.Condition()
        self._file_number = 0
        self._lifecycle = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<GmailSandbox {state} {self.host} starttls={self.starttls_port} ssl={self.ssl_port} "
            f"imap={self.imap_port} pop3={self.pop_port}>"
        )

    # -- start and stop -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> GmailSandbox:
        """Listen on both ports; returns once both accept connections."""
        with self._lifecycle:
            if self._thread is not None:
                return self
            tls_context = self._prepare_files()
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_quiet_exception_handler)
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            thread = threading.Thread(
                target=self._run, args=(loop, tls_context, ready), name="gmail-sandbox", daemon=True
            )
            thread.start()
            try:
                ready.result(timeout=30)
            except BaseException:
                thread.join(_STOP_TIMEOUT)
                self._remove_temp_dir()
                raise
            self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Close every connection and both listeners; stop the thread. Safe to call twice."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("GmailSandbox.stop() cannot be called from the sandbox's own thread.")
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_STOP_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(_STOP_TIMEOUT)
                self._loop = self._thread = None
                self._remove_temp_dir()

    def __enter__(self) -> GmailSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare_files(self) -> ssl.SSLContext:
        if self._requested_dir is not None:
            self.state_dir = self._requested_dir.resolve()
            self.state_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._temp_dir = self.state_dir = Path(tempfile.mkdtemp(prefix="gmail-sandbox-"))
        if self.keep_files:
            messages = self.state_dir / "messages"
            messages.mkdir(exist_ok=True)
            numbers = [int(p.stem) for p in messages.glob("*.eml") if p.stem.isdigit()]
            self._file_number = max(numbers, default=0)
        ca = trustme.CA(organization_name=SANDBOX_CA_ORGANIZATION)
        certificate = ca.issue_cert(*self.cert_hostnames, organization_name="Gmail sandbox")
        ca_path = self.state_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        self.ca_file = str(ca_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        return context

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        tls_context: ssl.SSLContext,
        ready: concurrent.futures.Future[None],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                self._servers = loop.run_until_complete(self._listen(loop, tls_context))
            except BaseException as error:
                ready.set_exception(error)
                return
            ready.set_result(None)
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            asyncio.set_event_loop(None)

    async def _listen(self, loop: asyncio.AbstractEventLoop, tls_context: ssl.SSLContext) -> list[asyncio.Server]:
        servers: list[asyncio.Server] = []

        def protocol(implicit_tls: bool) -> GmailSMTP:
            return GmailSMTP(
                self._state,
                port=self.ssl_port if implicit_tls else self.starttls_port,
                implicit_tls=implicit_tls,
                tls_context=None if implicit_tls else tls_context,
                loop=loop,
            )

        try:
            for implicit_tls, port in zip((False, True), self._requested_ports, strict=True):
                try:
                    server = await loop.create_server(
                        functools.partial(protocol, implicit_tls),
                        self.host,
                        port,
                        ssl=tls_context if implicit_tls else None,
                        reuse_address=True,
                    )
                except OSError as error:
                    if error.errno == errno.EADDRINUSE:
                        raise PortInUseError(self.host, port) from error
                    raise
                servers.append(server)
                bound = server.sockets[0].getsockname()[1]
                if implicit_tls:
                    self.ssl_port = bound
                else:
                    self.starttls_port = bound
            servers += await self._listen_mailboxes(tls_context)
        except BaseException:
            for server in servers:
                server.close()
            raise
        return servers

    async def _listen_mailboxes(self, tls_context: ssl.SSLContext) -> list[asyncio.Server]:
        """The IMAP and POP3 servers (implicit TLS, like imap.gmail.com:993 and pop.gmail.com:995)."""
        servers: list[asyncio.Server] = []
        limits = self.mailbox_limits

        def handler(kind: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                self.mailbox_connections += 1
                if len(self._mailbox_sessions) >= limits.connections:
                    writer.write(
                        b"* BYE [UNAVAILABLE] Too many simultaneous connections. (Failure)\r\n"
                        if kind == "imap"
                        else b"-ERR [SYS/TEMP] Too many simultaneous connections.\r\n"
                    )
                    writer.close()
                    return
                session: ImapSession | PopSession
                if kind == "imap":
                    session = ImapSession(
                        self._state,
                        self.mailbox,
                        reader,
                        writer,
                        extensions=self.imap_extensions,
                        limits=limits,
                        on_close=self._mailbox_sessions.discard,
                    )
                else:
                    session = PopSession(
                        self._state,
                        self.mailbox,
                        reader,
                        writer,
                        limits=limits,
                        on_close=self._mailbox_sessions.discard,
                    )
                self._mailbox_sessions.add(session)
                try:
                    await session.run()
                except Exception:
                    log.exception("Gmail sandbox: unexpected error in a %s session", kind)
                    writer.close()

            return serve

        for kind, port in (("imap", self.imap_port), ("pop3", self.pop_port)):
            try:
                server = await asyncio.start_server(
                    handler(kind), self.host, port, ssl=tls_context, limit=limits.line + 2, reuse_address=True
                )
            except OSError as error:
                for started in servers:
                    started.close()
                if error.errno == errno.EADDRINUSE:
                    raise PortInUseError(self.host, port) from error
                raise
            servers.append(server)
            bound = server.sockets[0].getsockname()[1]
            if kind == "imap":
                self.imap_port = bound
            else:
                self.pop_port = bound
        return servers

    async def _shutdown(self) -> None:
        # Stop accepting first and let accepted sockets become transports: closing a server
        # while asyncio still sets one up leaks that socket (and logs an AssertionError).
        loop = asyncio.get_running_loop()
        for server in self._servers:
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        for _ in range(3):
            await asyncio.sleep(0)
        for server in self._servers:
            server.close()
        self._abort_connections()
        # Connections still in their TLS handshake have no SMTP protocol yet: abort them too.
        for transport in list(getattr(loop, "_transports", {}).values()):
            if transport is not None and not transport.is_closing():
                transport.abort()
        for _ in range(3):
            await asyncio.sleep(0)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    def _abort_connections(self) -> None:
        for connection in self._state.live():
            connection.abort()
        for session in list(self._mailbox_sessions):
            transport = session.writer.transport
            if transport is not None and not transport.is_closing():
                transport.abort()

    def _call_in_loop(self, function: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.current_thread() is self._thread:  # e.g. from an on_message callback
            function()
            return

        async def run() -> None:
            function()

        asyncio.run_coroutine_threadsafe(run(), loop).result(_STOP_TIMEOUT)

    def _rearm_idle_timers(self) -> None:
        def rearm() -> None:
            for connection in self._state.live():
                connection.rearm_idle_timer()

        self._call_in_loop(rearm)

    # -- messages -------------------------------------------------------------------------

    def _deliver(self, message: ReceivedMessage) -> None:
        """Keep a message (server thread); write its files; file it in the recipients'
        mailboxes; tell ``on_message``."""
        if self.keep_files and self.state_dir is not None:
            self._write_files(message)
        with self._arrived:
            self._messages.append(message)
            self._arrived.notify_all()
        self._file_in_mailboxes(message)
        if self.on_message is not None:
            try:
                self.on_message(message)
            except Exception:
                log.exception("Gmail sandbox: on_message callback failed")

    def _file_in_mailboxes(self, message: ReceivedMessage) -> None:
        """Put the copy a Gmail recipient would see in each sandbox account the message is for."""
        local = [rcpt for rcpt in message.rcpt_tos if self.mailbox.has(rcpt)]
        if not local:
            return
        injections = self._state.injections
        spam = injections.take("spam") is not None
        slow = injections.take("slow_arrival")
        override = injections.take("auth_results")
        copies = []
        for rcpt in local:
            data = delivered_copy(
                message,
                rcpt,
                server_name=self.server_name,
                aliases=self.aliases.get((message.auth_user or rcpt).lower(), ()),
                override=override.params if override is not None else None,
            )
            labels = {SPAM} if spam else {INBOX}
            if message.auth_user and message.auth_user.lower() == rcpt.lower():
                labels.add(SENT)  # mail to oneself: one message, in the inbox and under Sent Mail
            copies.append((rcpt, data, labels))

        def file() -> None:
            for rcpt, data, labels in copies:
                self.mailbox.deliver(rcpt, data, labels)

        if slow is None:
            file()
            return
        try:
            asyncio.get_running_loop().call_later(float(slow.params["seconds"]), file)
        except RuntimeError:  # not on the sandbox's loop (a test delivering by hand): at once
            file()

    def deliver_to_mailbox(self, user: str, data: bytes, labels: Iterable[str] = (INBOX,)) -> None:
        """File raw message bytes in ``user``'s mailbox, as if Gmail had delivered them (tests)."""
        self.mailbox.deliver(user, data, labels)

    def _write_files(self, message: ReceivedMessage) -> None:
        assert self.state_dir is not None
        self._file_number += 1
        base = self.state_dir / "messages" / str(self._file_number)
        base.with_suffix(".eml").write_bytes(message.data)
        envelope = {
            "mail_from": message.mail_from,
            "rcpt_tos": message.rcpt_tos,
            "auth_user": message.auth_user,
            "tls": message.tls,
            "port": message.port,
            "smtputf8": message.smtputf8,
            "via_bdat": message.via_bdat,
            "size": message.size,
            "received_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        base.with_suffix(".json").write_text(
            json.dumps(envelope, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The messages accepted so far (a snapshot)."""
        with self._arrived:
            return list(self._messages)

    def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived; ``TimeoutError`` otherwise."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"The Gmail sandbox received {len(self._messages)} message(s) in {timeout:g} s; expected {count}."
                )
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far, and empty the accounts' mailboxes."""
        with self._arrived:
            self._messages.clear()
        self.mailbox.clear()

    def reset(self) -> None:
        """Forget messages, injected failures and counters (open connections stay open)."""
        self.clear()
        self._state.injections.clear()
        self._state.reset_counters()
        self.mailbox_connections = 0
        self._rearm_idle_timers()

    def drop_connections(self) -> None:
        """Close every open client connection abruptly, without a reply."""
        self._call_in_loop(self._abort_connections)

    # -- failures and counters ------------------------------------------------------------

    def inject(self, kind: str, *, times: int | None = 1, **params: Any) -> Injection:
        """Make the server fail like Gmail ``times`` times (None: until :meth:`reset`).

        Kinds: bad_credentials, app_password_required, web_login_required, too_many_logins
        (at the next AUTH, and every later AUTH on that connection); throttled, temporary, daily_quota (at MAIL); too_large (at MAIL if it
        carries SIZE=, else at the end of data; ``at="mail"|"data"`` to choose);
        too_many_recipients, bad_recipient (at RCPT; ``address=`` to pick one);
        disconnect_after (``messages=N``); idle_timeout (``seconds=S``); no_greeting.
        The mailboxes: spam (the next message to an account lands in Spam); slow_arrival
        (``seconds=S``: it appears in the mailbox S seconds after the 250); auth_results
        (``spf=``/``dkim=``/``dmarc=``: its verdicts); imap_disabled, pop_disabled (Gmail's NO/-ERR
        for an account without IMAP/POP access, at sign-in); mailbox_bad_credentials.
        """
        validate(kind, times, params)
        injection = self._state.injections.add(Injection(kind, times, dict(params)))
        if kind == "idle_timeout":
            self._rearm_idle_timers()
        return injection

    def attach_oauth(self, oauth: OAuthServer | None) -> None:
        """Accept XOAUTH2 with the access tokens ``oauth`` issues (None: reject every token)."""
        self.oauth = oauth
        self._state.token_checker = oauth.check_access_token if oauth is not None else None

    @property
    def auth_log(self) -> list[AuthRecord]:
        """Every AUTH exchange since the start or the last :meth:`reset` (mechanism, whether the
        credentials came on the AUTH line, its length, the user, the verdict; never a secret)."""
        with self._state._lock:
            return list(self._state.auth_log)

    @property
    def auth_attempts(self) -> int:
        """AUTH commands received since the start or the last :meth:`reset`."""
        return self._state.auth_attempts

    @property
    def connections(self) -> int:
        """Connections accepted since the start or the last :meth:`reset`."""
        return self._state.connections

    def mailbox_options(self, via: Literal["imap", "pop3"] = "imap") -> dict[str, Any]:
        """Keyword options pointing the round trip (``gmail_check --round-trip``) at this sandbox's
        IMAP or POP3 server; combine with :meth:`mailer_options`."""
        if via == "imap":
            return {"imap_host": self.host, "imap_port": self.imap_port}
        if via == "pop3":
            return {"pop_host": self.host, "pop_port": self.pop_port}
        raise ValueError(f"via must be 'imap' or 'pop3', not {via!r}.")

    def mailer_options(self, mode: Literal["starttls", "ssl", "plain"] = "starttls") -> dict[str, Any]:
        """Keyword options for an email backend pointed at this sandbox."""
        if mode not in ("starttls", "ssl", "plain"):
            raise ValueError(f"mode must be 'starttls', 'ssl' or 'plain', not {mode!r}.")
        username, password = next(iter(self.users.items()))
        return {
            "host": self.host,
            "port": self.ssl_port if mode == "ssl" else self.starttls_port,
            "username": username,
            "password": password,
            "use_tls": mode == "starttls",
            "use_ssl": mode == "ssl",
            "timeout": 5,
            "ssl_cafile": self.ca_file,
        }
