"""OAuth2 (XOAUTH2) sign-in rules: the library, the client, the refresh token and the endpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from ..conf import SOURCE_DATABASE, SOURCE_DEFAULT, SmtpConfig
from ..hosts import endpoint_is_safe
from .naming import from_form, named, origin_of, setting_names
from .problem import ERROR, WARNING, Check, Problem, quote

OAUTH_INSTALL_COMMAND = 'pip install "django-gmail-smtp[oauth]"'

E014 = Check(
    "gmail_smtp.E014",
    ERROR,
    "OAuth2 sign-in is configured but google-auth (the 'oauth' extra) is not installed",
    message=_(
        "OAuth2 sign-in is configured (%(origin)s), but google-auth, which gets the access tokens, is not installed."
    ),
    hint=_("Install the 'oauth' extra: %(command)s."),
)
E014_NO_CONFIGURATION = _("OAuth2 sign-in is used, but google-auth, which gets the access tokens, is not installed.")
"""E014 where no configuration is involved: ``gmail_authorize`` and the admin's authorization."""

E015 = Check(
    "gmail_smtp.E015",
    ERROR,
    "OAuth2 sign-in is configured without a refresh token",
    message=_(
        "OAuth2 sign-in is configured (%(origin)s), but %(setting)s is not set, so "
        "the backend could not get an access token and would not sign in."
    ),
    hint=_(
        "Run 'manage.py gmail_authorize' to get a refresh token and set it in the "
        "GMAIL_SMTP_OAUTH_REFRESH_TOKEN environment variable (or %(setting)s); for a "
        'stored account use its "Authorize with Google" button in the admin.'
    ),
    form_hint=_(
        "Save the account, then use its “Authorize with Google” button; or paste a "
        "refresh token printed by 'manage.py gmail_authorize' in %(setting)s."
    ),
)
E015_STORED = _("The stored Gmail account %(name)s signs in with OAuth2 but has not been authorized yet.")
E015_STORED_HINT = _(
    'Click "Authorize with Google" on the account\'s admin page, or run '
    "'manage.py gmail_authorize --account %(name)s'."
)

E016 = Check(
    "gmail_smtp.E016",
    ERROR,
    "OAuth2 sign-in is configured without a client id or client secret",
    message=_(
        "OAuth2 sign-in is configured (%(origin)s), but %(missing)s is not set, and "
        "Google issues access tokens only to the client a refresh token belongs to."
    ),
    hint=_(
        "Copy the client id and client secret of the OAuth client from the Google "
        "Cloud console (APIs & Services, Credentials) into %(client_id)s and "
        "%(client_secret)s (or the environment variables GMAIL_SMTP_OAUTH_CLIENT_ID "
        "and GMAIL_SMTP_OAUTH_CLIENT_SECRET)."
    ),
    form_hint=_(
        "Copy the client id and client secret of the OAuth client from the Google "
        "Cloud console (APIs & Services, Credentials) into %(client_id)s and "
        "%(client_secret)s."
    ),
)
E016_STORED = _("The stored Gmail account %(name)s signs in with OAuth2 but has no client id and client secret.")
E016_STORED_HINT = _(
    "Enter the OAuth client's id and secret (Google Cloud console, APIs & Services, "
    "Credentials) on the account's admin page (Gmail SMTP, Gmail accounts)."
)

E018 = Check(
    "gmail_smtp.E018",
    ERROR,
    "an OAuth2 endpoint in GMAIL_SMTP is not https:// (localhost and loopback IPs excepted)",
    message=_(
        "GMAIL_SMTP[%(key)s] is %(uri)s, which is not an https:// address, so OAuth2 "
        "secrets and tokens would travel unencrypted."
    ),
    hint=_(
        "Remove GMAIL_SMTP[%(key)s] to use Google's endpoint, or give an https:// "
        "address; only localhost and loopback IP addresses (127.0.0.1, [::1], the "
        "sandbox) may use http://."
    ),
)

W009 = Check(
    "gmail_smtp.W009",
    WARNING,
    "a password is configured too, but OAuth2 is used: the password is ignored",
    message=_(
        "A password is set (%(password)s), but this configuration signs in with "
        "OAuth2 (%(origin)s), so the password is ignored."
    ),
    hint=_(
        "Remove %(setting)s, or set the authentication method to 'app_password' "
        "(auth_method, GMAIL_SMTP['AUTH_METHOD']) to sign in with it."
    ),
)

CHECKS = (E014, E015, E016, E018, W009)

ENDPOINTS = ("OAUTH_TOKEN_URI", "OAUTH_AUTH_URI")
"""The keys of ``GMAIL_SMTP`` that name an OAuth2 endpoint (E018)."""


def oauth_library_available() -> bool:
    """True when google-auth and requests (the ``oauth`` extra) can be imported: E014's test."""
    try:
        import google.oauth2.credentials  # noqa: F401
        import requests  # noqa: F401
    except ImportError:
        return False
    return True


def _oauth_origin(config: SmtpConfig) -> str | Promise:
    """Where OAuth2 was chosen: the authentication method's setting, or the OAuth2 value that implied it."""
    method = config.provenance.get("auth_method")
    if method is not None and method.source != SOURCE_DEFAULT:
        return origin_of(config, "auth_method")
    for option in ("oauth_refresh_token", "oauth_client_id"):
        if getattr(config, option):
            return origin_of(config, option)
    return origin_of(config, "auth_method")


def oauth_library_problem(origin: str | Promise | None = None) -> Problem:
    """E014: google-auth (the ``oauth`` extra) is missing; ``origin`` says where OAuth2 was chosen."""
    fix = {"command": OAUTH_INSTALL_COMMAND}
    if origin is None:  # gmail_authorize and the admin's authorization: no configuration involved
        return E014.problem(None, fix, message=E014_NO_CONFIGURATION)
    return E014.problem({"origin": origin}, fix)


def check_oauth_library(
    config: SmtpConfig, *, available: Callable[[], bool] = oauth_library_available
) -> list[Problem]:
    """E014: OAuth2 needs google-auth (the ``oauth`` extra); the backend refuses to start without it.

    ``available`` is the test whether it is installed.
    """
    if not config.uses_oauth2 or available():
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
    name = {"name": quote(account)}
    if not config.oauth_client_id or not config.oauth_client_secret:
        return [E016.problem(name, message=E016_STORED, hint=E016_STORED_HINT)]
    if not config.oauth_refresh_token:  # a refresh token belongs to a client: that comes first
        return [E015.problem(name, {"name": account}, message=E015_STORED, hint=E015_STORED_HINT)]
    return []


def check_oauth_credentials(config: SmtpConfig) -> list[Problem]:
    """E015/E016/W009: what XOAUTH2 needs -- a refresh token, and the client that issued it."""
    if not config.uses_oauth2:
        return []
    account = _stored_account(config)
    if account is not None:
        return _stored_oauth_problems(config, account)
    problems = []
    chosen = {"origin": _oauth_origin(config)}
    if not config.oauth_refresh_token:
        said = chosen | {"setting": named(config, "oauth_refresh_token")}
        fix = setting_names(config, setting="oauth_refresh_token")
        problems.append(E015.problem(said, fix, form=from_form(config, "oauth_refresh_token")))
    missing = [name for name in ("oauth_client_id", "oauth_client_secret") if not getattr(config, name)]
    if missing:
        said = chosen | {"missing": " and ".join(str(named(config, name)) for name in missing)}
        fix = setting_names(config, client_id="oauth_client_id", client_secret="oauth_client_secret")  # noqa: S106
        problems.append(E016.problem(said, fix, form=from_form(config, "oauth_client_secret")))
    if config.password:
        said = chosen | {"password": origin_of(config, "password")}
        problems.append(W009.problem(said, setting_names(config, setting="password")))
    return problems


def oauth_endpoint_problem(key: str, uri: Any) -> Problem:
    """E018: ``GMAIL_SMTP[key]`` (an OAuth2 endpoint) would carry secrets in clear text."""
    return E018.problem({"key": quote(key), "uri": quote(uri)}, {"key": quote(key)})


def check_oauth_endpoints(gmail_smtp: Mapping[str, Any]) -> list[Problem]:
    """E018: OAuth2 endpoints carry the client secret and the tokens: HTTPS only (localhost and
    loopback IP addresses excepted; the rule is :func:`~django_gmail_smtp.hosts.endpoint_is_safe`)."""
    return [
        oauth_endpoint_problem(key, uri)
        for key in ENDPOINTS
        if (uri := gmail_smtp.get(key)) is not None and not (isinstance(uri, str) and endpoint_is_safe(uri))
    ]
