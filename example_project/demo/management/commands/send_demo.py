"""Send one real message through the configured backend and show what the server received."""

import email
import email.policy
import json
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import django
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.management.base import CommandError

from django_gmail_smtp import diagnose
from django_gmail_smtp.causes import CATALOGUE, Cause
from django_gmail_smtp.conf import is_loopback
from django_gmail_smtp.exceptions import GmailConfigError
from django_gmail_smtp.management.reporting import ReportedError, ReportingCommand


def default_connection() -> Any:
    """The default mailer, without Django 6.1's deprecated get_connection()."""
    if django.VERSION >= (6, 1):
        from django.core.mail import mailers

        return mailers.default
    from django.core.mail import get_connection

    return get_connection()


class Command(ReportingCommand):
    help = "Send a test message through django-gmail-smtp and, with the sandbox, show that it arrived."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--to", default="you@example.com", help="Recipient address.")
        parser.add_argument("--wait", type=float, default=5.0, help="Seconds to wait for delivery in the sandbox.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = int(options["verbosity"])
        try:
            connection = default_connection()
            config = connection.config
        except GmailConfigError as exc:
            cause = diagnose.config_error(exc).cause
            assert cause is not None
            self.fail("The mail configuration is invalid.", cause, exc)
        self.stdout.write(f"Backend: {type(connection).__module__}.{type(connection).__name__}")
        for name, value, where in config.describe():
            if name in ("host", "port", "username", "password", "use_tls", "use_ssl", "ssl_cafile"):
                self.stdout.write(f"  {name:<10} {value:<40} ({where.source}: {where.origin})")
        message = EmailMultiAlternatives(
            subject="django-gmail-smtp デモ: こんにちは",
            body="This message went through django-gmail-smtp over TLS.\nTLS 経由で送信されました。",
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[options["to"]],
            connection=connection,
        )
        message.attach_alternative("<p>This message went through <b>django-gmail-smtp</b>.</p>", "text/html")
        message.attach("hello.txt", "添付ファイル / attachment\n", "text/plain")
        started = time.monotonic()
        try:
            with connection:
                sent = connection.send_messages([message])
                tls = [text for direction, text in connection.transcript.lines if text.startswith("TLS established")]
        except Exception as exc:  # the backend's failures carry their cause; anything else is a bug
            cause = getattr(exc, "cause", None) or CATALOGUE["unexpected_error"]
            self.fail(f"Could not send: {diagnose.describe_error(exc)}", cause, exc, sandbox=is_loopback(config.host))
        elapsed = time.monotonic() - started
        if sent != 1:
            raise CommandError("The server did not accept the message.")
        self.stdout.write(self.style.SUCCESS(f"Sent 1 message in {elapsed:.2f}s ({'; '.join(tls) or 'no TLS'})."))
        self.show_delivery(config.host, options["to"], options["wait"])

    def fail(self, headline: str, cause: Cause, exc: BaseException, *, sandbox: bool = False) -> NoReturn:
        """The failure as the cause and the fix, without a traceback (that comes with -v 3)."""
        if self.verbosity >= 3:
            self.stderr.write("".join(traceback.format_exception(exc)).rstrip())
        self.stderr.write(self.style.ERROR(headline))
        for line in cause.lines():
            self.stderr.write(line)
        if sandbox and cause.id == "connection_refused":
            self.stderr.write(
                "Is the Gmail sandbox running? Start it with 'python manage.py gmail_sandbox' (in example_project); "
                "this project reads the ports it takes from .sandbox/ready.json."
            )
        if self.verbosity < 3:
            self.stderr.write("Run with -v 3 to see the traceback.")
        raise ReportedError(f"{headline} {cause.summary} [{cause.id}]")

    def show_delivery(self, host: str, to: str, wait: float) -> None:
        """Find the message in the sandbox's folder (only when mail went to the local sandbox)."""
        if not is_loopback(host):
            self.stdout.write("Sent to a real server: check the recipient's mailbox.")
            return
        folder = Path(settings.SANDBOX_DIR) / "messages"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for envelope_file in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
                envelope = json.loads(envelope_file.read_text())
                if to not in envelope.get("rcpt_tos", []):
                    continue
                eml = envelope_file.with_suffix(".eml")
                received = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
                parts = [part.get_content_type() for part in received.walk() if not part.is_multipart()]
                self.stdout.write(self.style.SUCCESS(f"Delivered to the sandbox: {eml}"))
                self.stdout.write(f"  From:      {received['From']}")
                self.stdout.write(f"  To:        {received['To']}")
                self.stdout.write(f"  Subject:   {received['Subject']}")
                self.stdout.write(f"  Parts:     {', '.join(parts)}")
                self.stdout.write(f"  Signed in: {envelope.get('auth_user')} (TLS: {envelope.get('tls')})")
                return
            time.sleep(0.1)
        raise CommandError(
            f"The message did not arrive in {folder} within {wait:g}s. Is `manage.py gmail_sandbox` running?"
        )
