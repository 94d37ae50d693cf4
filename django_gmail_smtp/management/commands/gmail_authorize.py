"""``manage.py gmail_authorize``: get an OAuth2 refresh token for Gmail SMTP, without the dead OOB flow.

The installed-app flow (authorization code + PKCE + ``state``) with a loopback redirect: a
listener on ``http://127.0.0.1:<port>/`` receives the browser's redirect. ``--headless`` (a
server without a browser) prints the address to open elsewhere and reads back, on stdin, the
address the browser was sent to (that page does not load; copy it from the address bar). The
code is useless without the PKCE verifier, which never leaves this process.

The refresh token is stored, encrypted, in a stored account (``--account NAME``), or printed as
the environment line to set. Nothing else secret is printed.
"""

from __future__ import annotations

import contextlib
import json
import sys
import webbrowser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from ... import conf, diagnose, oauth, oauth_flow
from ...exceptions import GmailConfigError, OAuthError
from ...oauth_receiver import LoopbackReceiver

HEADLESS_PORT = 8765
EXIT_DENIED = 1


class Command(BaseCommand):
    help = (
        "Get an OAuth2 refresh token for Gmail SMTP (scope https://mail.google.com/) with the "
        "installed-app flow and a loopback redirect, and store it in a stored account or print the "
        "environment line to set."
    )
    requires_system_checks: list[str] = []
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--account",
            metavar="NAME",
            help=_(
                "Stored account (Gmail SMTP, Gmail accounts) to authorize: its client ID and secret "
                "are used and the refresh token is stored in it, encrypted."
            ),
        )
        parser.add_argument(
            "--client-secrets",
            metavar="FILE",
            help=_("The client's JSON file downloaded from the Google Cloud console (client_secret_….json)."),
        )
        parser.add_argument(
            "--client-id",
            help=_(
                "The OAuth client ID (default: the configuration's). The client secret is never taken "
                "from the command line: it comes from --client-secrets, the stored account, "
                "GMAIL_SMTP['OAUTH_CLIENT_SECRET'] or GMAIL_SMTP_OAUTH_CLIENT_SECRET."
            ),
        )
        parser.add_argument(
            "--username",
            metavar="ADDRESS",
            help=_("The Gmail address to authorize (suggested to Google's sign-in page)."),
        )
        parser.add_argument(
            "--headless",
            action="store_true",
            help=_(
                "No browser here: print the address to open on another machine, then paste the address "
                "the browser was sent to (it does not load; copy it from the address bar)."
            ),
        )
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help=_(
                "Port of the loopback redirect http://127.0.0.1:PORT/ (default: any free port; %(port)s "
                "with --headless). A 'Web application' client needs exactly this address registered."
            )
            % {"port": HEADLESS_PORT},
        )
        parser.add_argument("--no-browser", action="store_true", help=_("Do not try to open a browser."))
        parser.add_argument(
            "--timeout",
            type=float,
            default=300.0,
            metavar="SECONDS",
            help=_("How long to wait for the browser (default 300)."),
        )

    # -- entry point ---------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = int(options.get("verbosity", 1))
        self.stdin = options.get("stdin") or sys.stdin
        try:
            oauth.require_library()
        except GmailConfigError as exc:
            raise CommandError(f"{exc.message} {exc.hint}", returncode=diagnose.EXIT_CODES["config"]) from None
        account = self._account(options.get("account"))
        client_id, client_secret, username = self._client(options, account)
        port = options.get("port")
        try:
            if options.get("headless"):
                code, request = self._headless(client_id, username, HEADLESS_PORT if port is None else port)
            else:
                code, request = self._loopback(client_id, username, port or 0, options)
            answer = oauth_flow.exchange_code(
                client_id,
                client_secret,
                code,
                redirect_uri=request.redirect_uri,
                code_verifier=request.code_verifier,
            )
        except oauth_flow.AuthorizationError as exc:
            raise CommandError(str(exc), returncode=EXIT_DENIED) from None
        except GmailConfigError as exc:
            raise CommandError(f"{exc.message} {exc.hint}", returncode=diagnose.EXIT_CODES["config"]) from None
        except OAuthError as exc:
            cause = getattr(exc, "cause", None)
            text = str(exc.args[0]) if exc.args else ""
            if cause is not None:
                text = f"{text} {cause.summary} {cause.fix} [{cause.id}]"
            raise CommandError(text, returncode=diagnose.EXIT_CODES["token"]) from None
        self._store(answer, account, client_id, client_secret)

    # -- where the client comes from -----------------------------------------------------

    def _account(self, name: str | None) -> Any:
        if not name:
            return None
        from ...models import GmailAccount

        account = GmailAccount.objects.filter(name=name).first()
        if account is None:
            names = ", ".join(repr(n) for n in GmailAccount.objects.values_list("name", flat=True)) or _("none")
            raise CommandError(
                _("There is no stored account %(name)r (stored accounts: %(names)s).") % {"name": name, "names": names},
                returncode=diagnose.EXIT_USAGE,
            )
        if account.auth_method != GmailAccount.AuthMethod.OAUTH2:
            raise CommandError(
                _(
                    "The stored account %(name)r signs in with an app password: choose OAuth2 for it in "
                    "the admin (with the client ID and secret) first."
                )
                % {"name": name},
                returncode=diagnose.EXIT_CODES["config"],
            )
        return account

    @sensitive_variables()
    def _client(self, options: dict[str, Any], account: Any) -> tuple[str, str, str]:
        """(client id, client secret, username) from the file, the account or the configuration."""
        client_id = client_secret = username = ""
        secrets_file = options.get("client_secrets")
        if secrets_file:
            client_id, client_secret = _read_client_secrets(Path(secrets_file))
        elif account is not None:
            try:
                parts = account.get_oauth()  # only while the account points where they were entered for
            except GmailConfigError as exc:
                raise CommandError(str(exc), returncode=diagnose.EXIT_CODES["config"]) from None
            client_id, client_secret = parts["client_id"], parts["client_secret"]
        else:
            from ...accounts import account_options

            try:
                config = conf.resolve({}, accounts=account_options)
            except GmailConfigError:
                config = None
            if config is not None:
                client_id, client_secret = config.oauth_client_id, config.oauth_client_secret
                username = config.username
        if account is not None:
            username = account.username
        client_id = options.get("client_id") or client_id
        username = options.get("username") or username
        if not client_id or not client_secret:
            raise CommandError(
                _(
                    "No OAuth client: give --client-secrets FILE (downloaded from the Google Cloud "
                    "console, APIs & Services, Credentials), --account NAME, or set "
                    "GMAIL_SMTP_OAUTH_CLIENT_ID and GMAIL_SMTP_OAUTH_CLIENT_SECRET."
                ),
                returncode=diagnose.EXIT_CODES["config"],
            )
        return client_id, client_secret, username

    # -- the two ways back from the browser ----------------------------------------------

    def _say(self, text: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(text)

    def _show_url(self, url: str, username: str) -> None:
        if username:
            self._say(_("Open this address in a browser and sign in as %(username)s:") % {"username": username})
        else:
            self._say(_("Open this address in a browser and sign in with the Gmail account to send from:"))
        self.stdout.write(f"    {url}")
        self.stdout.flush()

    def _loopback(
        self, client_id: str, username: str, port: int, options: dict[str, Any]
    ) -> tuple[str, oauth_flow.AuthorizationRequest]:
        try:
            receiver = LoopbackReceiver(port)
        except OSError as exc:
            raise CommandError(
                _("Cannot listen on 127.0.0.1:%(port)s (%(error)s); pick another --port or use --headless.")
                % {"port": port, "error": exc.strerror or exc},
                returncode=diagnose.EXIT_USAGE,
            ) from None
        with receiver:
            request = oauth_flow.authorization_url(client_id, receiver.redirect_uri, login_hint=username)
            self._show_url(request.url, username)
            if not options.get("no_browser"):
                with contextlib.suppress(Exception):  # no browser here: the printed address is enough
                    webbrowser.open(request.url)
            self._say(_("Waiting for the browser to come back to %(uri)s ...") % {"uri": receiver.redirect_uri})
            query = receiver.wait(float(options.get("timeout") or 300.0))
        if query is None:
            raise oauth_flow.AuthorizationError(
                _("No answer from the browser in time. Run the command again (or use --headless).")
            )
        return oauth_flow.parse_redirect(query, request.state), request

    def _headless(self, client_id: str, username: str, port: int) -> tuple[str, oauth_flow.AuthorizationRequest]:
        request = oauth_flow.authorization_url(client_id, f"http://127.0.0.1:{port}/", login_hint=username)
        self._show_url(request.url, username)
        self._say(
            _(
                "After you allow access, the browser goes to http://127.0.0.1:%(port)s/?… and shows an "
                "error page (nothing listens there). Copy that whole address from the address bar and "
                "paste it here:"
            )
            % {"port": port}
        )
        self.stdout.flush()
        line = self.stdin.readline()
        if not line.strip():
            raise oauth_flow.AuthorizationError(_("No address was pasted."))
        return oauth_flow.parse_redirect(line, request.state), request

    # -- the result ----------------------------------------------------------------------

    @sensitive_variables()
    def _store(self, answer: dict[str, Any], account: Any, client_id: str, client_secret: str) -> None:
        refresh_token = str(answer.get("refresh_token") or "")
        if not refresh_token:
            raise CommandError(
                _(
                    "Google returned no refresh token. Remove the app's access at "
                    "https://myaccount.google.com/connections and run the command again."
                ),
                returncode=diagnose.EXIT_CODES["token"],
            )
        if not oauth_flow.granted_mail_scope(answer):
            raise CommandError(
                _(
                    "The Gmail permission was not granted (scope https://mail.google.com/). Run the "
                    "command again and leave “Read, compose, send and permanently delete all your "
                    "email from Gmail” ticked."
                ),
                returncode=diagnose.EXIT_CODES["token"],
            )
        expires = answer.get("refresh_token_expires_in")
        if account is not None:
            # The client the token was issued to, all bound to the account's destination now.
            account.set_oauth(client_id=client_id, client_secret=client_secret, refresh_token=refresh_token)
            account.save()
            self.stdout.write(
                self.style.SUCCESS(
                    _("Authorized: the refresh token is stored, encrypted, in the account %(name)r.")
                    % {"name": account.name}
                )
            )
            self._say(_("Test it with: manage.py gmail_check (with the account configured)."))
        else:
            self._say(
                self.style.SUCCESS(_("Authorized. Set this environment variable where Django runs (keep it secret):"))
            )
            self.stdout.write(f"GMAIL_SMTP_OAUTH_REFRESH_TOKEN={refresh_token}")
            self._say(_("Then test it with: manage.py gmail_check"))
        if isinstance(expires, int | float) and expires > 0:
            self._say(
                self.style.WARNING(
                    _(
                        "This refresh token expires in %(days)d days (an app in “Testing” status, "
                        "or time-limited access). Publish the app (OAuth consent screen, In production) "
                        "for tokens that last."
                    )
                    % {"days": max(1, round(expires / 86400))}
                )
            )


@sensitive_variables()
def _read_client_secrets(path: Path) -> tuple[str, str]:
    """(client id, client secret) from Google's client JSON (``{"installed": {...}}`` or ``{"web": {...}}``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError(
            _("Cannot read the client file %(path)s: %(error)s") % {"path": path, "error": type(exc).__name__},
            returncode=diagnose.EXIT_USAGE,
        ) from None
    section = data.get("installed") or data.get("web") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not section.get("client_id") or not section.get("client_secret"):
        raise CommandError(
            _(
                '%(path)s is not an OAuth client file: expected {"installed": {"client_id": …, '
                '"client_secret": …}} (or "web") as the Google Cloud console downloads it.'
            )
            % {"path": path},
            returncode=diagnose.EXIT_USAGE,
        )
    return str(section["client_id"]), str(section["client_secret"])
