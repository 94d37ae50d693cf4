"""The one configuration resolver, with provenance.

Every value the backend, the checks and ``gmail_check`` use comes from
:func:`resolve`, which also records where it came from. Precedence, highest
first (documented in the README):

1. keyword arguments (``get_connection(host=...)``) or, on Django 6.1, the
   mailer's ``MAILERS[alias]["OPTIONS"]``;
2. a stored account (``GmailAccount``), when the configuration names one
   (``account=`` or ``GMAIL_SMTP["ACCOUNT"]``), from the account source the caller passes
   (:data:`AccountSource`; this module imports no model and makes no query itself);
3. Django settings set explicitly (``EMAIL_*`` when ``MAILERS`` is not used;
   ``GMAIL_SMTP`` for this app's own knobs);
4. the environment (``EMAIL_URL`` in django-environ syntax, ``GMAIL_SMTP_*``);
5. defaults (Gmail's for a Gmail host or no host, Django's otherwise).

Settings are read at call time, never at import time, so ``override_settings``
works.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.utils.functional import Promise
from django.utils.text import format_lazy
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .app_settings import (  # APP_SETTINGS and the readers: also importable from here
    APP_SETTINGS,
    ENV_OPTIONS,
    app_setting,
    configured_gmail_smtp,
    email_url_sources,
    environment_variable,
    gmail_smtp,
    legacy_setting,
    mailers_enabled,
    number_setting,
)
from .exceptions import GmailConfigError
from .hosts import (  # GMAIL_HOSTS, is_gmail_host, is_loopback(_address): also importable from here
    DEFAULT_HOST,
    GMAIL_HOSTS,
    GMAIL_IMAP_HOST,
    GMAIL_POP_HOST,
    IMAP_PORT,
    POP_PORT,
    is_gmail_host,
    is_loopback,
    is_loopback_address,
)

__all__ = [
    "APP_SETTINGS",
    "AUTH_APP_PASSWORD",
    "AUTH_OAUTH2",
    "GMAIL_HOSTS",
    "AccountSource",
    "SmtpConfig",
    "Value",
    "app_setting",
    "configured_secrets",
    "email_url_sources",
    "is_gmail_host",
    "is_loopback",
    "is_loopback_address",
    "legacy_setting",
    "mailers_enabled",
    "normalize_app_password",
    "number_setting",
    "resolve",
    "url_password",
    "with_mailbox",
]

DEFAULT_TIMEOUT = 10.0

# Option name -> legacy Django setting (used only when MAILERS is not in use).
LEGACY_SETTINGS = {
    "host": "EMAIL_HOST",
    "port": "EMAIL_PORT",
    "username": "EMAIL_HOST_USER",
    "password": "EMAIL_HOST_PASSWORD",
    "use_tls": "EMAIL_USE_TLS",
    "use_ssl": "EMAIL_USE_SSL",
    "timeout": "EMAIL_TIMEOUT",
    "ssl_certfile": "EMAIL_SSL_CERTFILE",
    "ssl_keyfile": "EMAIL_SSL_KEYFILE",
}
# How the backend signs in (README.md#oauth2-xoauth2): an app password, or OAuth2 (XOAUTH2) with a
# client id, a client secret and a refresh token.
AUTH_APP_PASSWORD = "app_password"  # noqa: S105 - a method's name
AUTH_OAUTH2 = "oauth2"
AUTH_METHODS = (AUTH_APP_PASSWORD, AUTH_OAUTH2)
OAUTH_OPTIONS = ("auth_method", "oauth_client_id", "oauth_client_secret", "oauth_refresh_token")
SECRET_OPTIONS = frozenset({"password", "oauth_client_secret", "oauth_refresh_token"})
# Where the round trip reads the account's mailbox (implicit TLS; README.md#proving-delivery-the-round-trip).
MAILBOX_OPTIONS = ("imap_host", "imap_port", "pop_host", "pop_port")
OPTIONS = (*LEGACY_SETTINGS, "ssl_cafile", *OAUTH_OPTIONS, *MAILBOX_OPTIONS)

# GMAIL_SMTP key -> option it provides a value for.
APP_SETTING_OPTIONS = {
    "SSL_CAFILE": "ssl_cafile",
    "AUTH_METHOD": "auth_method",
    "OAUTH_CLIENT_ID": "oauth_client_id",
    "OAUTH_CLIENT_SECRET": "oauth_client_secret",
    "OAUTH_REFRESH_TOKEN": "oauth_refresh_token",
    "IMAP_HOST": "imap_host",
    "IMAP_PORT": "imap_port",
    "POP_HOST": "pop_host",
    "POP_PORT": "pop_port",
}
SOURCE_ARGUMENT = "argument"
SOURCE_OPTIONS = "options"
SOURCE_DATABASE = "database"
SOURCE_SETTINGS = "settings"
SOURCE_ENVIRONMENT = "environment"
SOURCE_DEFAULT = "default"
SOURCE_FORM = "form"  # a value typed in the admin's account form (messages then name its fields)

# Origins of default values, shown by gmail_check and in check messages: translated when shown.
GMAIL_DEFAULT_LABEL = gettext_lazy("Gmail default")
DEFAULT_LABEL = gettext_lazy("default")
TIMEOUT_DEFAULT_LABEL = gettext_lazy("default (10 s; Django's is None)")


@dataclass(frozen=True)
class Value:
    """Where one resolved value came from: a source kind and the exact place.

    ``origin`` is a setting name (``EMAIL_HOST``) or, for defaults and arguments,
    a lazily translated label: use ``str(value.origin)``.
    """

    source: str
    origin: str | Promise


@dataclass(frozen=True)
class SmtpConfig:
    """A fully resolved SMTP configuration. No secret (password, OAuth2 client secret or
    refresh token) ever appears in ``repr``."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    use_tls: bool
    use_ssl: bool
    timeout: float | None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cafile: str | None = None
    alias: str | None = None
    account: str | None = None
    """The stored account the configuration named and got values from (None: no stored account)."""
    auth_method: str = AUTH_APP_PASSWORD
    oauth_client_id: str = ""
    oauth_client_secret: str = field(default="", repr=False)
    oauth_refresh_token: str = field(default="", repr=False)
    imap_host: str = ""
    imap_port: int = 0
    pop_host: str = ""
    pop_port: int = 0
    provenance: Mapping[str, Value] = field(default_factory=dict, compare=False)

    @property
    def security(self) -> str:
        """``"ssl"`` (implicit TLS), ``"starttls"`` or ``"none"``."""
        if self.use_ssl:
            return "ssl"
        return "starttls" if self.use_tls else "none"

    @property
    def is_gmail(self) -> bool:
        return is_gmail_host(self.host)

    @property
    def uses_oauth2(self) -> bool:
        """True when the backend signs in with OAuth2 (XOAUTH2) rather than a password."""
        return self.auth_method == AUTH_OAUTH2

    @property
    def has_credentials(self) -> bool:
        """A username and what signs it in: the refresh token (OAuth2) or the password."""
        return bool(self.username and (self.oauth_refresh_token if self.uses_oauth2 else self.password))

    def describe(self, *, mailbox: str = "") -> list[tuple[str, str, Value]]:
        """(option, printable value, provenance) rows; secrets are redacted.

        The OAuth2 rows appear only when the configuration signs in with OAuth2; the mailbox
        rows only for ``mailbox="imap"`` or ``"pop3"`` (the round trip reads that mailbox).
        """
        shown_mailbox = {"imap": ("imap_host", "imap_port"), "pop3": ("pop_host", "pop_port")}.get(mailbox, ())
        rows = []
        for name in OPTIONS:
            if name in OAUTH_OPTIONS and not self.uses_oauth2:
                continue
            if name in MAILBOX_OPTIONS and name not in shown_mailbox:
                continue
            value = getattr(self, name)
            if name in SECRET_OPTIONS:
                shown = _("<%(count)d characters, hidden>") % {"count": len(value)} if value else _("<not set>")
            else:
                shown = _("<not set>") if value in (None, "") else str(value)
            rows.append((name, shown, self.provenance.get(name, Value(SOURCE_DEFAULT, DEFAULT_LABEL))))
        return rows


_APP_PASSWORD = re.compile(r"[A-Za-z]{4}(?:[\s\u00a0]*[A-Za-z]{4}){3}")


def normalize_app_password(password: str) -> str:
    """Strip the spaces from an app password pasted as Google shows it (``abcd efgh ijkl mnop``).

    Anything that is not four groups of four letters is returned unchanged.
    """
    candidate = password.strip()
    if _APP_PASSWORD.fullmatch(candidate):
        return re.sub(r"[\s\u00a0]", "", candidate)
    return password


def url_password(url: Any) -> str:
    """The password in ``scheme://user:password@host`` (percent-decoded); ``""`` if none or not a URL."""
    if not isinstance(url, str) or "://" not in url:
        return ""
    try:
        password = urlsplit(url.strip()).password
    except ValueError:
        return ""
    return unquote(password) if password else ""


def configured_secrets() -> list[str]:
    """Every secret the settings and the environment hold for this app.

    App passwords (``EMAIL_HOST_PASSWORD``, ``EMAIL_URL``, ``MAILERS`` OPTIONS), OAuth2 client
    secrets and refresh tokens (``GMAIL_SMTP``, ``GMAIL_SMTP_*``, OPTIONS) and
    ``GMAIL_SMTP["ENCRYPTION_KEYS"]``. Stored accounts are not read: no database query.
    """
    values: list[Any] = [legacy_setting("EMAIL_HOST_PASSWORD")[1]]
    configured = configured_gmail_smtp()  # as written: the error reporter must not fail on a bad one
    if isinstance(configured, Mapping):
        values += [configured.get(key) for key, option in APP_SETTING_OPTIONS.items() if option in SECRET_OPTIONS]
        keys = configured.get("ENCRYPTION_KEYS")
        values += list(keys) if isinstance(keys, list | tuple) else [keys]
    mailers = getattr(settings, "MAILERS", None) if mailers_enabled() else None
    for mailer in mailers.values() if isinstance(mailers, Mapping) else ():
        options = mailer.get("OPTIONS") if isinstance(mailer, Mapping) else None
        if isinstance(options, Mapping):
            values += [options.get(name) for name in SECRET_OPTIONS]
    values += [environment_variable(name) for name, option in ENV_OPTIONS.items() if option in SECRET_OPTIONS]
    values += [url_password(url) for url in email_url_sources().values()]
    secrets = [value.decode("utf-8", "replace") if isinstance(value, bytes) else value for value in values]
    return [secret for secret in secrets if isinstance(secret, str) and secret]


def _environment() -> dict[str, tuple[Any, str]]:
    """Option values from ``EMAIL_URL`` (django-environ syntax) and ``GMAIL_SMTP_*``."""
    found: dict[str, tuple[Any, str]] = {}
    url = environment_variable("EMAIL_URL")
    if url:
        import environ  # django-environ; imported lazily, only when EMAIL_URL is set

        try:
            parsed = environ.Env.email_url_config(url)
        except Exception as exc:
            raise GmailConfigError(
                _("The EMAIL_URL environment variable is not a valid email URL (%(error)s).") % {"error": exc},
                hint=_(
                    "Use smtp+tls://USER:APP_PASSWORD@smtp.gmail.com:587 or "
                    "smtp+ssl://USER:APP_PASSWORD@smtp.gmail.com:465, with '@' written %40 and spaces %20."
                ),
                check_id="gmail_smtp.E009",
            ) from None
        for option, setting in LEGACY_SETTINGS.items():
            if parsed.get(setting) not in (None, ""):
                found[option] = (parsed[setting], "EMAIL_URL")
        for setting in ("EMAIL_USE_TLS", "EMAIL_USE_SSL"):
            if setting in parsed:
                # The URL's scheme decides the mode: the other one is off.
                found.setdefault("use_tls", (False, "EMAIL_URL"))
                found.setdefault("use_ssl", (False, "EMAIL_URL"))
    for variable, option in ENV_OPTIONS.items():
        raw = environment_variable(variable)
        if raw:
            found[option] = (raw, variable)
    return found


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# Django's backend falls back to the settings for these when the argument is falsy ("" or 0),
# and for every other option only when it is None.
FALSY_MEANS_UNSET = frozenset({"host", "port"})

# Django's own words for STARTTLS and implicit TLS both on (its ValueError, and its InvalidMailer
# for a MAILERS alias), kept verbatim so that code matching Django's message still matches.
DJANGO_TLS_AND_SSL = "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set one of those settings to True."
DJANGO_TLS_AND_SSL_OPTIONS = "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. Set at most one of them to True."


def _given(option: str, value: Any) -> bool:
    """Whether a keyword argument / OPTIONS value counts as given, as Django's backend decides.

    ``None`` never does; ``""`` and ``0`` do (``username=""`` turns sign-in off even with
    ``EMAIL_HOST_USER`` set), except for the host and the port.
    """
    if value is None:
        return False
    return bool(value) if option in FALSY_MEANS_UNSET else True


AccountSource = Callable[[str], Mapping[str, Any] | None]
"""Where :func:`resolve` finds a stored account: its name -> its options (host, port, username,
password or OAuth2 parts...), or None when there are no stored accounts yet (before
``migrate``: the settings are used). It raises :class:`GmailConfigError` for an account it
cannot give (unknown, disabled, undecryptable...). The backend, ``gmail_check``, the checks and
the admin pass :func:`django_gmail_smtp.accounts.account_options`, which caches the accounts."""


def resolve(
    options: Mapping[str, Any] | None = None,
    *,
    alias: str | None = None,
    accounts: AccountSource | None = None,
) -> SmtpConfig:
    """Resolve the SMTP configuration for a backend instance.

    ``options`` are the keyword arguments given to the backend: ``None`` means "not
    given" (what ``send_mail()`` passes), while an explicit ``""`` is a value, as in
    Django's backend (``username=""`` signs in with nothing, whatever ``EMAIL_HOST_USER``
    says); a falsy host or port falls back, as there. ``alias`` is the ``MAILERS`` alias
    on Django 6.1 (keyword arguments are then its OPTIONS); without an alias the legacy
    ``EMAIL_*`` settings are consulted. Errors are :class:`GmailConfigError`; with an
    alias their text starts with ``MAILERS['alias']: `` as Django's ``InvalidMailer`` does.

    ``accounts`` is the :data:`AccountSource` a named stored account comes from; a configuration
    that names one cannot be resolved without it (``TypeError``: a mistake of the caller).
    """
    try:
        return _resolve(dict(options or {}), alias, accounts)
    except GmailConfigError as exc:
        if alias is None or exc.alias is not None:
            raise
        raise exc.for_alias(alias) from None


def _resolve(options: dict[str, Any], alias: str | None, accounts: AccountSource | None) -> SmtpConfig:
    values: dict[str, Any] = {}
    provenance: dict[str, Value] = {}

    def take(option: str, value: Any, source: str, origin: str | Promise, *, empty: bool = False) -> None:
        if option not in values and value is not None and (empty or value != ""):
            values[option] = value
            provenance[option] = Value(source, origin)

    for option in OPTIONS:
        value = options.get(option)
        if not _given(option, value):
            continue
        values[option] = value
        if alias is not None:
            provenance[option] = Value(SOURCE_OPTIONS, f"MAILERS[{alias!r}]['OPTIONS'][{option!r}]")
        else:
            provenance[option] = Value(SOURCE_ARGUMENT, format_lazy(gettext_lazy("{option}= argument"), option=option))
    account = options.get("account") or app_setting("ACCOUNT")
    stored: str | None = None
    if account:
        if accounts is None:
            raise TypeError(
                f"The configuration names the stored account {str(account)!r}, but resolve() was given no "
                "account source: pass accounts=django_gmail_smtp.accounts.account_options."
            )
        found = accounts(str(account))
        if found is not None:
            stored = str(account)
        origin = format_lazy(gettext_lazy("stored account {name!r}"), name=str(account))
        for option, value in (found or {}).items():
            # A stored OAuth2 account's missing part stays missing (the rules say so): it is never
            # completed from the settings or the environment, which may belong to another account.
            take(option, value, SOURCE_DATABASE, origin, empty=option in OAUTH_OPTIONS)
    if alias is None:
        for option, setting in LEGACY_SETTINGS.items():
            is_set, value = legacy_setting(setting)
            if is_set:
                take(option, value, SOURCE_SETTINGS, setting)
    configured = gmail_smtp()
    for key, option in APP_SETTING_OPTIONS.items():
        take(option, app_setting(key, configured=configured), SOURCE_SETTINGS, f"GMAIL_SMTP[{key!r}]")
    for option, (value, variable) in _environment().items():
        take(option, value, SOURCE_ENVIRONMENT, variable)

    if "host" not in values:
        values["host"] = DEFAULT_HOST
        provenance["host"] = Value(SOURCE_DEFAULT, GMAIL_DEFAULT_LABEL)
    host = str(values["host"])
    gmail = is_gmail_host(host)
    explicit_tls = "use_tls" in values
    explicit_ssl = "use_ssl" in values
    use_tls = _to_bool(values.get("use_tls", False))
    use_ssl = _to_bool(values.get("use_ssl", False))
    port: int | None = None
    if "port" in values:
        try:
            port = int(values["port"])
        except (TypeError, ValueError):
            raise GmailConfigError(
                _("The SMTP port %(value)r (from %(origin)s) is not a number.")
                % {"value": values["port"], "origin": provenance["port"].origin},
                hint=_("Use 587 (STARTTLS) or 465 (implicit TLS)."),
                check_id="gmail_smtp.E010",
            ) from None
    if use_tls and use_ssl:
        ours = _(
            "STARTTLS (use_tls / EMAIL_USE_TLS) and implicit TLS (use_ssl / EMAIL_USE_SSL) "
            "are both on; they are mutually exclusive."
        )
        raise GmailConfigError(
            f"{DJANGO_TLS_AND_SSL if alias is None else DJANGO_TLS_AND_SSL_OPTIONS} {ours}",
            hint=_("Turn one off: port 587 uses STARTTLS, port 465 implicit TLS."),
            check_id="gmail_smtp.E001",
            alias=alias,
        )
    if gmail and not explicit_tls and not explicit_ssl:
        # Gmail: the port decides the mode; no port means 587 + STARTTLS.
        use_ssl = port == 465
        use_tls = not use_ssl
        provenance["use_tls"] = provenance["use_ssl"] = Value(SOURCE_DEFAULT, GMAIL_DEFAULT_LABEL)
    if port is None:
        if gmail or alias is not None:
            port = 465 if use_ssl else 587 if use_tls else 25
            provenance["port"] = Value(SOURCE_DEFAULT, GMAIL_DEFAULT_LABEL if gmail else DEFAULT_LABEL)
        else:
            port = 25  # Django's EMAIL_PORT default

    timeout: float | None = DEFAULT_TIMEOUT
    if "timeout" in values:
        try:
            timeout = float(values["timeout"])
        except (TypeError, ValueError):
            raise GmailConfigError(
                _("The SMTP timeout %(value)r (from %(origin)s) is not a number of seconds.")
                % {"value": values["timeout"], "origin": provenance["timeout"].origin},
                hint=_("Use a number of seconds, for example 10."),
                check_id="gmail_smtp.E010",
            ) from None
    else:
        provenance["timeout"] = Value(SOURCE_DEFAULT, TIMEOUT_DEFAULT_LABEL)

    password = str(values.get("password", ""))
    if gmail or is_loopback(host):
        password = normalize_app_password(password)

    auth_method = str(values.get("auth_method", "")).strip().lower()
    if not auth_method:
        oauth = bool(values.get("oauth_refresh_token") or values.get("oauth_client_id"))
        auth_method = AUTH_OAUTH2 if oauth else AUTH_APP_PASSWORD
        provenance["auth_method"] = Value(
            SOURCE_DEFAULT, "OAuth2: a client id or refresh token is set" if oauth else "default"
        )
    elif auth_method not in AUTH_METHODS:
        raise GmailConfigError(
            _("The authentication method %(value)r (from %(origin)s) is not one of %(known)s.")
            % {
                "value": values["auth_method"],
                "origin": provenance["auth_method"].origin,
                "known": ", ".join(repr(m) for m in AUTH_METHODS),
            },
            hint=_("Use 'app_password' (the default) or 'oauth2'."),
            check_id="gmail_smtp.E017",
        )

    mailbox = _mailbox(values, provenance, host)
    return SmtpConfig(
        host=host,
        port=port,
        username=str(values.get("username", "")),
        password=password,
        use_tls=use_tls,
        use_ssl=use_ssl,
        timeout=timeout,
        ssl_certfile=values.get("ssl_certfile"),
        ssl_keyfile=values.get("ssl_keyfile"),
        ssl_cafile=values.get("ssl_cafile"),
        alias=alias,
        account=stored,
        auth_method=auth_method,
        oauth_client_id=str(values.get("oauth_client_id", "")).strip(),
        oauth_client_secret=str(values.get("oauth_client_secret", "")).strip(),
        oauth_refresh_token=str(values.get("oauth_refresh_token", "")).strip(),
        provenance=provenance,
        **mailbox,
    )


def _mailbox(values: Mapping[str, Any], provenance: dict[str, Value], host: str) -> dict[str, Any]:
    """The IMAP and POP3 endpoints (implicit TLS): as set, else Gmail's for a Gmail SMTP host,
    else the SMTP host on ports 993 and 995. Records the provenance of defaults."""
    gmail = is_gmail_host(host)
    label = GMAIL_DEFAULT_LABEL if gmail else DEFAULT_LABEL
    found: dict[str, Any] = {}
    for kind, gmail_host, default_port in (("imap", GMAIL_IMAP_HOST, IMAP_PORT), ("pop", GMAIL_POP_HOST, POP_PORT)):
        host_option, port_option = f"{kind}_host", f"{kind}_port"
        if values.get(host_option) in (None, ""):
            found[host_option] = gmail_host if gmail else host
            provenance[host_option] = Value(SOURCE_DEFAULT, label)
        else:
            found[host_option] = str(values[host_option]).strip()
        if values.get(port_option) in (None, ""):
            found[port_option] = default_port
            provenance[port_option] = Value(SOURCE_DEFAULT, label)
            continue
        try:
            port = int(values[port_option])
            if not 0 < port < 65536 or isinstance(values[port_option], bool | float):
                raise ValueError
        except (TypeError, ValueError):
            raise GmailConfigError(
                _("The %(kind)s port %(value)r (from %(origin)s) is not a port number.")
                % {
                    "kind": "IMAP" if kind == "imap" else "POP3",
                    "value": values[port_option],
                    "origin": provenance[port_option].origin,
                },
                hint=_("Use %(port)s (implicit TLS), the port Gmail uses.") % {"port": default_port},
                check_id="gmail_smtp.E010",
            ) from None
        found[port_option] = port
    return found


def with_mailbox(config: SmtpConfig) -> SmtpConfig:
    """``config`` with the mailbox endpoints it lacks taken from ``GMAIL_SMTP``, the environment
    or the defaults, as :func:`resolve` does: for configurations built elsewhere (the admin's form)."""
    values: dict[str, Any] = {}
    provenance = dict(config.provenance)
    for option in MAILBOX_OPTIONS:
        if getattr(config, option):
            values[option] = getattr(config, option)
    for key, option in APP_SETTING_OPTIONS.items():
        if option in MAILBOX_OPTIONS and option not in values and (value := app_setting(key)) not in (None, ""):
            values[option] = value
            provenance[option] = Value(SOURCE_SETTINGS, f"GMAIL_SMTP[{key!r}]")
    for variable, option in ENV_OPTIONS.items():
        if option in MAILBOX_OPTIONS and option not in values and (raw := environment_variable(variable)):
            values[option] = raw
            provenance[option] = Value(SOURCE_ENVIRONMENT, variable)
    mailbox = _mailbox(values, provenance, config.host)
    return replace(config, provenance=provenance, **mailbox)
