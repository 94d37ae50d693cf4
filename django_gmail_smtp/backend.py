"""``EmailBackend``: Django's SMTP backend API, with Gmail's defaults and clear errors.

A drop-in for ``django.core.mail.backends.smtp.EmailBackend``: the same keyword
arguments, ``EMAIL_*`` settings (without ``MAILERS``), ``MAILERS`` OPTIONS
(Django 6.1), ``open()``/``close()`` contract, ``fail_silently`` and returned
counts. Differences are deliberate and documented: Gmail defaults when no host
is set, a 10 s default timeout, verified certificates with an optional CA file,
no password over an unencrypted connection, and exceptions that explain Gmail's
replies.
"""

from __future__ import annotations

import email.policy
import smtplib
import threading
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.core.mail.message import EmailMessage

from . import conf, rules
from .session import SMTPSession, Transcript

__all__ = ["EmailBackend"]

# Django 6.0+ prepares addresses with EmailBackend.prep_address(); 5.2 with sanitize_address().
_HAS_PREP_ADDRESS = hasattr(DjangoSMTPBackend, "prep_address")


class EmailBackend(BaseEmailBackend):
    """Send mail through Gmail (or any SMTP server) over verified TLS."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_cafile: str | None = None,
        account: str | None = None,
        **kwargs: Any,
    ) -> None:
        # fail_silently is ours: passing it on would trigger Django 6.1's deprecation warning.
        super().__init__(**kwargs)
        self.alias: str | None = kwargs.get("alias")
        self.fail_silently = fail_silently
        self.config = conf.resolve(
            {
                "host": host,
                "port": port,
                "username": username,
                "password": password,
                "use_tls": use_tls,
                "use_ssl": use_ssl,
                "timeout": timeout,
                "ssl_keyfile": ssl_keyfile,
                "ssl_certfile": ssl_certfile,
                "ssl_cafile": ssl_cafile,
                "account": account,
            },
            alias=self.alias,
        )
        rules.raise_for_blocking(self.config)
        self.transcript = Transcript()
        self.connection: smtplib.SMTP | None = None
        self._session: SMTPSession | None = None
        self._lock = threading.RLock()

    # Django's SMTP backend exposes these as attributes; some code reads them.
    host = property(lambda self: self.config.host)
    port = property(lambda self: self.config.port)
    username = property(lambda self: self.config.username)
    password = property(lambda self: self.config.password)
    use_tls = property(lambda self: self.config.use_tls)
    use_ssl = property(lambda self: self.config.use_ssl)
    timeout = property(lambda self: self.config.timeout)
    ssl_keyfile = property(lambda self: self.config.ssl_keyfile)
    ssl_certfile = property(lambda self: self.config.ssl_certfile)
    ssl_cafile = property(lambda self: self.config.ssl_cafile)

    def open(self) -> bool | None:
        """Ensure a signed-in connection.

        True if a new one was opened, False if one was already open, None if
        opening failed and ``fail_silently`` is on.
        """
        if self.connection is not None:
            return False
        session = SMTPSession(self.config, transcript=self.transcript)
        try:
            self.connection = session.connect()
        except OSError:
            if not self.fail_silently:
                raise
            return None
        self._session = session
        return True

    def close(self) -> None:
        """Close the connection; tolerates a server that already hung up."""
        session, self._session, self.connection = self._session, None, None
        if session is None:
            return
        try:
            session.quit()
        except smtplib.SMTPException:
            if not self.fail_silently:
                raise

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send the messages; return how many the server accepted."""
        if not email_messages:
            return 0
        with self._lock:
            new_conn_created = self.open()
            if not self.connection or new_conn_created is None:
                return 0
            num_sent = 0
            try:
                for message in email_messages:
                    if self._send(message):
                        num_sent += 1
            finally:
                if new_conn_created:
                    self.close()
        return num_sent

    def _send(self, email_message: EmailMessage) -> bool:
        if not email_message.recipients():
            return False
        from_email, recipients, data = self._envelope(email_message)
        assert self._session is not None
        try:
            self._session.send(from_email, recipients, data)
        except smtplib.SMTPException:
            if self._session.client is None:
                self.connection = None  # the server hung up; open() reconnects next time
            if not self.fail_silently:
                raise
            return False
        return True

    def _envelope(self, email_message: EmailMessage) -> tuple[str, list[str], bytes]:
        """Envelope sender, recipients and wire bytes, exactly as Django's backend makes them.

        Raises ``ValueError`` for header injection and invalid addresses.
        """
        if _HAS_PREP_ADDRESS:
            prep = DjangoSMTPBackend.prep_address
            from_email = prep(self, email_message.from_email)  # type: ignore[arg-type]
            recipients = [prep(self, addr) for addr in email_message.recipients()]  # type: ignore[arg-type]
            data = email_message.message(policy=email.policy.SMTP).as_bytes()  # type: ignore[call-arg]
            return from_email, recipients, data
        from django.core.mail.message import sanitize_address

        encoding = email_message.encoding or settings.DEFAULT_CHARSET
        from_email = sanitize_address(email_message.from_email, encoding)
        recipients = [sanitize_address(addr, encoding) for addr in email_message.recipients()]
        return from_email, recipients, email_message.message().as_bytes(linesep="\r\n")
