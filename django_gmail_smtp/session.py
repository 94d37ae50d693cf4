"""One SMTP session: the connection's lifecycle, step by step, within its deadlines.

:class:`SMTPSession` connects (TCP, implicit TLS or STARTTLS, EHLO), signs in with the sign-in
plugged into it (:mod:`.smtp_auth`), sends (:meth:`~SMTPSession.transact` hands the transactions
to the pipelining engine, :mod:`.pipeline`), checks an idle connection before reuse and says QUIT.
Shared by the backend, ``gmail_check`` and the admin's test buttons; ``gmail_check`` runs the steps
one by one. Every failure is re-raised as its own type carrying a :mod:`~django_gmail_smtp.causes`
entry and the stage it happened in.

The names the other modules used to import from here still are importable from here: the
transcript (:mod:`.transcript`), the bounded client and its caps (:mod:`.smtp_client`), the
transactions (:mod:`.pipeline`) and the password sign-in (:mod:`.smtp_auth`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from django.core.mail.utils import DNS_NAME
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy

from . import pipeline
from .causes import cause
from .conf import SmtpConfig
from .deadline import Deadline
from .exceptions import GmailConfigError, TLSRequiredError, explain_exception, with_cause
from .hosts import is_loopback
from .pipeline import Reply, Transaction
from .redaction import Redactor, detach
from .smtp_auth import sign_in_for, sign_in_with_password
from .smtp_client import (
    MAX_REPLY_BYTES,
    MAX_REPLY_LINES,
    BoundedSMTP,
    Clock,
    RecordingSMTP,
    RecordingSMTP_SSL,
    SocketReader,
    make_ssl_context,
    readable,
)
from .transcript import CLIENT, INFO, SERVER, Stats, Transcript

__all__ = [
    "CLIENT",
    "INFO",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "NOOP_TIMEOUT",
    "SERVER",
    "BoundedSMTP",
    "Reply",
    "SMTPSession",
    "Transaction",
    "Transcript",
    "make_ssl_context",
    "sign_in_with_password",
]

NOOP_TIMEOUT = 3.0
"""Seconds a NOOP before reuse may take before the connection is given up for a new one."""


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _step(subject: Promise) -> Callable[[_Method], _Method]:
    """The method runs within its own deadline of ``timeout`` seconds; inside :meth:`SMTPSession.connect`
    within the set-up's. ``subject`` names the step in the timeout's message."""

    def decorate(method: _Method) -> _Method:
        @functools.wraps(method)
        def run(self: SMTPSession, *args: Any, **kwargs: Any) -> Any:
            with self._within(None, subject):
                return method(self, *args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


class SMTPSession:
    """A signed-in connection to one server, opened step by step.

    ``connect()`` runs every step; ``gmail_check`` calls the steps one by one.
    ``stage`` always names the step in progress, for diagnosis.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        transcript: Transcript | None = None,
        on_stage: Callable[[str], None] | None = None,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.config = config
        self.transcript = transcript if transcript is not None else Transcript()
        self.redactor = redactor if redactor is not None else Redactor.for_config(config)
        """Hides the configuration's secrets (and the access tokens of its sign-ins) in replies."""
        self.on_stage = on_stage
        """Called with each new stage name (``gmail_check`` shows live progress with it)."""
        self._stage = ""
        self.client: smtplib.SMTP | None = None
        self._context: ssl.SSLContext | None = None
        self._context_source = ssl_context
        """Where the TLS context comes from when it is first needed (the backend's, built once);
        made from ``config`` when not given. Not before: a missing CA file is a TLS failure, after
        the connection was made, as with Django's backend."""
        self.stats = Stats()
        self.pid = os.getpid()
        """The process that opened the connection: after ``fork`` it belongs to the parent."""
        self.messages = 0
        """Transactions started on this connection (for recycling it)."""
        self.error: BaseException | None = None
        """What broke the connection during :meth:`transact`, if anything did."""
        self.last_used = time.monotonic()
        self.clean = True
        """No mail transaction is open on the server: ``MAIL`` needs no ``RSET`` before it."""
        self.clock = Clock(config.timeout)
        """The deadlines every read and write of this session meets (README.md#hostile-or-broken-servers)."""

    @property
    def stage(self) -> str:
        """The step in progress: ``connect``, ``tls``, ``greeting``, ``ehlo``, ``starttls``, ``auth``, ``send``..."""
        return self._stage

    @stage.setter
    def stage(self, stage: str) -> None:
        self._stage = stage
        if self.on_stage is not None:
            self.on_stage(stage)

    @property
    def limit(self) -> Deadline | None:
        """An overall deadline the caller sets (a ``send_messages()`` budget): no step of this
        session, set-up included, may go past it. None: none."""
        return self.clock.limit

    @limit.setter
    def limit(self, deadline: Deadline | None) -> None:
        self.clock.limit = deadline

    # -- helpers ---------------------------------------------------------------
    def _set_stage(self, stage: str) -> None:
        self.stage = stage

    @contextlib.contextmanager
    def _within(self, seconds: float | None, subject: str | Promise, kind: str = "step") -> Iterator[None]:
        """Run the block within a deadline of ``seconds`` (default: the timeout), unless one
        is already running (the connection set-up covers its steps)."""
        clock = self.clock
        if clock.phase is not None:
            yield
            return
        clock.phase = Deadline(self.config.timeout if seconds is None else seconds, kind, subject)
        try:
            yield
        finally:
            clock.phase = None

    def explain(self, exc: BaseException) -> BaseException:
        """``exc`` with its cause (for this configuration) and the stage it happened in."""
        config = self.config
        found = explain_exception(exc, stage=self.stage, port=config.port, use_ssl=config.use_ssl, host=config.host)
        return with_cause(exc, found, self.stage)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            source, self._context_source = self._context_source, None
            self._context = source() if source is not None else make_ssl_context(self.config)
        return self._context

    @property
    def tls_active(self) -> bool:
        return self.client is not None and isinstance(getattr(self.client, "sock", None), ssl.SSLSocket)

    def _client(self) -> smtplib.SMTP:
        if self.client is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        return self.client

    # -- steps -----------------------------------------------------------------
    def open_connection(self, *, within: float | None = None) -> tuple[int, bytes]:
        """TCP connect (and the TLS handshake with implicit TLS), then read the greeting,
        within ``within`` seconds as a whole (default: the timeout)."""
        with self._within(within, gettext_lazy("Connecting and reading the greeting")):
            return self._open_connection()

    def _open_connection(self) -> tuple[int, bytes]:
        cfg = self.config
        kwargs: dict[str, Any] = {"local_hostname": DNS_NAME.get_fqdn(), "timeout": cfg.timeout}
        if cfg.use_ssl:
            kwargs["context"] = self.ssl_context
            client: smtplib.SMTP = RecordingSMTP_SSL(**kwargs)
        else:
            client = RecordingSMTP(**kwargs)
        client.transcript = self.transcript  # type: ignore[attr-defined]
        client.on_stage = self._set_stage  # type: ignore[attr-defined]
        client.stats = self.stats  # type: ignore[attr-defined]
        client.clock = self.clock  # type: ignore[attr-defined]
        client.redactor = self.redactor  # type: ignore[attr-defined]
        self.pid = os.getpid()
        self.messages = 0
        self.error = None
        self.clean = True
        client._host = cfg.host  # type: ignore[attr-defined]  # starttls() verifies this name; connect() alone doesn't
        self.client = client
        try:
            code, message = client.connect(cfg.host, cfg.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, message)
        except Exception as exc:
            self.abort()
            raise self.explain(exc) from None
        return code, message

    @_step(gettext_lazy("EHLO"))
    def ehlo(self) -> tuple[int, bytes]:
        self.stage = "ehlo"
        client = self._client()
        try:
            code, message = client.ehlo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, message)
        except Exception as exc:
            self.abort()
            raise self.explain(exc) from None
        return code, message

    @_step(gettext_lazy("STARTTLS and the TLS handshake"))
    def starttls(self) -> tuple[int, bytes]:
        self.stage = "starttls"
        client = self._client()
        try:
            result = client.starttls(context=self.ssl_context)
            sock = client.sock
            if isinstance(sock, ssl.SSLSocket):
                self.transcript.add(INFO, f"TLS established: {sock.version()} {sock.cipher()[0]}")  # type: ignore[index]
        except Exception as exc:
            self.abort()
            raise self.explain(exc) from None
        return result

    @_step(gettext_lazy("Sign-in"))
    def login(self) -> tuple[int, bytes] | None:
        """Sign in (app password, or OAuth2 with XOAUTH2); refuses to send credentials
        unencrypted except to a loopback peer.

        A failure is raised without the traceback and the chained exceptions of the code
        below (ours, smtplib's, google-auth's), whose local variables hold the secrets: error
        reports that show frame locals (Django's, Sentry's) never see them.
        """
        cfg = self.config
        if not cfg.has_credentials:
            return None
        self.stage = "auth"
        client = self._client()
        if not self.tls_active and not self._peer_is_loopback():
            self.abort()
            secret = "OAuth2 access token" if cfg.uses_oauth2 else "password"
            refused = TLSRequiredError(
                f"Refusing to send the {secret} for {cfg.username} to {cfg.host}:{cfg.port} "
                "over an unencrypted connection."
            )
            refused.cause = cause("tls_required")
            refused.stage = "auth"
            raise refused
        failure: BaseException
        try:
            return sign_in_for(cfg)(client, cfg, self.clock.for_reading())
        except GmailConfigError as exc:  # a setting, not the connection: never explained as a server failure
            self.abort()
            failure = exc
        except Exception as exc:
            self.abort()
            failure = self.explain(exc)
        raise detach(failure)  # outside the except clause, so Python chains nothing to it

    def _peer_is_loopback(self) -> bool:
        try:
            return is_loopback(self._client().sock.getpeername()[0])  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return False

    def connect(self) -> smtplib.SMTP:
        """Run every step: connect, (STARTTLS), EHLO, sign-in, within the timeout as a whole.
        Returns the smtplib client."""
        cfg = self.config
        with self._within(None, f"{cfg.host}:{cfg.port}", "setup"):
            self.open_connection()
            self.ehlo()
            if cfg.use_tls and not cfg.use_ssl:
                self.starttls()
                self.ehlo()
            self.login()
        return self._client()

    @_step(gettext_lazy("Sending the message"))
    def send(
        self, from_addr: str, to_addrs: Sequence[str], message: bytes, mail_options: Sequence[str] = ()
    ) -> dict[str, tuple[int, bytes]]:
        """Send one message; returns the refused recipients like ``smtplib.sendmail``."""
        self.stage = "send"
        try:
            return self._client().sendmail(from_addr, list(to_addrs), message, list(mail_options))
        except smtplib.SMTPServerDisconnected as exc:
            self.abort()
            raise self.explain(exc) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise self.explain(exc) from None

    # -- many messages ---------------------------------------------------------
    @property
    def round_trips(self) -> int:
        """Times the client waited for the server after writing, since this session began."""
        return self.stats.round_trips

    @property
    def usable(self) -> bool:
        """Connected, in this process, and not broken by a failure."""
        client = self.client
        return client is not None and getattr(client, "sock", None) is not None and self.pid == os.getpid()

    def has_extension(self, name: str) -> bool:
        client = self.client
        return client is not None and client.has_extn(name)

    @property
    def smtputf8(self) -> bool:
        return self.has_extension("smtputf8")

    @property
    def size_limit(self) -> int | None:
        """The server's ``SIZE`` in bytes; None when it declares none (or 0, "no limit")."""
        if self.client is None:
            return None
        try:
            size = int(self.client.esmtp_features.get("size", "0") or 0)
        except ValueError:
            return None
        return size or None

    def attach(self, transcript: Transcript) -> None:
        """Record into ``transcript`` from now on (a reused connection, a new backend)."""
        self.transcript = transcript
        if self.client is not None:
            self.client.transcript = transcript  # type: ignore[attr-defined]

    def idle_check(self, noop_after: float | None = None) -> bool:
        """True if the connection looks ready for reuse; closes it otherwise.

        Without any I/O it notices a server that hung up or sent an unsolicited
        reply (Gmail's ``451 4.4.2 Timeout``); after ``noop_after`` idle seconds
        it also asks with ``NOOP`` (one round trip).
        """
        if not self.usable:
            self.abort()
            return False
        client = self._client()
        reader = client.file
        waiting = reader.waiting() if isinstance(reader, SocketReader) else readable(client.sock)
        if waiting:
            self.transcript.add(INFO, "The server closed the idle connection or spoke unasked; reconnecting.")
            self.abort()
            return False
        if noop_after is not None and time.monotonic() - self.last_used > noop_after:
            self.stage = "noop"
            # A connection a firewall silently dropped would hold NOOP for the whole timeout.
            try:
                with self._within(min(self.config.timeout or NOOP_TIMEOUT, NOOP_TIMEOUT), "NOOP"):
                    code, _text = client.noop()
            except (smtplib.SMTPException, OSError):
                code = -1
            if code != 250:
                self.abort()
                return False
            self.last_used = time.monotonic()
        return True

    def transact(
        self,
        transactions: Sequence[Transaction],
        *,
        window: int,
        pipelining: bool = True,
        stop: Callable[[Transaction], bool] | None = None,
    ) -> None:
        """Send the transactions in order and record every reply on them (:mod:`.pipeline`).

        Uses PIPELINING (with CHUNKING: ``BDAT n LAST``) when the server offers it
        and ``pipelining`` is True, with at most ``window`` transactions in flight;
        otherwise one command at a time. Stops issuing new transactions once
        ``stop(transaction)`` is True for one that got its verdict, and when the
        connection fails: :attr:`error` then holds the failure, :attr:`usable` is
        False, and the transactions without a verdict are not ``settled``.
        Never raises for a reply or a network failure.
        """
        if not transactions:
            return
        self.stage = "send"
        self.error = None
        try:
            pipeline.send(self, transactions, window=window, pipelining=pipelining, stop=stop)
        finally:
            self.last_used = time.monotonic()

    def quit(self, *, wait: bool = True, within: float | None = None) -> None:
        """Say QUIT; tolerate a server that already hung up.

        ``wait=False`` closes right after writing QUIT, without waiting for the
        221 (recycling a connection mid-batch should not cost a round trip).
        It all takes at most ``within`` seconds (and never more than the timeout).
        """
        client = self.client
        if client is None:
            return
        timeout = self.config.timeout
        if within is not None:
            within = min(within, timeout) if timeout else within
        with self._within(within, "QUIT"):
            self._quit(wait)

    def _quit(self, wait: bool) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        self.stage = "quit"
        if not wait:
            with contextlib.suppress(smtplib.SMTPException, OSError):  # closing anyway
                client.send("QUIT\r\n")
            client.close()
            return
        try:
            client.quit()
        except (smtplib.SMTPServerDisconnected, ssl.SSLError):
            client.close()  # the server hung up first, or a TLS close_notify race
        except smtplib.SMTPException:
            client.close()
            raise
        except OSError:
            client.close()

    def abort(self) -> None:
        """Close the socket without QUIT."""
        client, self.client = self.client, None
        if client is not None:
            client.close()
