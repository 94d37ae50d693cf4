"""``manage.py gmail_check``: test the mail configuration step by step and say what to fix.

Only the command line and the presentation live here: the test itself, and the configuration it
tests with the command line's overrides, are :mod:`django_gmail_smtp.diagnose`; the exit
statuses and their meanings are :mod:`django_gmail_smtp.exit_status`.
"""

from __future__ import annotations

import json
import textwrap
import unicodedata
from typing import Any

import django
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser, DjangoHelpFormatter
from django.core.validators import validate_email
from django.utils import translation
from django.utils.translation import gettext as _

from ... import conf, diagnose, roundtrip
from ...accounts import account_options
from ...conf import SmtpConfig, Value
from ...diagnose.overrides import (
    SOURCE_COMMAND_LINE,
    configured_mailers,
    default_alias,
    mailer_name,
    resolve_with_overrides,
)
from ...exceptions import GmailConfigError
from ...exit_status import EXIT_STATUSES
from ..reporting import ReportedError, ReportingCommand

ISSUES_URL = "https://github.com/django-gmail-smtp/django-gmail-smtp/issues"

# Command-line option -> configuration option it overrides.
OVERRIDES = {
    "host": "host",
    "port": "port",
    "username": "username",
    "timeout": "timeout",
    "cafile": "ssl_cafile",
    "imap_host": "imap_host",
    "imap_port": "imap_port",
    "pop_host": "pop_host",
    "pop_port": "pop_port",
}


class _HelpFormatter(DjangoHelpFormatter):
    """Django's formatter: paragraphs wrapped to the terminal, indented lines (the exit-status
    table of the epilog) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            line
            if not line or line[:1].isspace()
            else textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
            for line in text.splitlines()
        )


def exit_codes_text() -> str:
    lines = [_("exit status:")]
    lines += [f"  {status.code:>2}  {status.meaning}" for status in EXIT_STATUSES]
    return "\n".join(lines)


def _columns(text: str) -> int:
    """Terminal columns of ``text``: Japanese (wide) characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


class Command(ReportingCommand):
    help = (
        "Test the SMTP configuration the way the backend uses it, one step at a time "
        "(configuration, DNS, TCP, TLS, EHLO, sign-in, optional test message, QUIT), and "
        "say which step failed, why, and what to change. Never hangs: every step is "
        "bounded by the timeout."
    )
    requires_system_checks: list[str] = []  # a broken mail setting must not stop its own diagnosis

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.description = _(
            "Test the SMTP configuration the way the backend uses it, one step at a time "
            "(configuration, DNS, TCP, TLS, EHLO, sign-in, optional test message, QUIT), and "
            "say which step failed, why, and what to change. Never hangs: every step is "
            "bounded by the timeout. The password is read only from the configuration or the "
            "environment, never from the command line, and is never printed. With --round-trip it "
            "also proves delivery: it sends a tagged message to the account itself and finds it in "
            "the mailbox over IMAP (or POP3), then says where it landed and how."
        )
        parser.epilog = exit_codes_text()
        parser.formatter_class = _HelpFormatter
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--using",
            metavar="ALIAS",
            help=_("Test the mailer MAILERS[ALIAS] (Django 6.1+) instead of the EMAIL_* settings."),
        )
        parser.add_argument(
            "--account",
            metavar="NAME",
            help=_("Test the Gmail account stored in the database under NAME (as account=NAME would)."),
        )
        parser.add_argument("--host", help=_("Override the SMTP host."))
        parser.add_argument("--port", type=int, help=_("Override the SMTP port."))
        parser.add_argument("--username", help=_("Override the username (the password comes from the configuration)."))
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--tls", action="store_true", help=_("Use STARTTLS (port 587), overriding the configuration.")
        )
        mode.add_argument(
            "--ssl", action="store_true", help=_("Use implicit TLS (port 465), overriding the configuration.")
        )
        parser.add_argument(
            "--timeout",
            type=float,
            metavar="SECONDS",
            help=_("Seconds each step may take (default: the configuration's)."),
        )
        parser.add_argument(
            "--cafile", metavar="FILE", help=_("A CA bundle (PEM) to verify the server's certificate with.")
        )
        parser.add_argument(
            "--send-to",
            metavar="ADDRESS",
            action="append",
            default=[],
            help=_("Also send a real test message to ADDRESS (may be repeated)."),
        )
        parser.add_argument(
            "--from",
            dest="from_email",
            metavar="ADDRESS",
            help=_("The From address of the test messages (default: DEFAULT_FROM_EMAIL for --round-trip)."),
        )
        trip = parser.add_argument_group(_("delivery (the round trip)"))
        trip.add_argument(
            "--round-trip",
            action="store_true",
            help=_(
                "After the SMTP steps, send a tagged message to the account itself and wait until it "
                "arrives in the mailbox (IMAP, or POP3): the folder, the delay, the From as delivered, "
                "SPF/DKIM/DMARC and TLS. The message is deleted afterwards."
            ),
        )
        trip.add_argument(
            "--round-trip-timeout",
            type=float,
            metavar="SECONDS",
            help=_("How long to wait for the message to arrive (default %(default)s s).")
            % {"default": f"{roundtrip.DEFAULT_TIMEOUT:g}"},
        )
        trip.add_argument(
            "--round-trip-via",
            choices=roundtrip.VIA,
            help=_("Read the mailbox over IMAP (default) or POP3 (sees only the inbox; see the docs)."),
        )
        trip.add_argument("--keep", action="store_true", help=_("Leave the test message in the mailbox."))
        trip.add_argument("--imap-host", help=_("Override the IMAP host (default: imap.gmail.com for Gmail)."))
        trip.add_argument("--imap-port", type=int, help=_("Override the IMAP port (implicit TLS; default 993)."))
        trip.add_argument("--pop-host", help=_("Override the POP3 host (default: pop.gmail.com for Gmail)."))
        trip.add_argument("--pop-port", type=int, help=_("Override the POP3 port (implicit TLS; default 995)."))
        parser.add_argument(
            "--json",
            action="store_true",
            help=_("Print one JSON document instead of text (see the schema in the docs)."),
        )
        parser.add_argument(
            "--lang", metavar="CODE", help=_("Language of the output, e.g. 'ja' (default: LANGUAGE_CODE).")
        )

    # -- entry point ---------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        language = options.get("lang")
        if language:
            if not translation.check_for_language(language):
                raise CommandError(
                    _("Unknown language %(code)s for --lang.") % {"code": repr(language)},
                    returncode=diagnose.EXIT_USAGE,
                )
            with translation.override(language):
                self._handle(options)
        else:
            self._handle(options)

    def _handle(self, options: dict[str, Any]) -> None:
        self.verbosity = int(options.get("verbosity", 1))
        self.as_json = bool(options.get("json"))
        send_to = list(options.get("send_to") or [])
        for address in send_to:
            try:
                validate_email(address)
            except ValidationError:
                raise CommandError(
                    _("--send-to %(address)s is not an e-mail address.") % {"address": repr(address)},
                    returncode=diagnose.EXIT_USAGE,
                ) from None
        from_email = options.get("from_email")
        if from_email is not None:
            try:
                validate_email(from_email)
            except ValidationError:
                raise CommandError(
                    _("--from %(address)s is not an e-mail address.") % {"address": repr(from_email)},
                    returncode=diagnose.EXIT_USAGE,
                ) from None
        trip = self._round_trip(options)
        alias = self._alias(options.get("using"))
        try:
            config = self._resolve(options, alias)
        except GmailConfigError as exc:
            result = diagnose.config_error(exc, config_name=mailer_name(alias))
            self._finish(result)
            return
        if self.show:
            self._print_config(config, mailbox=trip.via if trip is not None else "")
        result = diagnose.run_check(
            config,
            send_to=send_to,
            from_email=from_email,
            on_step_start=self._step_started if self.show else None,
            on_step_end=self._step_ended if self.show else None,
            round_trip=trip,
        )
        self._finish(result)

    def _round_trip(self, options: dict[str, Any]) -> roundtrip.RoundTrip | None:
        """The round trip asked for, or None; its options without --round-trip are a usage error."""
        given = [
            flag
            for flag, key in (
                ("--round-trip-timeout", "round_trip_timeout"),
                ("--round-trip-via", "round_trip_via"),
                ("--keep", "keep"),
            )
            if options.get(key) not in (None, False)
        ]
        if not options.get("round_trip"):
            if given:
                raise CommandError(
                    _("%(option)s needs --round-trip.") % {"option": given[0]}, returncode=diagnose.EXIT_USAGE
                )
            return None
        timeout = options.get("round_trip_timeout")
        if timeout is not None and not timeout > 0:
            raise CommandError(
                _("--round-trip-timeout must be a number of seconds above 0."), returncode=diagnose.EXIT_USAGE
            )
        return roundtrip.RoundTrip(
            via=options.get("round_trip_via") or roundtrip.IMAP,
            timeout=timeout if timeout is not None else roundtrip.DEFAULT_TIMEOUT,
            keep=bool(options.get("keep")),
            from_email=options.get("from_email"),
        )

    @property
    def show(self) -> bool:
        """Print progress as text (not with --json, not with -v 0)."""
        return not self.as_json and self.verbosity >= 1

    # -- configuration -------------------------------------------------------------------

    def _alias(self, alias: str | None) -> str | None:
        if alias is None:
            return default_alias()
        if django.VERSION < (6, 1):
            raise CommandError(
                _(
                    "--using needs Django 6.1 or later (MAILERS); this is Django %(version)s. "
                    "Without --using, gmail_check tests the EMAIL_* settings."
                )
                % {"version": django.get_version()},
                returncode=diagnose.EXIT_CODES["config"],
            )
        mailers = configured_mailers()
        if alias not in mailers:
            known = ", ".join(repr(name) for name in mailers) or _("none")
            raise CommandError(
                _("There is no mailer %(alias)s in MAILERS (defined: %(known)s).")
                % {"alias": repr(alias), "known": known},
                returncode=diagnose.EXIT_CODES["config"],
            )
        return alias

    def _resolve(self, options: dict[str, Any], alias: str | None) -> SmtpConfig:
        overrides: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for flag, option in OVERRIDES.items():
            if options.get(flag) is not None:
                overrides[option] = options[flag]
                origins[option] = f"--{flag}"
        if options.get("account"):
            overrides["account"] = options["account"]  # the resolver names it "stored account ..."
        if options.get("tls") or options.get("ssl"):
            flag = "--tls" if options.get("tls") else "--ssl"
            overrides["use_tls"] = bool(options.get("tls"))
            overrides["use_ssl"] = bool(options.get("ssl"))
            origins["use_tls"] = origins["use_ssl"] = flag
        return resolve_with_overrides(overrides, origins, alias=alias, accounts=account_options)

    def _print_config(self, config: SmtpConfig, *, mailbox: str = "") -> None:
        if config.alias:
            heading = _("Configuration of the mailer MAILERS[%(alias)s]:") % {"alias": repr(config.alias)}
        else:
            heading = _("Configuration (EMAIL_* settings):")
        self.stdout.write(self.style.MIGRATE_HEADING(heading))
        rows = config.describe(mailbox=mailbox)
        width = max(len(name) for name, _shown, _value in rows)
        value_width = min(40, max(_columns(shown) for _name, shown, _value in rows))
        for name, shown, value in rows:
            padding = " " * max(0, value_width - _columns(shown))
            self.stdout.write(f"  {name:<{width}}  {shown}{padding}  {self._source(value)}")

    def _source(self, value: Value) -> str:
        names = {
            conf.SOURCE_ARGUMENT: _("argument"),
            conf.SOURCE_OPTIONS: _("MAILERS OPTIONS"),
            conf.SOURCE_SETTINGS: _("settings"),
            conf.SOURCE_ENVIRONMENT: _("environment"),
            conf.SOURCE_DEFAULT: _("default"),
            SOURCE_COMMAND_LINE: _("command line"),
        }
        kind = names.get(value.source, value.source)
        origin = str(value.origin)
        if value.source == conf.SOURCE_DEFAULT or origin == kind:
            return origin
        return f"{origin} ({kind})"

    # -- progress ------------------------------------------------------------------------

    def _step_started(self, step: diagnose.Step) -> None:
        self.stdout.write(f"{step.title}... ", ending="")
        self.stdout.flush()

    def _step_ended(self, step: diagnose.Step) -> None:
        marks = {
            diagnose.OK: self.style.SUCCESS(_("OK")),
            diagnose.WARNING: self.style.WARNING(_("WARNING")),
            diagnose.FAILED: self.style.ERROR(_("FAIL")),
            diagnose.SKIPPED: self.style.NOTICE(_("skipped")),
        }
        timing = "" if step.status == diagnose.SKIPPED else f" ({step.duration or 0:.2f}s)"
        self.stdout.write(f"{marks[step.status]}{timing}")
        for detail in step.details:
            for line in detail.splitlines():
                self.stdout.write(f"    {line}")
        if step.status == diagnose.FAILED and step.error and not any(step.error in d for d in step.details):
            for line in step.error.splitlines():
                self.stdout.write(self.style.ERROR(f"    {line}"))
        if step.status == diagnose.WARNING and step.cause is not None:  # a failure's cause ends the output
            if step.error:
                self.stdout.write(self.style.WARNING(f"    {step.error}"))
            for line in step.cause.lines():
                self.stdout.write(f"    {line}")
        if self.verbosity >= 3 and step.data:
            self.stdout.write(f"    data: {json.dumps(step.data, ensure_ascii=False, default=str)}")

    # -- the end -------------------------------------------------------------------------

    def _finish(self, result: diagnose.Diagnosis) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        elif self.verbosity >= 1:
            if result.config is None:  # resolve() refused the configuration: no live progress
                for step in result.steps:
                    self._step_started(step)
                    self._step_ended(step)
            if self.verbosity >= 2 and result.transcript.lines:
                self.stdout.write(self.style.MIGRATE_HEADING(_("SMTP conversation (credentials hidden):")))
                for direction, text in result.transcript_lines():
                    self.stdout.write(f"  {direction} {text}")
            if self.verbosity >= 2 and result.mailbox_transcript.lines:
                via = (result.round_trip or {}).get("via", roundtrip.IMAP)
                heading = (
                    _("IMAP conversation (credentials hidden):")
                    if via == roundtrip.IMAP
                    else _("POP3 conversation (credentials hidden):")
                )
                self.stdout.write(self.style.MIGRATE_HEADING(heading))
                for direction, text in result.mailbox_transcript_lines():
                    self.stdout.write(f"  {direction} {text}")
            self.stdout.write("")
            if result.ok:
                self._print_success(result)
            else:
                self._print_failure(result)
        if not result.ok:
            assert result.cause is not None
            title = self._failed_title(result)
            if self.verbosity >= 1 or self.as_json:
                message = _("%(step)s failed: %(summary)s [%(id)s]") % {
                    "step": title,
                    "summary": result.cause.summary,
                    "id": result.cause.id,
                }
            else:
                message = _("%(step)s failed: %(summary)s Fix: %(fix)s [%(id)s]") % {
                    "step": title,
                    "summary": result.cause.summary,
                    "fix": result.cause.fix,
                    "id": result.cause.id,
                }
            # With the Cause/Fix block printed, the command line shows no second "CommandError:" line.
            failure = ReportedError if self.show else CommandError
            raise failure(result.redact(message), returncode=result.exit_code)

    def _failed_title(self, result: diagnose.Diagnosis) -> str:
        step = result.step(result.failed_step or "")
        return step.title if step is not None else str(result.failed_step)

    def _print_success(self, result: diagnose.Diagnosis) -> None:
        config = result.config
        assert config is not None
        self.stdout.write(
            self.style.SUCCESS(
                _("All steps passed: Django can send mail through %(host)s:%(port)s with this configuration.")
                % {"host": config.host, "port": config.port}
            )
        )
        trip = result.round_trip
        if trip and trip.get("arrived"):
            self.stdout.write(
                self.style.SUCCESS(
                    _("Delivery proven: the test message arrived in %(folder)s after %(seconds).1f s.")
                    % {"folder": trip.get("folder", "?"), "seconds": trip.get("seconds", 0.0)}
                )
            )
            warned = [step for step in result.steps if step.status == diagnose.WARNING and step.cause]
            if warned:
                self.stdout.write(
                    self.style.WARNING(
                        _("But look at: %(steps)s.") % {"steps": ", ".join(str(step.title) for step in warned)}
                    )
                )
            return
        sent = result.step("send")
        if sent is not None and sent.status == diagnose.SKIPPED:
            self.stdout.write(_("Add --send-to ADDRESS to send a real test message."))
            self.stdout.write(_("Add --round-trip to prove that mail arrives (and where)."))

    def _print_failure(self, result: diagnose.Diagnosis) -> None:
        cause = result.cause
        assert cause is not None
        out = self.stdout
        out.write(
            self.style.ERROR(
                _("Failed at: %(step)s (exit status %(code)d)")
                % {"step": self._failed_title(result), "code": result.exit_code}
            )
        )
        for line in cause.lines():
            out.write(line)
        if result.unexpected:
            self._print_unexpected(result)
        elif self.verbosity < 2 and result.mailbox_transcript.lines:
            out.write(_("Run with -v 2 to see the SMTP and mailbox conversations."))
        elif self.verbosity < 2 and result.transcript.lines:
            out.write(_("Run with -v 2 to see the SMTP conversation."))

    def _print_unexpected(self, result: diagnose.Diagnosis) -> None:
        """A bug, not a mail problem: one line asking for a report; the traceback at -v 3."""
        if self.verbosity >= 3:
            self.stdout.write(result.unexpected.rstrip())
        self.stdout.write(
            self.style.ERROR(
                _(
                    "This is a bug in django-gmail-smtp, not a problem of your mail setup: please report it "
                    "at %(url)s with the output of this command run with -v 3."
                )
                % {"url": ISSUES_URL}
            )
        )
