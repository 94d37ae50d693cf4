"""Validation rules over a resolved configuration, written once.

Each rule is a plain function over a resolved :class:`~django_gmail_smtp.conf.SmtpConfig`
(and, for project-level rules, plain setting values) returning :class:`Problem`\\ s.
The system checks, the admin form and ``gmail_check`` all call them, so a
mistake reads the same everywhere: one sentence naming the setting and where its
value came from, and a hint that says what to change. Ids are stable and never
reused (see :data:`CHECK_IDS`).

What callers use:

- :func:`check_config` -- every problem of one resolved configuration;
- :func:`check_senders` -- ``DEFAULT_FROM_EMAIL`` / ``SERVER_EMAIL`` against the account;
- :func:`check_app_settings` -- the ``GMAIL_SMTP`` dict itself;
- :func:`check_deploy_config`, :func:`check_transcript` and :func:`check_email_url_reporting` --
  production-only findings;
- :func:`problem_from_error` -- a :class:`GmailConfigError` raised by ``conf.resolve()``;
- :func:`raise_for_blocking` -- what the backend refuses to start with.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.functional import Promise, lazy
from django.utils.translation import gettext_lazy as _

from .app_settings import APP_SETTINGS, NOT_A_DICT, NOT_A_DICT_HINT, validate_keys
from .conf import (
    GMAIL_DEFAULT_LABEL,
    LEGACY_SETTINGS,
    MAILBOX_OPTIONS,
    OAUTH_OPTIONS,
    SOURCE_DATABASE,
    SOURCE_DEFAULT,
    SOURCE_FORM,
    SmtpConfig,
    url_password,
)
from .exceptions import GmailConfigError
from .hosts import endpoint_is_safe, is_gmail_relay, is_loopback, valid_host

__all__ = [
    "BLOCKING_RULES",
    "CHECK_IDS",
    "CONFIG_RULES",
    "ERROR",
    "PORT_RANGE",
    "TIMEOUT_LIMIT",
    "WARNING",
    "Problem",
    "check_app_settings",
    "check_config",
    "check_deploy_config",
    "check_email_url_reporting",
    "check_senders",
    "check_transcript",
    "from_form",
    "oauth_endpoint_problem",
    "oauth_library_available",
    "oauth_library_problem",
    "problem_from_error",
    "raise_first_error",
    "raise_for_blocking",
    "setting_name",
    "signs_in_with_password",
    "to_error",
    "unsilenced",
    "valid_host",
]

ERROR, WARNING = "error", "warning"

# Every id this app reports, with what it means. Never reuse an id: retire it
# with a comment ("gmail_smtp.W009: reserved, was ...") instead.
CHECK_IDS: Mapping[str, str] = {
    "gmail_smtp.E001": "STARTTLS and implicit TLS are both on",
    "gmail_smtp.E002": "neither STARTTLS nor implicit TLS is on for a Gmail host",
    "gmail_smtp.E003": "port 465 with STARTTLS (django-environ's smtps:// trap)",
    "gmail_smtp.E004": "port 587 with implicit TLS",
    "gmail_smtp.E005": "no username for a Gmail host",
    "gmail_smtp.E006": "the username is not an e-mail address",
    "gmail_smtp.E007": "no password for a Gmail host",
    "gmail_smtp.E008": "the timeout is zero or negative, or longer than 300 seconds",
    "gmail_smtp.E009": "EMAIL_URL is not a valid email URL",
    "gmail_smtp.E010": "the port or the timeout is not a number, or the port is not between 1 and 65535",
    "gmail_smtp.E011": "an unknown key in GMAIL_SMTP",
    "gmail_smtp.E012": "GMAIL_SMTP is not a dict",
    "gmail_smtp.E013": "GMAIL_SMTP['FROM_ALIASES'] is not a list of e-mail addresses",
    "gmail_smtp.E014": "OAuth2 sign-in is configured but google-auth (the 'oauth' extra) is not installed",
    "gmail_smtp.E015": "OAuth2 sign-in is configured without a refresh token",
    "gmail_smtp.E016": "OAuth2 sign-in is configured without a client id or client secret",
    "gmail_smtp.E017": "the authentication method is not 'app_password' or 'oauth2'",
    "gmail_smtp.E018": "an OAuth2 endpoint in GMAIL_SMTP is not https:// (localhost and loopback IPs excepted)",
    "gmail_smtp.E019": "GMAIL_SMTP['ENCRYPTION_KEYS'] is not a list of valid Fernet keys",
    "gmail_smtp.E020": "a stored account's secret was entered for another host, port, security, username "
    "or token endpoint",
    "gmail_smtp.E021": "a stored account's secret is bound to no destination (saved before the binding, not upgraded)",
    "gmail_smtp.E022": "the configuration names a stored account that does not exist",
    "gmail_smtp.E023": "the stored account is disabled",
    "gmail_smtp.E024": "the stored app-password account has no app password",
    "gmail_smtp.E025": "a stored account's secret cannot be decrypted with the current keys, or there is no key at all",
    "gmail_smtp.W001": "the password does not look like a 16-letter app password",
    "gmail_smtp.W002": "the host is not a Gmail server (silent for loopback hosts)",
    "gmail_smtp.W003": "the port is not one of Gmail's",
    "gmail_smtp.W004": "the timeout is longer than 60 seconds",
    "gmail_smtp.W005": "DEFAULT_FROM_EMAIL is not the account or a declared alias",
    "gmail_smtp.W006": "SERVER_EMAIL is not the account or a declared alias",
    "gmail_smtp.W007": "GMAIL_SMTP['TRANSCRIPT'] is on (deploy)",
    "gmail_smtp.W008": "the host is a loopback address while DEBUG is False (deploy)",
    "gmail_smtp.W009": "a password is configured too, but OAuth2 is used: the password is ignored",
    "gmail_smtp.W010": "EMAIL_URL holds a password that the exception reporter filter would show (deploy)",
    "gmail_smtp.W020": "the host is not a valid host name or IP address",
}

APP_PASSWORDS_PAGE = "https://myaccount.google.com/apppasswords"
MAX_TIMEOUT = 60.0  # longer: W004
# What can be used at all, for the checks, gmail_check and the admin form alike.
PORT_RANGE = (1, 65535)
TIMEOUT_LIMIT = 300.0  # seconds: the admin form's cap; longer typed there (or not finite anywhere): E008
SETTINGS_TIMEOUT_LIMIT = 86400.0  # seconds: from settings, longer than a day cannot be meant (E008); over 60 s W004


@dataclass(frozen=True)
class Problem:
    """One finding: a stable id (``gmail_smtp.E003``), one sentence, and the fix.

    ``option`` names the option it is about when the id alone does not (E010: port or timeout).
    """

    id: str
    level: str
    message: str | Promise
    hint: str | Promise
    option: str = ""

    @property
    def is_error(self) -> bool:
        return self.level == ERROR


Rule = Callable[[SmtpConfig], list[Problem]]


def _interpolate(template: str, values: Mapping[str, Any]) -> str:
    return str(template) % {key: str(value) for key, value in values.items()}


# Interpolation done when the text is shown, so it is translated into the
# language active then (the admin's request, ``manage.py check``), not now.
_format = cast(Callable[..., Promise], lazy(_interpolate, str))


def _text(template: str | Promise, **values: Any) -> Promise:
    """A translatable sentence with ``%(name)s`` placeholders, filled in lazily."""
    return _format(template, values)


def _quote(value: Any) -> str:
    return repr(str(value))


# -- naming settings and where values came from ------------------------------------------


def from_form(config: SmtpConfig, option: str = "host") -> bool:
    """True when ``option`` was typed in the admin's account form (messages then name its fields)."""
    value = config.provenance.get(option)
    return value is not None and value.source == SOURCE_FORM


def setting_name(config: SmtpConfig, option: str) -> str:
    """The setting a user edits to change ``option`` for this configuration.

    ``MAILERS['alias']['OPTIONS']['port']`` on Django 6.1 with ``MAILERS``,
    ``EMAIL_PORT`` otherwise; in the admin's form, the field (“the “Port” field”).
    """
    if from_form(config, option):
        return str(config.provenance[option].origin)
    if config.alias is not None:
        return f"MAILERS[{config.alias!r}]['OPTIONS'][{option!r}]"
    if option in OAUTH_OPTIONS or option in MAILBOX_OPTIONS:  # no EMAIL_* setting: this app's own
        return f"GMAIL_SMTP[{option.upper()!r}]"
    return LEGACY_SETTINGS.get(option, option)


def _mailer(config: SmtpConfig) -> str:
    return f"MAILERS[{config.alias!r}]" if config.alias is not None else ""


def _came_from(config: SmtpConfig, option: str, origin: str) -> bool:
    value = config.provenance.get(option)
    return value is not None and value.origin == origin


def _origin(config: SmtpConfig, option: str) -> str | Promise:
    """Where the value of ``option`` came from, naming the mailer when it is a MAILERS one."""
    value = config.provenance.get(option)
    if value is None or value.source == SOURCE_DEFAULT:
        origin: str | Promise = (
            _("Gmail's default") if value and value.origin == GMAIL_DEFAULT_LABEL else _("the default")
        )
    else:
        origin = value.origin
    if config.alias is None or str(origin).startswith("MAILERS["):
        return origin
    return _text(_("%(origin)s, for %(mailer)s"), origin=origin, mailer=_mailer(config))


def _named(config: SmtpConfig, option: str) -> str | Promise:
    """Where ``option`` was set, or the setting to set it in when it was not."""
    value = config.provenance.get(option)
    if value is None or value.source == SOURCE_DEFAULT:
        return setting_name(config, option)
    return _origin(config, option)


def _is_email(address: str) -> bool:
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


# -- rules over one resolved configuration ------------------------------------------------


def signs_in_with_password(config: SmtpConfig) -> bool:
    """True when this configuration signs in with a password, False with OAuth2 (XOAUTH2).

    False waives E007 (no password) and W001 (not an app password); the OAuth2
    rules (E014-E016, W009) apply instead.
    """
    return not config.uses_oauth2


def check_tls_on(config: SmtpConfig) -> list[Problem]:
    """E002: Gmail accepts no sign-in and no mail without TLS."""
    if not config.is_gmail or config.use_tls or config.use_ssl:
        return []
    return [
        Problem(
            "gmail_smtp.E002",
            ERROR,
            _text(
                _(
                    "STARTTLS (%(tls)s) and implicit TLS (%(ssl)s) are both off for the Gmail "
                    "host %(host)s, but Gmail requires TLS before signing in and sending."
                ),
                tls=_named(config, "use_tls"),
                ssl=_named(config, "use_ssl"),
                host=_quote(config.host),
            ),
            _text(
                _("Set %(tls)s = True with port 587, or %(ssl)s = True with port 465."),
                tls=setting_name(config, "use_tls"),
                ssl=setting_name(config, "use_ssl"),
            ),
        )
    ]


def check_tls_before_sign_in(config: SmtpConfig) -> list[Problem]:
    """E002 when there are credentials to send: the form of it the backend refuses to start with."""
    return check_tls_on(config) if config.has_credentials else []


def check_port_matches_mode(config: SmtpConfig) -> list[Problem]:
    """E003/E004: Gmail's 465 speaks TLS from the first byte, 587 expects STARTTLS."""
    if not config.is_gmail:
        return []
    message: Promise
    hint: Promise
    from_url = _came_from(config, "use_tls", "EMAIL_URL") or _came_from(config, "use_ssl", "EMAIL_URL")
    if config.port == 465 and config.use_tls:
        if from_url:
            message = _text(
                _(
                    "STARTTLS on port 465 (from %(origin)s) would hang, because django-environ's "
                    "smtps:// and smtp+tls:// schemes both mean STARTTLS while port 465 expects "
                    "implicit TLS."
                ),
                origin=_origin(config, "use_tls"),
            )
            hint = _(
                "Write EMAIL_URL as smtp+ssl://USER:APP_PASSWORD@smtp.gmail.com:465 for "
                "implicit TLS, or smtp+tls://USER:APP_PASSWORD@smtp.gmail.com:587 for STARTTLS."
            )
        else:
            message = _text(
                _(
                    "Port 465 (from %(port)s) expects implicit TLS, but STARTTLS is on "
                    "(%(tls)s), so the connection would hang."
                ),
                port=_origin(config, "port"),
                tls=_origin(config, "use_tls"),
            )
            if from_form(config, "use_tls"):
                hint = _text(
                    _(
                        "Choose implicit TLS in %(security)s to keep port 465, or enter 587 in %(port)s to keep STARTTLS."
                    ),
                    security=setting_name(config, "use_tls"),
                    port=setting_name(config, "port"),
                )
            else:
                hint = _text(
                    _(
                        "Set %(ssl)s = True and %(tls)s = False to keep port 465, or set %(port)s = 587 to keep "
                        "STARTTLS."
                    ),
                    ssl=setting_name(config, "use_ssl"),
                    tls=setting_name(config, "use_tls"),
                    port=setting_name(config, "port"),
                )
        return [Problem("gmail_smtp.E003", ERROR, message, hint)]
    if config.port == 587 and config.use_ssl:
        if from_url:
            message = _text(
                _(
                    "Implicit TLS on port 587 (from %(origin)s) would fail (WRONG_VERSION_NUMBER), "
                    "because django-environ's smtp+ssl:// scheme means implicit TLS while port 587 "
                    "expects STARTTLS."
                ),
                origin=_origin(config, "use_ssl"),
            )
            hint = _(
                "Write EMAIL_URL as smtp+tls://USER:APP_PASSWORD@smtp.gmail.com:587 for "
                "STARTTLS, or smtp+ssl://USER:APP_PASSWORD@smtp.gmail.com:465 for implicit TLS."
            )
        else:
            message = _text(
                _(
                    "Port 587 (from %(port)s) expects STARTTLS, but implicit TLS is on (%(ssl)s), "
                    "so the TLS handshake would fail (WRONG_VERSION_NUMBER)."
                ),
                port=_origin(config, "port"),
                ssl=_origin(config, "use_ssl"),
            )
            if from_form(config, "use_ssl"):
                hint = _text(
                    _(
                        "Choose STARTTLS in %(security)s to keep port 587, or enter 465 in %(port)s to keep implicit TLS."
                    ),
                    security=setting_name(config, "use_ssl"),
                    port=setting_name(config, "port"),
                )
            else:
                hint = _text(
                    _(
                        "Set %(tls)s = True and %(ssl)s = False to keep port 587, or set "
                        "%(port)s = 465 to keep implicit TLS."
                    ),
                    tls=setting_name(config, "use_tls"),
                    ssl=setting_name(config, "use_ssl"),
                    port=setting_name(config, "port"),
                )
        return [Problem("gmail_smtp.E004", ERROR, message, hint)]
    return []


def _needs_credentials(config: SmtpConfig) -> bool:
    """Gmail hosts need a sign-in; the Workspace relay may allow the server's IP instead."""
    if not config.is_gmail:
        return False
    relay = is_gmail_relay(config.host)
    return not (relay and not config.username and not config.password)


def check_credentials(config: SmtpConfig) -> list[Problem]:
    """E005/E006/E007: Django signs in only when both are set; Gmail needs the full address."""
    if not _needs_credentials(config):
        return []
    problems = []
    if not config.username:
        problems.append(
            Problem(
                "gmail_smtp.E005",
                ERROR,
                _text(
                    _(
                        "%(setting)s is not set, so mail for the Gmail host %(host)s would be sent "
                        "without signing in and Gmail would refuse it (530 Authentication Required)."
                    ),
                    setting=setting_name(config, "username"),
                    host=_quote(config.host),
                ),
                _text(
                    _(
                        "Set %(setting)s to the full address of the Gmail account that sends, for "
                        "example 'you@gmail.com'."
                    ),
                    setting=setting_name(config, "username"),
                ),
            )
        )
    elif not _is_email(config.username):
        example = f"{config.username}@gmail.com" if "@" not in config.username else "you@gmail.com"
        problems.append(
            Problem(
                "gmail_smtp.E006",
                ERROR,
                _text(
                    _(
                        "The Gmail username %(username)s (from %(origin)s) is not an e-mail address, "
                        "but Gmail signs in only with the account's full address."
                    ),
                    username=_quote(config.username),
                    origin=_origin(config, "username"),
                ),
                _text(
                    _("Set %(setting)s to the full address, for example %(example)s."),
                    setting=setting_name(config, "username"),
                    example=_quote(example),
                ),
            )
        )
    if signs_in_with_password(config) and not config.password:
        problems.append(
            Problem(
                "gmail_smtp.E007",
                ERROR,
                _text(
                    _(
                        "%(setting)s is not set, so mail for the Gmail host %(host)s would be sent "
                        "without signing in and Gmail would refuse it (530 Authentication Required)."
                    ),
                    setting=setting_name(config, "password"),
                    host=_quote(config.host),
                ),
                _text(
                    _(
                        "Create an app password at %(url)s (it needs 2-Step Verification) and set "
                        "%(setting)s to it, read from an environment variable rather than written "
                        "in settings.py."
                    ),
                    url=APP_PASSWORDS_PAGE,
                    setting=setting_name(config, "password"),
                ),
            )
        )
    return problems


def _looks_like_app_password(password: str) -> bool:
    letters = "".join(password.split())  # spaces as Google shows them, incl. non-breaking ones
    return len(letters) == 16 and letters.isascii() and letters.isalpha()


def check_app_password(config: SmtpConfig) -> list[Problem]:
    """W001: Gmail takes only app passwords (16 letters) over SMTP, never the account's own.

    The message never contains the password or any part of it.
    """
    if not config.is_gmail or not config.password or not signs_in_with_password(config):
        return []
    if _looks_like_app_password(config.password):
        return []
    if _came_from(config, "password", "EMAIL_URL"):
        hint = _text(
            _(
                "Create an app password at %(url)s and put its 16 letters in EMAIL_URL, writing "
                "'@' in the username as %%40 and any spaces as %%20; changing the account password "
                "revokes old app passwords."
            ),
            url=APP_PASSWORDS_PAGE,
        )
    else:
        hint = _text(
            _(
                "Create an app password at %(url)s and set %(setting)s to its 16 letters (the "
                "spaces may stay); changing the account password revokes old app passwords."
            ),
            url=APP_PASSWORDS_PAGE,
            setting=setting_name(config, "password"),
        )
    return [
        Problem(
            "gmail_smtp.W001",
            WARNING,
            _text(
                _(
                    "The password from %(origin)s is not 16 letters, so it does not look like a "
                    "Gmail app password, and Gmail rejects the account's own password "
                    "(535 BadCredentials or 534 InvalidSecondFactor)."
                ),
                origin=_origin(config, "password"),
            ),
            hint,
        )
    ]


def oauth_library_available() -> bool:
    """True when google-auth and requests (the ``oauth`` extra) can be imported: E014's test."""
    try:
        import google.oauth2.credentials  # noqa: F401
        import requests  # noqa: F401
    except ImportError:
        return False
    return True


OAUTH_INSTALL_COMMAND = 'pip install "django-gmail-smtp[oauth]"'


def _oauth_origin(config: SmtpConfig) -> str | Promise:
    """Where OAuth2 was chosen: the authentication method's setting, or the OAuth2 value that implied it."""
    method = config.provenance.get("auth_method")
    if method is not None and method.source != SOURCE_DEFAULT:
        return _origin(config, "auth_method")
    for option in ("oauth_refresh_token", "oauth_client_id"):
        if getattr(config, option):
            return _origin(config, option)
    return _origin(config, "auth_method")


def oauth_library_problem(origin: str | Promise | None = None) -> Problem:
    """E014: google-auth (the ``oauth`` extra) is missing; ``origin`` says where OAuth2 was chosen."""
    if origin is None:  # gmail_authorize and the admin's authorization: no configuration involved
        message: Promise = _("OAuth2 sign-in is used, but google-auth, which gets the access tokens, is not installed.")
    else:
        message = _text(
            _(
                "OAuth2 sign-in is configured (%(origin)s), but google-auth, which gets the "
                "access tokens, is not installed."
            ),
            origin=origin,
        )
    return Problem(
        "gmail_smtp.E014",
        ERROR,
        message,
        _text(_("Install the 'oauth' extra: %(command)s."), command=OAUTH_INSTALL_COMMAND),
    )


def check_oauth_library(config: SmtpConfig) -> list[Problem]:
    """E014: OAuth2 needs google-auth (the ``oauth`` extra); the backend refuses to start without it."""
    if not config.uses_oauth2 or oauth_library_available():
        return []
    return [oauth_library_problem(_oauth_origin(config))]


def _stored_account(config: SmtpConfig) -> str | None:
    """The name of the stored account that signs in with OAuth2, if one does."""
    value = config.provenance.get("auth_method")
    if config.account is None or value is None or value.source != SOURCE_DATABASE:
        return None
    return config.account


def _stored_oauth_problems(config: SmtpConfig, account: str) -> list[Problem]:
    """E016/E015 for a stored OAuth2 account: what to do on its admin page."""
    problems = []
    if not config.oauth_client_id or not config.oauth_client_secret:
        problems.append(
            Problem(
                "gmail_smtp.E016",
                ERROR,
                _text(
                    _("The stored Gmail account %(name)s signs in with OAuth2 but has no client id and client secret."),
                    name=_quote(account),
                ),
                _(
                    "Enter the OAuth client's id and secret (Google Cloud console, APIs & Services, "
                    "Credentials) on the account's admin page (Gmail SMTP, Gmail accounts)."
                ),
            )
        )
    elif not config.oauth_refresh_token:  # a refresh token belongs to a client: that comes first
        problems.append(
            Problem(
                "gmail_smtp.E015",
                ERROR,
                _text(
                    _("The stored Gmail account %(name)s signs in with OAuth2 but has not been authorized yet."),
                    name=_quote(account),
                ),
                _text(
                    _(
                        'Click "Authorize with Google" on the account\'s admin page, or run '
                        "'manage.py gmail_authorize --account %(name)s'."
                    ),
                    name=account,
                ),
            )
        )
    return problems


def check_oauth_credentials(config: SmtpConfig) -> list[Problem]:
    """E015/E016/W009: what XOAUTH2 needs -- a refresh token, and the client that issued it."""
    if not config.uses_oauth2:
        return []
    account = _stored_account(config)
    if account is not None:
        return _stored_oauth_problems(config, account)
    problems = []
    if not config.oauth_refresh_token:
        problems.append(
            Problem(
                "gmail_smtp.E015",
                ERROR,
                _text(
                    _(
                        "OAuth2 sign-in is configured (%(origin)s), but %(setting)s is not set, so "
                        "the backend could not get an access token and would not sign in."
                    ),
                    origin=_oauth_origin(config),
                    setting=_named(config, "oauth_refresh_token"),
                ),
                _text(
                    _(
                        "Save the account, then use its “Authorize with Google” button; or paste a "
                        "refresh token printed by 'manage.py gmail_authorize' in %(setting)s."
                    )
                    if from_form(config, "oauth_refresh_token")
                    else _(
                        "Run 'manage.py gmail_authorize' to get a refresh token and set it in the "
                        "GMAIL_SMTP_OAUTH_REFRESH_TOKEN environment variable (or %(setting)s); for a "
                        'stored account use its "Authorize with Google" button in the admin.'
                    ),
                    setting=setting_name(config, "oauth_refresh_token"),
                ),
            )
        )
    missing = [name for name in ("oauth_client_id", "oauth_client_secret") if not getattr(config, name)]
    if missing:
        problems.append(
            Problem(
                "gmail_smtp.E016",
                ERROR,
                _text(
                    _(
                        "OAuth2 sign-in is configured (%(origin)s), but %(missing)s is not set, and "
                        "Google issues access tokens only to the client a refresh token belongs to."
                    ),
                    origin=_oauth_origin(config),
                    missing=" and ".join(str(_named(config, name)) for name in missing),
                ),
                _text(
                    _(
                        "Copy the client id and client secret of the OAuth client from the Google "
                        "Cloud console (APIs & Services, Credentials) into %(client_id)s and "
                        "%(client_secret)s."
                    )
                    if from_form(config, "oauth_client_secret")
                    else _(
                        "Copy the client id and client secret of the OAuth client from the Google "
                        "Cloud console (APIs & Services, Credentials) into %(client_id)s and "
                        "%(client_secret)s (or the environment variables GMAIL_SMTP_OAUTH_CLIENT_ID "
                        "and GMAIL_SMTP_OAUTH_CLIENT_SECRET)."
                    ),
                    client_id=setting_name(config, "oauth_client_id"),
                    client_secret=setting_name(config, "oauth_client_secret"),
                ),
            )
        )
    if config.password:
        problems.append(
            Problem(
                "gmail_smtp.W009",
                WARNING,
                _text(
                    _(
                        "A password is set (%(password)s), but this configuration signs in with "
                        "OAuth2 (%(origin)s), so the password is ignored."
                    ),
                    password=_origin(config, "password"),
                    origin=_oauth_origin(config),
                ),
                _text(
                    _(
                        "Remove %(setting)s, or set the authentication method to 'app_password' "
                        "(auth_method, GMAIL_SMTP['AUTH_METHOD']) to sign in with it."
                    ),
                    setting=setting_name(config, "password"),
                ),
            )
        )
    return problems


def check_host(config: SmtpConfig) -> list[Problem]:
    """W002: this backend is for Gmail; loopback hosts (the sandbox) are fine."""
    if config.is_gmail or is_loopback(config.host) or not valid_host(config.host):
        return []  # an invalid host name is W020's to report
    return [
        Problem(
            "gmail_smtp.W002",
            WARNING,
            _text(
                _(
                    "The SMTP host %(host)s (from %(origin)s) is not a Gmail server, so this "
                    "backend's Gmail defaults and checks do not fit it."
                ),
                host=_quote(config.host),
                origin=_origin(config, "host"),
            ),
            _text(
                _(
                    "Enter smtp.gmail.com in %(setting)s; if you use another server on purpose, add "
                    "'gmail_smtp.W002' to SILENCED_SYSTEM_CHECKS in the settings to stop this warning."
                )
                if from_form(config, "host")
                else _(
                    "Set %(setting)s = 'smtp.gmail.com'; if you use this backend with another "
                    "server on purpose, add 'gmail_smtp.W002' to SILENCED_SYSTEM_CHECKS."
                ),
                setting=setting_name(config, "host"),
            ),
        )
    ]


def check_host_syntax(config: SmtpConfig) -> list[Problem]:
    """W020: a host that no DNS lookup can find (a typo, a URL, a space): said before connecting."""
    if valid_host(config.host):
        return []
    return [
        Problem(
            "gmail_smtp.W020",
            WARNING,
            _text(
                _(
                    "The SMTP host %(host)s (from %(origin)s) is not a host name or an IP address, so no DNS lookup can find it."
                ),
                host=_quote(config.host),
                origin=_origin(config, "host"),
            ),
            _text(
                _(
                    "Set %(setting)s to the server's name alone, in letters, digits, hyphens and dots, "
                    "for example 'smtp.gmail.com'."
                ),
                setting=setting_name(config, "host"),
            ),
            option="host",
        )
    ]


def check_port_range(config: SmtpConfig) -> list[Problem]:
    """E010: a TCP port is a number from 1 to 65535; anything else cannot be connected to."""
    low, high = PORT_RANGE
    if low <= config.port <= high:
        return []
    return [
        Problem(
            "gmail_smtp.E010",
            ERROR,
            _text(
                _("The SMTP port %(port)s (from %(origin)s) is not between %(low)s and %(high)s."),
                port=config.port,
                origin=_origin(config, "port"),
                low=low,
                high=high,
            ),
            _text(_("Set %(setting)s to 587 (STARTTLS) or 465 (implicit TLS)."), setting=setting_name(config, "port")),
            option="port",
        )
    ]


def check_port(config: SmtpConfig) -> list[Problem]:
    """W003: Gmail listens on 587 (STARTTLS) and 465 (implicit TLS); the relay also on 25.

    A port left to the default is not reported: it follows the TLS mode, and E002
    already reports a Gmail host without TLS (whose default port is 25).
    """
    port = config.provenance.get("port")
    if not config.is_gmail or port is None or port.source == SOURCE_DEFAULT or check_port_range(config):
        return []
    relay = is_gmail_relay(config.host)
    if config.port in ((25, 465, 587) if relay else (465, 587)):
        return []
    return [
        Problem(
            "gmail_smtp.W003",
            WARNING,
            _text(
                _(
                    "Port %(port)s (from %(origin)s) is not one of Gmail's submission ports, "
                    "587 (STARTTLS) and 465 (implicit TLS)."
                ),
                port=config.port,
                origin=_origin(config, "port"),
            ),
            _text(
                _("Enter 587 in %(port)s with STARTTLS, or 465 with implicit TLS (%(tls)s).")
                if from_form(config, "port")
                else _("Set %(port)s = 587 with %(tls)s = True, or %(port)s = 465 with %(ssl)s = True."),
                port=setting_name(config, "port"),
                tls=setting_name(config, "use_tls"),
                ssl=setting_name(config, "use_ssl"),
            ),
        )
    ]


def check_timeout(config: SmtpConfig) -> list[Problem]:
    """E008 (zero or negative: no connection possible; not finite, or over the limit) / W004 (none, or over 60 s).

    The limit is 300 s for a value typed in the admin form and a day for settings: Django itself
    accepts any timeout, so a long one in settings is only a warning (W004), not a refusal to start.
    """
    timeout = config.timeout
    setting = setting_name(config, "timeout")
    limit = TIMEOUT_LIMIT if from_form(config, "timeout") else SETTINGS_TIMEOUT_LIMIT
    if timeout is not None and not (0 < timeout <= limit):
        if timeout > 0:  # too long, or not finite
            message = _text(
                _(
                    "The SMTP timeout %(timeout)s s (from %(origin)s) is longer than %(limit)s seconds: a "
                    "blocked port or a stalled server would hold the request that long."
                ),
                timeout=f"{timeout:g}",
                origin=_origin(config, "timeout"),
                limit=f"{limit:g}",
            )
        else:
            message = _text(
                _("The SMTP timeout %(timeout)s s (from %(origin)s) is not positive, so no connection could be made."),
                timeout=f"{timeout:g}",
                origin=_origin(config, "timeout"),
            )
        return [
            Problem(
                "gmail_smtp.E008",
                ERROR,
                message,
                _text(_("Set %(setting)s to a number of seconds such as 10."), setting=setting),
                option="timeout",
            )
        ]
    if timeout is None or timeout > MAX_TIMEOUT:
        if timeout is None:
            message = _text(
                _(
                    "No SMTP timeout is set (%(origin)s), so a blocked port or a stalled server "
                    "would hang the request forever."
                ),
                origin=_origin(config, "timeout"),
            )
        else:
            message = _text(
                _(
                    "The SMTP timeout %(timeout)s s (from %(origin)s) is longer than 60 seconds, "
                    "so a blocked port or a stalled server would hang the request that long."
                ),
                timeout=f"{timeout:g}",
                origin=_origin(config, "timeout"),
            )
        return [
            Problem(
                "gmail_smtp.W004",
                WARNING,
                message,
                _text(_("Set %(setting)s to 10-30 seconds."), setting=setting),
            )
        ]
    return []


# Rules whose errors make sending impossible: the backend refuses to start with them.
BLOCKING_RULES: tuple[Rule, ...] = (
    check_port_matches_mode,
    check_tls_before_sign_in,
    check_oauth_library,
    check_oauth_credentials,
)


# Every rule over one resolved configuration, in report order.
CONFIG_RULES: tuple[Rule, ...] = (
    check_port_range,
    check_host_syntax,
    check_tls_on,
    check_port_matches_mode,
    check_credentials,
    check_app_password,
    check_oauth_library,
    check_oauth_credentials,
    check_host,
    check_port,
    check_timeout,
)


def check_config(config: SmtpConfig) -> list[Problem]:
    """All problems found in one resolved configuration (errors and warnings)."""
    return [problem for rule in CONFIG_RULES for problem in rule(config)]


def unsilenced(problems: Sequence[Problem]) -> list[Problem]:
    """``problems`` without those ``SILENCED_SYSTEM_CHECKS`` lists, for ``gmail_check`` and the admin.

    (``manage.py check`` leaves them to Django, which counts them as silenced.)
    """
    from django.conf import settings

    silenced = {str(item) for item in getattr(settings, "SILENCED_SYSTEM_CHECKS", ()) or ()}
    return [problem for problem in problems if problem.id not in silenced]


def to_error(problem: Problem, alias: str | None = None) -> GmailConfigError:
    """The :class:`GmailConfigError` that says ``problem``: its words, its id (one wording, one id)."""
    return GmailConfigError(str(problem.message), hint=str(problem.hint), check_id=problem.id, alias=alias)


def raise_first_error(problems: Sequence[Problem], alias: str | None = None) -> None:
    """Raise the first error among ``problems`` (warnings are not raised)."""
    for problem in problems:
        if problem.is_error:
            raise to_error(problem, alias)


def raise_for_blocking(config: SmtpConfig) -> None:
    """Raise :class:`GmailConfigError` for the first error that makes sending impossible."""
    for rule in BLOCKING_RULES:
        raise_first_error(rule(config), config.alias)


def problem_from_error(exc: GmailConfigError, config_name: str = "") -> Problem:
    """A :class:`GmailConfigError` that resolving a configuration raised, as a Problem.

    ``conf.resolve()`` raises E001, E009, E010 and E017, a stored account E019-E025 (and
    the OAuth2 rules' E015/E016 when a backend starts). ``config_name``
    (``MAILERS['default']``) is put in front of the message so that, with several
    mailers, it says which one. An error without a check id is a bug of the caller:
    every error a configuration can resolve to has one.
    """
    if not exc.check_id:
        raise ValueError(f"{type(exc).__name__} has no check id: {exc}")
    message: str | Promise = exc.message
    if config_name:
        message = _text(_("%(mailer)s: %(message)s"), mailer=config_name, message=exc.message)
    return Problem(exc.check_id, ERROR, message, exc.hint)


# -- project-level rules: the configuration plus setting values -----------------------------


def _address(value: str) -> str:
    return parseaddr(str(value))[1].strip().lower()


def _valid_aliases(from_aliases: Any) -> set[str]:
    if isinstance(from_aliases, str) or not isinstance(from_aliases, Sequence | set | frozenset):
        return set()
    return {_address(alias) for alias in from_aliases if isinstance(alias, str)}


def _check_sender(
    config: SmtpConfig,
    setting: str,
    value: str,
    from_aliases: Any,
    check_id: str,
    consequence: Promise,
) -> list[Problem]:
    if not config.is_gmail or not config.username or not _is_email(config.username):
        return []  # E005/E006 already say what is wrong with the account
    address = _address(value)
    if address == config.username.strip().lower() or address in _valid_aliases(from_aliases):
        return []
    return [
        Problem(
            check_id,
            WARNING,
            _text(
                _(
                    "%(setting)s %(value)s is neither the Gmail account %(account)s (from "
                    "%(origin)s) nor listed in GMAIL_SMTP['FROM_ALIASES'], so Gmail will rewrite "
                    "the From address of %(consequence)s to the account."
                ),
                setting=setting,
                value=_quote(value),
                account=_quote(config.username),
                origin=_origin(config, "username"),
                consequence=consequence,
            ),
            _text(
                _(
                    "Add %(address)s as a verified 'Send mail as' address in Gmail (Settings, "
                    "Accounts) and list it in GMAIL_SMTP['FROM_ALIASES'], or set %(setting)s to "
                    "the account's address and put other addresses in Reply-To."
                ),
                address=_quote(address or value),
                setting=setting,
            ),
        )
    ]


def check_default_from_email(config: SmtpConfig, default_from_email: str, from_aliases: Any = ()) -> list[Problem]:
    """W005: mail sent without a from_email goes out as the account, not DEFAULT_FROM_EMAIL."""
    return _check_sender(
        config,
        "DEFAULT_FROM_EMAIL",
        default_from_email,
        from_aliases,
        "gmail_smtp.W005",
        _("mail sent without a from_email"),
    )


def check_server_email(config: SmtpConfig, server_email: str, from_aliases: Any = ()) -> list[Problem]:
    """W006: error mail to ADMINS (and mail to MANAGERS) is sent from SERVER_EMAIL."""
    return _check_sender(
        config,
        "SERVER_EMAIL",
        server_email,
        from_aliases,
        "gmail_smtp.W006",
        _("error mail to ADMINS and mail to MANAGERS"),
    )


def check_senders(
    config: SmtpConfig,
    *,
    default_from_email: str,
    server_email: str,
    from_aliases: Any = (),
    admin_mail: bool = True,
) -> list[Problem]:
    """W005/W006 for one configuration.

    ``admin_mail``: whether ``ADMINS`` or ``MANAGERS`` is set (``SERVER_EMAIL``
    is used only then). ``from_aliases`` is ``GMAIL_SMTP['FROM_ALIASES']``.
    """
    problems = check_default_from_email(config, default_from_email, from_aliases)
    if admin_mail:
        problems += check_server_email(config, server_email, from_aliases)
    return problems


def check_app_settings(gmail_smtp: Any) -> list[Problem]:
    """E011/E012/E013/E018/E019: the ``GMAIL_SMTP`` setting itself (``None`` when it is not set)."""
    if gmail_smtp is None:
        return []
    if not isinstance(gmail_smtp, Mapping):
        return [
            Problem(
                "gmail_smtp.E012",
                ERROR,
                _text(NOT_A_DICT, type=type(gmail_smtp).__name__),
                NOT_A_DICT_HINT,
            )
        ]
    problems = []
    for key in gmail_smtp:
        if key in APP_SETTINGS:
            continue
        matches = difflib.get_close_matches(str(key).upper(), APP_SETTINGS, n=1)
        if matches:
            message = _text(
                _("GMAIL_SMTP has an unknown key %(key)s; did you mean %(match)s?"),
                key=_quote(key),
                match=_quote(matches[0]),
            )
            hint = _text(_("Rename %(key)s to %(match)s."), key=_quote(key), match=_quote(matches[0]))
        else:
            message = _text(_("GMAIL_SMTP has an unknown key %(key)s."), key=_quote(key))
            hint = _text(
                _("Remove it; the known keys are %(known)s."),
                known=", ".join(sorted(APP_SETTINGS)),
            )
        problems.append(Problem("gmail_smtp.E011", ERROR, message, hint))
    problems += _check_from_aliases(gmail_smtp.get("FROM_ALIASES", ()))
    problems += _check_oauth_endpoints(gmail_smtp)
    problems += _check_encryption_keys(gmail_smtp.get("ENCRYPTION_KEYS"))
    return problems


def _check_encryption_keys(keys: Any) -> list[Problem]:
    """E019: every entry of ``GMAIL_SMTP['ENCRYPTION_KEYS']`` is a Fernet key (its shape only: nothing is decrypted)."""
    if keys is None:
        return []
    try:
        validate_keys(keys)
    except GmailConfigError as exc:
        return [problem_from_error(exc)]
    return []


def oauth_endpoint_problem(key: str, uri: Any) -> Problem:
    """E018: ``GMAIL_SMTP[key]`` (an OAuth2 endpoint) would carry secrets in clear text."""
    return Problem(
        "gmail_smtp.E018",
        ERROR,
        _text(
            _(
                "GMAIL_SMTP[%(key)s] is %(uri)s, which is not an https:// address, so OAuth2 "
                "secrets and tokens would travel unencrypted."
            ),
            key=_quote(key),
            uri=_quote(uri),
        ),
        _text(
            _(
                "Remove GMAIL_SMTP[%(key)s] to use Google's endpoint, or give an https:// "
                "address; only localhost and loopback IP addresses (127.0.0.1, [::1], the "
                "sandbox) may use http://."
            ),
            key=_quote(key),
        ),
    )


def _check_oauth_endpoints(gmail_smtp: Mapping[str, Any]) -> list[Problem]:
    """E018: OAuth2 endpoints carry the client secret and the tokens: HTTPS only (localhost and
    loopback IP addresses excepted; the rule is :func:`~django_gmail_smtp.hosts.endpoint_is_safe`)."""
    return [
        oauth_endpoint_problem(key, uri)
        for key in ("OAUTH_TOKEN_URI", "OAUTH_AUTH_URI")
        if (uri := gmail_smtp.get(key)) is not None and not (isinstance(uri, str) and endpoint_is_safe(uri))
    ]


def _check_from_aliases(from_aliases: Any) -> list[Problem]:
    hint = _(
        "Write GMAIL_SMTP['FROM_ALIASES'] = ['alias@example.com', ...], listing only verified 'Send mail as' addresses."
    )
    if isinstance(from_aliases, str) or not isinstance(from_aliases, Sequence | set | frozenset):
        return [
            Problem(
                "gmail_smtp.E013",
                ERROR,
                _text(
                    _("GMAIL_SMTP['FROM_ALIASES'] is a %(type)s, not a list of e-mail addresses."),
                    type=type(from_aliases).__name__,
                ),
                hint,
            )
        ]
    return [
        Problem(
            "gmail_smtp.E013",
            ERROR,
            _text(
                _("GMAIL_SMTP['FROM_ALIASES'] contains %(entry)s, which is not an e-mail address."),
                entry=_quote(alias),
            ),
            hint,
        )
        for alias in from_aliases
        if not isinstance(alias, str) or not _is_email(_address(alias))
    ]


def check_transcript(transcript: Any) -> list[Problem]:
    """W007 (deploy): the transcript log holds every SMTP command and reply."""
    if not transcript:
        return []
    return [
        Problem(
            "gmail_smtp.W007",
            WARNING,
            _(
                "GMAIL_SMTP['TRANSCRIPT'] is on, so every SMTP command and reply, with sender and "
                "recipient addresses, is logged to the 'django_gmail_smtp.transcript' logger."
            ),
            _(
                "Set GMAIL_SMTP['TRANSCRIPT'] = False in production settings and turn it on only "
                "while investigating a delivery problem."
            ),
        )
    ]


def check_email_url_reporting(
    sources: Mapping[str, str], reporter_filter: str, *, hides_url_passwords: bool, recommended: str
) -> list[Problem]:
    """W010 (deploy): an ``EMAIL_URL`` with a password, and an exception reporter filter that shows it.

    ``sources`` maps where an ``EMAIL_URL`` is set (``settings.EMAIL_URL``,
    ``os.environ['EMAIL_URL']``) to its value; ``reporter_filter`` is
    ``DEFAULT_EXCEPTION_REPORTER_FILTER``, ``hides_url_passwords`` whether it is ``recommended``
    (this app's filter) or a subclass of it.
    """
    places = [place for place, url in sources.items() if url_password(url)]
    if not places or hides_url_passwords:
        return []
    return [
        Problem(
            "gmail_smtp.W010",
            WARNING,
            _text(
                _(
                    "EMAIL_URL contains a password (%(places)s), and the exception reporter filter "
                    "%(filter)s hides settings and environment variables by name only, so Django's error "
                    "reports (the debug page, error e-mails to ADMINS) would show it."
                ),
                places=", ".join(places),
                filter=_quote(reporter_filter),
            ),
            _text(
                _(
                    "Set DEFAULT_EXCEPTION_REPORTER_FILTER = %(recommended)s (or a subclass of it): it "
                    "also hides passwords inside URLs and this app's secrets."
                ),
                recommended=_quote(recommended),
            ),
        )
    ]


def check_deploy_config(config: SmtpConfig, *, debug: bool) -> list[Problem]:
    """W008 (deploy): a loopback host (the sandbox) in production keeps mail on this machine."""
    if debug or not is_loopback(config.host):
        return []
    return [
        Problem(
            "gmail_smtp.W008",
            WARNING,
            _text(
                _(
                    "The SMTP host %(host)s (from %(origin)s) is a loopback address, such as the "
                    "Gmail sandbox's, while DEBUG is False, so mail would stay on this machine "
                    "instead of going to Gmail."
                ),
                host=_quote(config.host),
                origin=_origin(config, "host"),
            ),
            _text(
                _(
                    "Set %(setting)s = 'smtp.gmail.com' in production settings; if a local relay "
                    "forwards your mail on purpose, add 'gmail_smtp.W008' to "
                    "SILENCED_SYSTEM_CHECKS."
                ),
                setting=setting_name(config, "host"),
            ),
        )
    ]
