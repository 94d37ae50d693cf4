"""One SMTP conversation: connect, TLS, EHLO, sign-in, send, with a redacted transcript.

Shared by the backend, ``gmail_check`` and the admin's test buttons. Every
failure is re-raised as its own type carrying a :mod:`~django_gmail_smtp.causes`
entry and the stage it happened in.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from django.core.mail.utils import DNS_NAME

from .causes import cause, explain_exception
from .conf import SmtpConfig, app_setting, is_loopback
from .exceptions import TLSRequiredError, with_cause

__all__ = ["SMTPSession", "Transcript", "make_ssl_context"]

logger = logging.getLogger("django_gmail_smtp.transcript")

CLIENT, SERVER, INFO = "->", "<-", "**"


class Transcript:
    """The last lines of an SMTP conversation, credentials already redacted."""

    def __init__(self, maxlen: int = 500) -> None:
        self.lines: deque[tuple[str, str]] = deque(maxlen=maxlen)
        self.log = bool(app_setting("TRANSCRIPT"))

    def add(self, direction: str, text: str) -> None:
        self.lines.append((direction, text))
        if self.log:
            logger.debug("%s %s", direction, text)

    def render(self) -> str:
        return "\n".join(f"{d} {t}" for d, t in self.lines)

    def __str__(self) -> str:
        return self.render()


def make_ssl_context(config: SmtpConfig) -> ssl.SSLContext:
    """A verifying TLS context (never unverified); ``ssl_cafile`` replaces the system CAs."""
    context = ssl.create_default_context(cafile=config.ssl_cafile or None)
    if config.ssl_certfile or config.ssl_keyfile:
        context.load_cert_chain(config.ssl_certfile or "", config.ssl_keyfile or None)
    return context


class _Recording:
    """Mixin for ``smtplib.SMTP`` that records the conversation and its stage."""

    transcript: Transcript
    on_stage: Callable[[str], None]
    _auth_exchange = False
    _body_next = False

    def send(self, s: str | bytes) -> None:
        raw = s.decode("ascii", "replace") if isinstance(s, bytes) else s
        if self._body_next:
            self._body_next = False
            self.transcript.add(CLIENT, f"<message body, {len(s)} bytes>")
        else:
            for line in raw.rstrip("\r\n").split("\r\n"):
                self.transcript.add(CLIENT, self._redact(line))
        super().send(s)  # type: ignore[misc]

    def _redact(self, line: str) -> str:
        words = line.split(" ")
        if words[0].upper() == "AUTH":
            self._auth_exchange = True
            return " ".join(words[:2] + (["<redacted>"] if len(words) > 2 else []))
        if self._auth_exchange:
            return "<redacted>"
        return line

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()  # type: ignore[misc]
        lines = message.decode("utf-8", "replace").split("\n") if message else [""]
        for i, text in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            self.transcript.add(SERVER, f"{code}{sep}{text}".rstrip())
        if code != 334:
            self._auth_exchange = False
        self._body_next = code == 354
        return code, message


class RecordingSMTP(_Recording, smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self.on_stage("connect")
        self.transcript.add(INFO, f"Connecting to {host}:{port}")
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self.on_stage("greeting")
        return sock  # type: ignore[no-any-return]


class RecordingSMTP_SSL(_Recording, smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self.on_stage("connect")
        self.transcript.add(INFO, f"Connecting to {host}:{port} (implicit TLS)")
        sock = socket.create_connection((host, port), timeout, self.source_address)
        self.on_stage("tls")
        try:
            tls = self.context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.transcript.add(INFO, f"TLS established: {tls.version()} {tls.cipher()[0]}")  # type: ignore[index]
        self.on_stage("greeting")
        return tls


class SMTPSession:
    """A signed-in connection to one server, opened step by step.

    ``connect()`` runs every step; ``gmail_check`` calls the steps one by one.
    ``stage`` always names the step in progress, for diagnosis.
    """

    def __init__(self, config: SmtpConfig, *, transcript: Transcript | None = None) -> None:
        self.config = config
        self.transcript = transcript if transcript is not None else Transcript()
        self.stage = ""
        self.client: smtplib.SMTP | None = None
        self._context: ssl.SSLContext | None = None

    # -- helpers ---------------------------------------------------------------
    def _set_stage(self, stage: str) -> None:
        self.stage = stage

    def _fail(self, exc: BaseException) -> BaseException:
        found = explain_exception(exc, stage=self.stage, port=self.config.port, use_ssl=self.config.use_ssl)
        return with_cause(exc, found, self.stage)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = make_ssl_context(self.config)
        return self._context

    @property
    def tls_active(self) -> bool:
        return self.client is not None and isinstance(getattr(self.client, "sock", None), ssl.SSLSocket)

    def _client(self) -> smtplib.SMTP:
        if self.client is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        return self.client

    # -- steps -----------------------------------------------------------------
    def open_connection(self) -> tuple[int, bytes]:
        """TCP connect (and the TLS handshake with implicit TLS), then read the greeting."""
        cfg = self.config
        kwargs: dict[str, Any] = {"local_hostname": DNS_NAME.get_fqdn(), "timeout": cfg.timeout}
        if cfg.use_ssl:
            kwargs["context"] = self.ssl_context
            client: smtplib.SMTP = RecordingSMTP_SSL(**kwargs)
        else:
            client = RecordingSMTP(**kwargs)
        client.transcript = self.transcript  # type: ignore[attr-defined]
        client.on_stage = self._set_stage  # type: ignore[attr-defined]
        client._host = cfg.host  # starttls() verifies this name; connect() alone doesn't set it
        self.client = client
        try:
            code, message = client.connect(cfg.host, cfg.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, message)
        except Exception as exc:
            self.abort()
            raise self._fail(exc) from None
        return code, message

    def ehlo(self) -> tuple[int, bytes]:
        self.stage = "ehlo"
        client = self._client()
        try:
            code, message = client.ehlo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, message)
        except Exception as exc:
            self.abort()
            raise self._fail(exc) from None
        return code, message

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
            raise self._fail(exc) from None
        return result

    def login(self) -> tuple[int, bytes] | None:
        """Sign in; refuses to send credentials unencrypted except to a loopback peer."""
        cfg = self.config
        if not cfg.has_credentials:
            return None
        self.stage = "auth"
        client = self._client()
        if not self.tls_active and not self._peer_is_loopback():
            self.abort()
            refused = TLSRequiredError(
                f"Refusing to send the password for {cfg.username} to {cfg.host}:{cfg.port} "
                "over an unencrypted connection."
            )
            refused.cause = cause("tls_required")
            refused.stage = "auth"
            raise refused
        try:
            return client.login(cfg.username, cfg.password)
        except Exception as exc:
            self.abort()
            raise self._fail(exc) from None

    def _peer_is_loopback(self) -> bool:
        try:
            return is_loopback(self._client().sock.getpeername()[0])  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return False

    def connect(self) -> smtplib.SMTP:
        """Run every step: connect, (STARTTLS), EHLO, sign-in. Returns the smtplib client."""
        self.open_connection()
        self.ehlo()
        if self.config.use_tls and not self.config.use_ssl:
            self.starttls()
            self.ehlo()
        self.login()
        return self._client()

    def send(
        self, from_addr: str, to_addrs: Sequence[str], message: bytes, mail_options: Sequence[str] = ()
    ) -> dict[str, tuple[int, bytes]]:
        """Send one message; returns the refused recipients like ``smtplib.sendmail``."""
        self.stage = "send"
        try:
            return self._client().sendmail(from_addr, list(to_addrs), message, list(mail_options))
        except smtplib.SMTPServerDisconnected as exc:
            self.abort()
            raise self._fail(exc) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise self._fail(exc) from None

    def quit(self) -> None:
        """Say QUIT; tolerate a server that already hung up."""
        client, self.client = self.client, None
        if client is None:
            return
        self.stage = "quit"
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
