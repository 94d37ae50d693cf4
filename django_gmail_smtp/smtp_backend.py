"""``EmailBackend``: Django's SMTP backend API, with Gmail's defaults and clear errors.

Its public path is ``django_gmail_smtp.backend.EmailBackend`` (:mod:`.backend` re-exports it);
the queued backend's worker (:mod:`.queued`) imports it from here.

A drop-in for ``django.core.mail.backends.smtp.EmailBackend``: the same keyword
arguments, ``EMAIL_*`` settings (without ``MAILERS``), ``MAILERS`` OPTIONS
(Django 6.1), ``open()``/``close()`` contract, ``fail_silently`` and returned
counts. Differences are deliberate and documented: Gmail defaults when no host
is set, a 10 s default timeout, verified certificates with an optional CA file,
no password over an unencrypted connection, and exceptions that explain Gmail's
replies.

Delivery (README.md#fast-fault-tolerant-delivery): signed-in connections are reused across calls
(:mod:`~django_gmail_smtp.pool`), messages are pipelined, temporary failures
retried, dropped connections replaced, and each message's outcome is recorded
on ``message.gmail_smtp_status``.

How reuse meets Django's contract:

* ``send_messages()`` on a backend that was not opened behaves as Django's from
  the caller's side (same count, same exception types) but, instead of QUIT,
  leaves the signed-in connection in the pool for this thread's next call.
  Threads sending through one such backend each use their own connection.
* ``open()`` returns True when it made the backend hold a connection (a new one
  or one taken from the pool), False if it already held one, None if it failed
  with ``fail_silently``. ``close()`` gives the connection back to the pool
  (QUIT when ``REUSE_CONNECTIONS`` is off, or the connection is worn out).
  An opened backend serialises its callers on its one connection, as Django's.
"""

from __future__ import annotations

import functools
import smtplib
import ssl
import threading
from collections.abc import Sequence
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

from . import conf, quota, rules
from .connections import HeldConnection, PooledConnections, Sessions
from .delivery import STATUS_ATTRIBUTE, DeliveryOptions, DeliveryStatus, Job, failure_to_raise, report, send_batch
from .envelope import build_envelope, needs_smtputf8, prep_address
from .retry import Timing
from .session import SMTPSession, Transcript, make_ssl_context

__all__ = ["EmailBackend"]


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
        auth_method: str | None = None,
        oauth_client_id: str | None = None,
        oauth_client_secret: str | None = None,
        oauth_refresh_token: str | None = None,
        imap_host: str | None = None,
        imap_port: int | None = None,
        pop_host: str | None = None,
        pop_port: int | None = None,
        **kwargs: Any,
    ) -> None:
        # fail_silently is ours: passing it on would trigger Django 6.1's deprecation warning.
        super().__init__(**kwargs)
        from .accounts import account_options  # the models: imported once the apps are ready

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
                "auth_method": auth_method,
                "oauth_client_id": oauth_client_id,
                "oauth_client_secret": oauth_client_secret,
                "oauth_refresh_token": oauth_refresh_token,
                # Not used for sending: where gmail_check --round-trip reads the mailbox.
                "imap_host": imap_host,
                "imap_port": imap_port,
                "pop_host": pop_host,
                "pop_port": pop_port,
            },
            alias=self.alias,
            accounts=account_options,
        )
        rules.raise_for_blocking(self.config)
        self.transcript = Transcript()
        self.timing = Timing()
        """The clock, sleep and randomness the retries wait with; a test sets fakes here."""
        self.connection: smtplib.SMTP | None = None
        # The backend's one TLS context, built when TLS starts (a missing CA file fails there, as in Django).
        self._sessions = Sessions(self.config, transcript=self.transcript, ssl_context=lambda: self.ssl_context)
        self._held = HeldConnection(self._sessions)
        self._opened = False  # open() was called: this backend holds its connection until close()
        self._lock = threading.RLock()

    # Django's SMTP backend exposes these as attributes; some code reads them.
    host = property(lambda self: self.config.host)
    port = property(lambda self: self.config.port)
    use_tls = property(lambda self: self.config.use_tls)
    use_ssl = property(lambda self: self.config.use_ssl)
    timeout = property(lambda self: self.config.timeout)
    ssl_keyfile = property(lambda self: self.config.ssl_keyfile)
    ssl_certfile = property(lambda self: self.config.ssl_certfile)
    ssl_cafile = property(lambda self: self.config.ssl_cafile)

    @property
    def username(self) -> str | None:
        """As on Django's backend: None for a ``MAILERS`` alias that sets none, else a string."""
        return self._as_configured("username")

    @property
    def password(self) -> str | None:
        """As on Django's backend: None for a ``MAILERS`` alias that sets none, else a string."""
        return self._as_configured("password")

    def _as_configured(self, option: str) -> str | None:
        if self.alias is not None and option not in self.config.provenance:
            return None  # Django 6.1 keeps a MAILERS option it was not given as None
        value: str = getattr(self.config, option)
        return value

    @property
    def _session(self) -> SMTPSession | None:
        """The session an opened backend holds."""
        return self._held.session

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of this backend's connections, built once (as Django's backend has it).

        Always verifying certificates and host names; ``ssl_cafile`` replaces the system's CA
        certificates, ``ssl_certfile``/``ssl_keyfile`` add a client certificate.
        """
        return make_ssl_context(self.config)

    def prep_address(self, address: Any, force_ascii: bool = True) -> str:
        """The addr-spec of ``address`` for the envelope, with Django 6.x's semantics (on 5.2 too).

        Raises ``ValueError`` for an invalid address, several addresses, or CR/LF. With
        ``force_ascii`` a non-ASCII domain is IDNA-encoded and a non-ASCII local part is an
        error (it cannot be encoded); without, both stay Unicode (for SMTPUTF8).
        """
        return prep_address(address, force_ascii=force_ascii)

    def open(self) -> bool | None:
        """Ensure a signed-in connection.

        True if the backend now holds one it did not hold before (new, or taken
        from the pool), False if it already held one, None if opening failed and
        ``fail_silently`` is on.
        """
        if self.connection is not None:
            return False
        try:
            self._held.open(DeliveryOptions.from_settings())
        except OSError:
            if not self.fail_silently:
                raise
            return None
        self.connection, self._opened = self._client(), True
        return True

    def close(self) -> None:
        """Give the connection back to the pool (or QUIT); tolerates a server that already hung up."""
        self.connection, self._opened = None, False
        if self._held.session is not None:
            self._held.close(DeliveryOptions.from_settings(), fail_silently=self.fail_silently)

    def _client(self) -> smtplib.SMTP | None:
        session = self._held.session
        return None if session is None else session.client

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send the messages; return how many the server accepted.

        Each message's outcome is on ``message.gmail_smtp_status``. Failures are
        raised (unless ``fail_silently``) after the rest of the batch was sent.
        """
        if not email_messages:
            return 0
        jobs = self._prepare(email_messages)  # ValueError (header injection, bad address): nothing sent
        if not jobs:
            return 0
        options = DeliveryOptions.from_settings()
        if self._opened or type(self).open is EmailBackend.open:
            return self._send(jobs, options)
        # A subclass's own open(): honour its contract as Django's backend does. None (failed
        # silently), or no connection afterwards, means nothing is sent.
        with self._lock:
            created = self.open()
            if created is None or self.connection is None:
                return 0
            try:
                return self._send(jobs, options)
            finally:
                if created:
                    self.close()

    def _send(self, jobs: list[Job], options: DeliveryOptions) -> int:
        try:
            reservation = quota.reserve_sync(self.config, len(jobs))  # None unless GMAIL_SMTP["QUOTA_SYNC"]
        except quota.QuotaExceededError:
            if self.fail_silently:
                return 0
            raise
        stop_error: BaseException | None = None
        try:
            timeout, timing, quiet = self.config.timeout, self.timing, self.fail_silently
            if self.connection is not None:
                with self._lock:  # one connection: callers take turns, as with Django's backend
                    try:
                        held = self._held.connections(options, fail_silently=quiet)
                        stop_error = send_batch(jobs, held, options, timing=timing, timeout=timeout)
                    finally:
                        self.connection = self._client()  # replaced, or gone with a broken connection
            else:
                pooled = PooledConnections(self._sessions, options, fail_silently=quiet)
                stop_error = send_batch(jobs, pooled, options, timing=timing, timeout=timeout)
        finally:
            # Also when delivery raised: slots of messages that may have gone out stay taken, the
            # others are given back (never leaked).
            quota.settle(reservation, sum(1 for job in jobs if job.status.may_have_gone), stop_error)
        report(jobs, type(self))
        if not self.fail_silently:
            failure = failure_to_raise(jobs, stop_error)
            if failure is not None:
                raise failure
        return sum(1 for job in jobs if job.status.sent)

    # -- messages ----------------------------------------------------------------
    def _prepare(self, email_messages: Sequence[EmailMessage]) -> list[Job]:
        """Envelope and bytes of every message, before anything is sent."""
        jobs = []
        for message in email_messages:
            status = DeliveryStatus()
            setattr(message, STATUS_ATTRIBUTE, status)
            if not message.recipients():
                continue
            smtputf8 = needs_smtputf8(message)
            try:
                from_email, recipients, data = build_envelope(message, smtputf8=smtputf8)
            except ValueError as exc:
                status.error = exc
                raise
            jobs.append(Job(message, from_email, recipients, data, smtputf8, status))
        return jobs
