"""``manage.py gmail_sandbox``: run the Gmail-like sandbox SMTP server in the foreground.

It also runs the sandbox's OAuth2 server (token, authorization and revocation endpoints on
loopback; ``--no-oauth`` to leave it out), so XOAUTH2 sign-in can be tried locally: the settings
it prints include a refresh token for the sandbox user.

Once listening it writes a ready file (``ready.json`` in ``--dir``, or ``--ready-file``; removed
on exit), one JSON object: ``host``, ``ports`` by service (``starttls``, ``ssl``, ``imap``,
``pop3``, and ``oauth`` when that server runs), ``ca_file``, ``user``, ``password``, ``state_dir``, ``pid`` and, with the
OAuth2 server, ``oauth`` (its endpoints, client and a refresh token). Scripts and the example
project read it to learn the ports taken with ``auto``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, ReceivedMessage

if TYPE_CHECKING:
    from django_gmail_smtp.sandbox.oauth_server import OAuthServer
    from django_gmail_smtp.sandbox.server import GmailSandbox

BACKEND = "django_gmail_smtp.backend.EmailBackend"
POLL_SECONDS = 0.2
READY_FILE = "ready.json"
"""Name of the ready file in ``--dir`` (unless ``--ready-file`` says otherwise)."""

#: (option, default port, what listens there). The ready file names them by service:
#: ``ports["starttls"]``, ``ports["ssl"]``, ``ports["imap"]``, ``ports["pop3"]``, ``ports["oauth"]``.
PORT_OPTIONS = (
    ("starttls-port", 2587, gettext_lazy("STARTTLS port, like Gmail's 587")),
    ("ssl-port", 2465, gettext_lazy("Implicit-TLS port, like Gmail's 465")),
    ("imap-port", 2993, gettext_lazy("IMAP port of the account's mailbox (implicit TLS), like Gmail's 993")),
    ("pop-port", 2995, gettext_lazy("POP3 port of the account's mailbox (implicit TLS), like Gmail's 995")),
    ("oauth-port", 2580, gettext_lazy("Port of the local OAuth2 token server")),
)


def port_number(text: str) -> int:
    """A port for the command line: 0-65535, or ``auto`` (0: any free port)."""
    if text.strip().lower() == "auto":
        return 0
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            _("%(value)s is not a port: give a number from 1 to 65535, or auto.") % {"value": repr(text)}
        )
    return port


def literal(value: object) -> str:
    """``value`` as Python source, strings in double quotes (paths with backslashes stay valid)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


class Command(BaseCommand):
    help = (
        "Run a local Gmail-like SMTP server (STARTTLS and implicit TLS, loopback only), print the "
        "settings that point Django at it, and list the messages it receives."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.description = _(
            "Run a local Gmail-like SMTP server (STARTTLS and implicit TLS, loopback only) and a "
            "local OAuth2 token server, print the settings that point Django at them, and list "
            "the messages received. A port given as auto (or 0) is any free port: the ports "
            "taken are printed and written to the ready file."
        )
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help=_("Loopback address to listen on (default: %(default)s).")
        )
        for option, default, text in PORT_OPTIONS:
            parser.add_argument(
                f"--{option}",
                type=port_number,
                default=default,
                metavar="PORT",
                help=_("%(service)s (default: %(port)s; auto: any free port).") % {"service": text, "port": default},
            )
        parser.add_argument("--no-oauth", action="store_true", help=_("Do not run the local OAuth2 token server."))
        parser.add_argument(
            "--alias",
            action="append",
            default=[],
            metavar="ADDRESS",
            help=_(
                "A verified 'Send mail as' address of the account (may be repeated); in its mailbox, "
                "another From is rewritten to the account, as Gmail does."
            ),
        )
        parser.add_argument(
            "--dir",
            default=".sandbox",
            help=_("Folder for ca.pem, the ready file and the received messages (default: %(default)s)."),
        )
        parser.add_argument("--user", default=SANDBOX_USER, help=_("Account to accept (default: %(default)s)."))
        parser.add_argument("--password", default=SANDBOX_PASSWORD, help=_("Its password (default: %(default)s)."))
        parser.add_argument(
            "--ready-file",
            metavar="FILE",
            help=_(
                "Once listening, write this JSON file (host, ports by service, ca_file, user...); "
                "it is removed on exit (default: ready.json in --dir)."
            ),
        )
        parser.add_argument(
            "--max-seconds",
            type=float,
            metavar="SECONDS",
            help=_("Stop by itself after this many seconds (default: run until stopped)."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity: int = options["verbosity"]
        try:
            from django_gmail_smtp.sandbox.server import GmailSandbox, PortInUseError
        except ImportError as error:
            raise CommandError(
                _('The Gmail sandbox needs the "sandbox" extra: pip install "django-gmail-smtp[sandbox]" (%(error)s).')
                % {"error": error}
            ) from error
        arrived: queue.Queue[ReceivedMessage] = queue.Queue()
        try:
            sandbox = GmailSandbox(
                options["host"],
                options["starttls_port"],
                options["ssl_port"],
                users={options["user"]: options["password"]},
                imap_port=options["imap_port"],
                pop_port=options["pop_port"],
                aliases={options["user"]: options["alias"]},
                state_dir=Path(options["dir"]),
                keep_files=True,
                on_message=arrived.put,
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        self._check_ports(sandbox.host, options)
        oauth_server = None
        if not options["no_oauth"]:
            from django_gmail_smtp.sandbox.oauth_server import OAuthServer

            try:
                oauth_server = OAuthServer(sandbox.host, options["oauth_port"], users=(options["user"],)).start()
            except OSError as error:
                raise self._start_error(error, sandbox.host, options["oauth_port"], "oauth-port") from error
            sandbox.attach_oauth(oauth_server)
        try:
            sandbox.start()
        except OSError as error:
            if oauth_server is not None:
                oauth_server.stop()
            if isinstance(error, PortInUseError):
                option = next(
                    (name for name, _default, _text in PORT_OPTIONS if options[name.replace("-", "_")] == error.port),
                    "starttls-port",
                )
                raise self._start_error(error, error.host, error.port, option) from error
            raise CommandError(_("The Gmail sandbox could not start: %(error)s") % {"error": error}) from error
        refresh_token = oauth_server.issue_refresh_token(options["user"]) if oauth_server is not None else ""

        ready_file = Path(options["ready_file"]) if options["ready_file"] else Path(options["dir"]) / READY_FILE
        stop = threading.Event()
        with self._stop_on_signals(stop):
            try:
                self._print_settings(sandbox, options["user"], options["password"])
                if oauth_server is not None:
                    self._print_oauth_settings(sandbox, oauth_server, options["user"], refresh_token)
                if self.verbosity >= 1:
                    self.stdout.write(_("Quit with CONTROL-C."))
                    self.stdout.flush()
                self._write_ready_file(
                    ready_file, sandbox, options["user"], options["password"], oauth_server, refresh_token
                )
                self._serve(arrived, stop, options["max_seconds"])
            finally:
                sandbox.stop()
                if oauth_server is not None:
                    oauth_server.stop()
                self._print_arrived(arrived)
                ready_file.unlink(missing_ok=True)
        if self.verbosity >= 1:
            self.stdout.write(_("Gmail sandbox stopped."))

    def _check_ports(self, host: str, options: dict[str, Any]) -> None:
        """Name every port that is given twice or already taken, before anything starts."""
        from django_gmail_smtp.sandbox.loopback import busy_ports

        wanted = {
            option: options[option.replace("-", "_")]
            for option, _default, _text in PORT_OPTIONS
            if not (option == "oauth-port" and options["no_oauth"])
        }
        seen: dict[int, str] = {}
        for option, port in wanted.items():
            if port and port in seen:
                raise CommandError(
                    _("--%(first)s and --%(second)s are both %(port)s: give each its own port, or auto.")
                    % {"first": seen[port], "second": option, "port": port}
                )
            seen[port] = option
        busy = busy_ports(host, wanted.values())
        if busy:
            taken = ", ".join(
                _("%(port)s (--%(option)s)") % {"port": port, "option": option}
                for option, port in wanted.items()
                if port in busy
            )
            raise CommandError(
                ngettext(
                    "Port %(ports)s on %(host)s is already in use. Pick another port with that option, "
                    "or auto for a free one.",
                    "Ports %(ports)s on %(host)s are already in use. Pick other ports with those options, "
                    "or auto for free ones.",
                    len(busy),
                )
                % {"ports": taken, "host": host}
            )

    def _start_error(self, error: OSError, host: str, port: int, option: str) -> CommandError:
        """A port taken between the check and the start (or refused for another reason)."""
        if error.errno == errno.EADDRINUSE:
            return CommandError(
                _(
                    "Port %(port)s on %(host)s is already in use. Pick another with --%(option)s, or auto for a free one."
                )
                % {"port": port, "host": host, "option": option}
            )
        return CommandError(
            _("The Gmail sandbox cannot listen on port %(port)s (%(error)s). Pick another with --%(option)s.")
            % {"port": port, "error": error.strerror or error, "option": option}
        )

    @contextmanager
    def _stop_on_signals(self, stop: threading.Event) -> Iterator[None]:
        """Ctrl-C and SIGTERM set ``stop`` (no KeyboardInterrupt traceback); restored after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _serve(self, arrived: queue.Queue[ReceivedMessage], stop: threading.Event, max_seconds: float | None) -> None:
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        while not stop.is_set():
            wait = POLL_SECONDS
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            with suppress(queue.Empty):
                self._print_message(arrived.get(timeout=wait))

    def _print_arrived(self, arrived: queue.Queue[ReceivedMessage]) -> None:
        while True:
            try:
                self._print_message(arrived.get_nowait())
            except queue.Empty:
                return

    def _print_message(self, message: ReceivedMessage) -> None:
        if self.verbosity < 1:
            return
        try:
            subject = str(message.message.get("Subject", ""))
        except Exception:  # a message too broken to parse is still listed
            subject = "?"
        self.stdout.write(
            _("%(time)s  from %(sender)s to %(recipients)s: “%(subject)s” (%(size)s bytes)")
            % {
                "time": time.strftime("%H:%M:%S"),
                "sender": message.mail_from or "<>",
                "recipients": ", ".join(message.rcpt_tos),
                "subject": subject,
                "size": message.size,
            }
        )
        self.stdout.flush()

    def _write_ready_file(
        self,
        path: Path,
        sandbox: GmailSandbox,
        user: str,
        password: str,
        oauth_server: OAuthServer | None = None,
        refresh_token: str = "",
    ) -> None:
        ports = {
            "starttls": sandbox.starttls_port,
            "ssl": sandbox.ssl_port,
            "imap": sandbox.imap_port,
            "pop3": sandbox.pop_port,
        }
        if oauth_server is not None:
            ports["oauth"] = oauth_server.port
        info: dict[str, Any] = {
            "host": sandbox.host,
            "ports": ports,
            "ca_file": sandbox.ca_file,
            "user": user,
            "password": password,
            "state_dir": str(sandbox.state_dir),
            "pid": os.getpid(),
        }
        if oauth_server is not None:
            info["oauth"] = {
                "token_uri": oauth_server.token_uri,
                "auth_uri": oauth_server.auth_uri,
                "revoke_uri": oauth_server.revoke_uri,
                "client_id": oauth_server.client_id,
                "client_secret": oauth_server.client_secret,
                "refresh_token": refresh_token,
            }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        partial.replace(path)  # pollers never see half a file

    def _print_oauth_settings(self, sandbox: GmailSandbox, server: OAuthServer, user: str, refresh_token: str) -> None:
        if self.verbosity < 1:
            return
        write = self.stdout.write
        write("")
        write(
            self.style.MIGRATE_HEADING(
                _("OAuth2 (XOAUTH2): the local token server listens on %(url)s.") % {"url": server.base_url}
            )
        )
        write(
            _(
                "Settings to sign in as %(user)s with OAuth2 instead of the password (sandbox tokens, "
                "valid while this command runs):"
            )
            % {"user": user}
        )
        for line in [
            "GMAIL_SMTP = {",
            f'    "SSL_CAFILE": {literal(sandbox.ca_file)},',
            f'    "OAUTH_TOKEN_URI": {literal(server.token_uri)},',
            f'    "OAUTH_AUTH_URI": {literal(server.auth_uri)},',
            "}",
        ]:
            write("    " + line)
        write(_("and in the environment (leave EMAIL_HOST_PASSWORD out):"))
        write(f"    GMAIL_SMTP_OAUTH_CLIENT_ID={server.client_id}")
        write(f"    GMAIL_SMTP_OAUTH_CLIENT_SECRET={server.client_secret}")
        write(f"    GMAIL_SMTP_OAUTH_REFRESH_TOKEN={refresh_token}")
        write(_("'manage.py gmail_authorize' gets another refresh token from it: its consent page approves at once."))

    def _print_settings(self, sandbox: GmailSandbox, user: str, password: str) -> None:
        if self.verbosity < 1:
            return
        host, port, ca_file = sandbox.host, sandbox.starttls_port, sandbox.ca_file
        write = self.stdout.write
        write(
            self.style.SUCCESS(
                _(
                    "Gmail sandbox listening on %(host)s: STARTTLS port %(starttls_port)s, implicit TLS port %(ssl_port)s."
                )
                % {"host": host, "starttls_port": port, "ssl_port": sandbox.ssl_port}
            )
        )
        write(_("Sign in as %(user)s with the password %(password)s.") % {"user": user, "password": password})
        write(_("The server certificate is signed by the CA in %(ca_file)s.") % {"ca_file": ca_file})
        write(_("Received messages are saved in %(folder)s.") % {"folder": Path(str(sandbox.state_dir)) / "messages"})
        write(
            _(
                "Mail to %(user)s lands in its mailbox: IMAP on port %(imap_port)s, POP3 on port "
                "%(pop_port)s (implicit TLS, same password; gmail_check --round-trip reads it)."
            )
            % {"user": user, "imap_port": sandbox.imap_port, "pop_port": sandbox.pop_port}
        )
        write("")
        write(self.style.MIGRATE_HEADING(_("Settings for Django 5.2 (settings.py):")))
        for line in [
            f"EMAIL_BACKEND = {literal(BACKEND)}",
            f"EMAIL_HOST = {literal(host)}",
            f"EMAIL_PORT = {port}",
            "EMAIL_USE_TLS = True",
            f"EMAIL_HOST_USER = {literal(user)}",
            f"EMAIL_HOST_PASSWORD = {literal(password)}",
            f'GMAIL_SMTP = {{"SSL_CAFILE": {literal(ca_file)}, "IMAP_HOST": {literal(host)}, '
            f'"IMAP_PORT": {sandbox.imap_port}, "POP_HOST": {literal(host)}, "POP_PORT": {sandbox.pop_port}}}',
        ]:
            write("    " + line)
        write("")
        write(self.style.MIGRATE_HEADING(_("Settings for Django 6.1 (MAILERS):")))
        for line in [
            "MAILERS = {",
            '    "default": {',
            f'        "BACKEND": {literal(BACKEND)},',
            '        "OPTIONS": {',
            f'            "host": {literal(host)},',
            f'            "port": {port},',
            '            "use_tls": True,',
            f'            "username": {literal(user)},',
            f'            "password": {literal(password)},',
            f'            "ssl_cafile": {literal(ca_file)},',
            f'            "imap_host": {literal(host)},',
            f'            "imap_port": {sandbox.imap_port},',
            "        },",
            "    },",
            "}",
        ]:
            write("    " + line)
        write("")
        write(self.style.MIGRATE_HEADING(_("Or in the environment:")))
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        write(f"    EMAIL_URL=smtp+tls://{credentials}@{host}:{port}")
        write(f"    GMAIL_SMTP_SSL_CAFILE={ca_file}")
        write(f"    GMAIL_SMTP_IMAP_HOST={host}")
        write(f"    GMAIL_SMTP_IMAP_PORT={sandbox.imap_port}")
        write(f"    GMAIL_SMTP_POP_HOST={host}")
        write(f"    GMAIL_SMTP_POP_PORT={sandbox.pop_port}")
        write("")
        write(
            _("For implicit TLS use port %(ssl_port)s with EMAIL_USE_SSL = True (or %(url)s).")
            % {"ssl_port": sandbox.ssl_port, "url": f"EMAIL_URL=smtp+ssl://{credentials}@{host}:{sandbox.ssl_port}"}
        )
        self.stdout.flush()
