"""The settings layer: the one validated reader of ``GMAIL_SMTP``, and the one place that reads
the environment.

Every knob of this app is read here, at call time (never at import time, so
``override_settings`` works), with its default from :data:`APP_SETTINGS`:

* :func:`app_setting` -- a value as configured, or its default;
* :func:`number_setting` -- a number, checked: a wrong one raises :class:`GmailConfigError`
  naming the key and the rule (never a bare ``ValueError``, never hidden by ``fail_silently``);
* :func:`flag_setting` -- a yes/no knob;
* :func:`configured_keys` -- ``ENCRYPTION_KEYS``, each checked to be a Fernet key;
* :func:`gmail_smtp` -- the whole dict (:class:`GmailConfigError`, E012, when it is not one);
  :func:`configured_gmail_smtp` -- the setting exactly as written, for the check that validates it.

The environment (:data:`ENVIRONMENT`, nothing else) is read only by
:func:`environment_variable`: ``EMAIL_URL`` (django-environ's syntax) and the ``GMAIL_SMTP_*``
variables of :data:`ENV_OPTIONS`. Django's own mail settings are read here too:
:func:`legacy_setting` (``EMAIL_*``, without Django 6.1's deprecation warning) and
:func:`mailers_enabled` (``MAILERS``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import django
from cryptography.fernet import Fernet
from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.debug import sensitive_variables

from .exceptions import GmailConfigError

__all__ = [
    "APP_SETTINGS",
    "ENVIRONMENT",
    "ENV_OPTIONS",
    "app_setting",
    "configured_gmail_smtp",
    "configured_keys",
    "email_url_sources",
    "environment_variable",
    "flag_setting",
    "gmail_smtp",
    "legacy_setting",
    "mailers_enabled",
    "number_setting",
    "token_uri",
    "validate_keys",
]

# GMAIL_SMTP keys and their defaults. Never remove a key without a deprecation.
APP_SETTINGS: dict[str, Any] = {
    # Name of a stored GmailAccount to send with (keyword/OPTIONS "account" wins).
    "ACCOUNT": None,
    # Fernet keys for stored account secrets, current first; None: derived from SECRET_KEY.
    "ENCRYPTION_KEYS": None,
    # Verified Gmail "Send mail as" aliases that DEFAULT_FROM_EMAIL/SERVER_EMAIL may use.
    "FROM_ALIASES": (),
    "SSL_CAFILE": None,
    "TRANSCRIPT": False,
    # OAuth2 (README.md#oauth2-xoauth2). AUTH_METHOD None: OAuth2 when a client id or refresh token is set.
    "AUTH_METHOD": None,
    "OAUTH_CLIENT_ID": None,
    "OAUTH_CLIENT_SECRET": None,
    "OAUTH_REFRESH_TOKEN": None,
    "OAUTH_TOKEN_URI": "https://oauth2.googleapis.com/token",
    "OAUTH_AUTH_URI": "https://accounts.google.com/o/oauth2/v2/auth",
    # The receiving mailbox for gmail_check --round-trip (None: Gmail's for a Gmail host, else the SMTP host).
    "IMAP_HOST": None,
    "IMAP_PORT": None,
    "POP_HOST": None,
    "POP_PORT": None,
    # Delivery (README.md#fast-fault-tolerant-delivery): connection reuse, pipelining, retries, Gmail's limits.
    "REUSE_CONNECTIONS": True,
    "POOL_IDLE_TIMEOUT": 60.0,
    "POOL_NOOP_AFTER": 10.0,
    "MESSAGES_PER_CONNECTION": 100,
    "PIPELINING": True,
    "PIPELINE_WINDOW": 20,
    "MAX_RECIPIENTS": 100,
    "RETRY_ATTEMPTS": 3,
    "RETRY_BACKOFF": 1.0,
    "RETRY_BACKOFF_MAX": 15.0,
    "RETRY_TIMEOUT": 30.0,
    # Background sending (README.md#background-sending): the queued backend and its tasks.
    "QUEUE_TASK_BACKEND": "default",
    "QUEUE_NAME": "default",
    "QUEUE_RETRY_ATTEMPTS": 5,
    "QUEUE_RETRY_BACKOFF": 60.0,
    "QUEUE_RETRY_BACKOFF_MAX": 3600.0,
    "QUEUE_LEASE": 300.0,
    # Daily limit guard (README.md#background-sending, django_gmail_smtp/quota.py).
    "QUOTA_LIMIT": 500,
    "QUOTA_LIMITS": {},
    "QUOTA_WINDOW": 86400.0,
    "QUOTA_WARN_AT": 0.8,
    "QUOTA_HOLD_MAX": 3600.0,
    "QUOTA_SYNC": False,
    # Dotted path of a function returning an aware datetime: the guard's and the queue's clock (tests).
    "CLOCK": None,
    # The delivery log (README.md#the-delivery-log-the-admin-and-the-commands): record each message's
    # recipients and subject (never its body). False: those columns stay empty, for privacy.
    "LOG_RECIPIENTS": True,
    "LOG_SUBJECTS": True,
}

# -- GMAIL_SMTP -----------------------------------------------------------------------------

NOT_A_DICT = gettext_lazy("GMAIL_SMTP is a %(type)s, not a dict.")
NOT_A_DICT_HINT = gettext_lazy("Write it as a dict, for example GMAIL_SMTP = {'TRANSCRIPT': False}.")


def configured_gmail_smtp() -> Any:
    """The ``GMAIL_SMTP`` setting exactly as written (None when it is not set): for the system
    check that validates it and the error reporter, which must not fail on a malformed one."""
    return getattr(settings, "GMAIL_SMTP", None)


def gmail_smtp() -> Mapping[str, Any]:
    """The ``GMAIL_SMTP`` dict (empty when it is not set); :class:`GmailConfigError` (E012)
    when it is something else."""
    configured = configured_gmail_smtp()
    if not configured:
        return {}
    if not isinstance(configured, Mapping):
        raise GmailConfigError(
            str(NOT_A_DICT) % {"type": type(configured).__name__},
            hint=str(NOT_A_DICT_HINT),
            check_id="gmail_smtp.E012",
        )
    return configured


def app_setting(key: str, *, configured: Mapping[str, Any] | None = None) -> Any:
    """A ``GMAIL_SMTP`` knob as configured, else its default. ``configured`` lets a caller that
    reads many knobs pass the dict (:func:`gmail_smtp`) it already has."""
    return (gmail_smtp() if configured is None else configured).get(key, APP_SETTINGS[key])


def flag_setting(key: str, *, configured: Mapping[str, Any] | None = None) -> bool:
    """A yes/no ``GMAIL_SMTP`` knob (``TRANSCRIPT``, ``PIPELINING``...), as Python reads truth."""
    return bool(app_setting(key, configured=configured))


def number_setting(
    key: str,
    *,
    integer: bool = False,
    minimum: float = 0,
    allow_none: bool = False,
    configured: Mapping[str, Any] | None = None,
) -> Any:
    """A numeric ``GMAIL_SMTP`` knob, checked once for every caller: at least ``minimum``, whole
    when ``integer``, ``None`` only with ``allow_none``.

    A wrong value raises :class:`GmailConfigError` naming the key (never a bare
    ``ValueError``, and never hidden by ``fail_silently``).
    """
    value = app_setting(key, configured=configured)
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value) if integer else float(value)
        if (integer and isinstance(value, float) and value != number) or number < minimum:
            raise ValueError
    except (TypeError, ValueError):
        values = {"key": key, "value": value, "minimum": f"{minimum:g}"}
        if integer and allow_none:
            message = _("GMAIL_SMTP[%(key)r] is %(value)r; it must be a whole number of at least %(minimum)s, or None.")
        elif integer:
            message = _("GMAIL_SMTP[%(key)r] is %(value)r; it must be a whole number of at least %(minimum)s.")
        elif allow_none:
            message = _("GMAIL_SMTP[%(key)r] is %(value)r; it must be a number of at least %(minimum)s, or None.")
        else:
            message = _("GMAIL_SMTP[%(key)r] is %(value)r; it must be a number of at least %(minimum)s.")
        raise GmailConfigError(
            message % values,
            hint=_(
                "See the GMAIL_SMTP settings in the README (README.md#gmail_smtp-settings) for every key and its default."
            ),
            check_id=None,  # found where the knob is used; no system check reads these knobs
        ) from None
    return number


# -- ENCRYPTION_KEYS ------------------------------------------------------------------------

GENERATE_COMMAND = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
KEYS_CHECK_ID = "gmail_smtp.E019"


def token_uri() -> str:
    """The OAuth2 token endpoint (``OAUTH_TOKEN_URI``): where refresh tokens and client secrets
    are sent. One reader for both sides of that promise: the binding seals a stored secret to
    this address, the OAuth client sends it here."""
    return str(app_setting("OAUTH_TOKEN_URI"))


def generate_hint() -> str:
    """How to make a key, for the hints of the key errors."""
    return _("Generate a key with: %(command)s") % {"command": GENERATE_COMMAND}


@sensitive_variables()
def validate_keys(raw: Any) -> list[bytes]:
    """The keys of a ``GMAIL_SMTP["ENCRYPTION_KEYS"]`` value, checked to be Fernet keys.

    Only their shape is checked (URL-safe base64 of 32 bytes): nothing is decrypted. Raises
    :class:`GmailConfigError` (``gmail_smtp.E019``) naming the position of a bad key, never
    the key itself.
    """
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise GmailConfigError(
            _("GMAIL_SMTP['ENCRYPTION_KEYS'] must be a list of Fernet keys, the current one first, not a %(type)s.")
            % {"type": type(raw).__name__},
            hint=_(
                "Write GMAIL_SMTP['ENCRYPTION_KEYS'] = [os.environ['GMAIL_SMTP_KEY']], or remove it to "
                "derive the key from SECRET_KEY."
            )
            + " "
            + generate_hint(),
            check_id=KEYS_CHECK_ID,
        )
    if not raw:
        raise GmailConfigError(
            _("GMAIL_SMTP['ENCRYPTION_KEYS'] is an empty list."),
            hint=_("Put at least one Fernet key in it, or remove it to derive the key from SECRET_KEY.")
            + " "
            + generate_hint(),
            check_id=KEYS_CHECK_ID,
        )
    keys = []
    for position, key in enumerate(raw):
        candidate = key.encode("ascii", "replace") if isinstance(key, str) else key
        try:
            Fernet(candidate)
        except (TypeError, ValueError):
            raise GmailConfigError(
                _(
                    "GMAIL_SMTP['ENCRYPTION_KEYS'][%(position)d] is not a valid Fernet key (32 bytes in "
                    "URL-safe base64: 44 characters ending with '=')."
                )
                % {"position": position},
                hint=_("Replace it with a key made for this purpose.") + " " + generate_hint(),
                check_id=KEYS_CHECK_ID,
            ) from None
        keys.append(candidate)
    return keys


@sensitive_variables()
def configured_keys() -> list[bytes]:
    """The keys of ``GMAIL_SMTP["ENCRYPTION_KEYS"]`` (empty when it is not set), validated.

    Error messages name the position of a bad key, never the key itself.
    """
    raw = app_setting("ENCRYPTION_KEYS")
    return [] if raw is None else validate_keys(raw)


# -- Django's mail settings -----------------------------------------------------------------


def mailers_enabled() -> bool:
    """True on Django 6.1+ when the project defines ``MAILERS``."""
    return django.VERSION >= (6, 1) and hasattr(settings, "MAILERS")


def legacy_setting(name: str) -> tuple[bool, Any]:
    """(explicitly set?, value) for a deprecated ``EMAIL_*`` setting.

    On Django 6.1 reading ``settings.EMAIL_*`` from outside Django emits a
    deprecation warning; the project already got one for setting it, so the
    value is read from the settings holder directly.
    """
    holder: Any = settings  # django-stubs types LazySettings as Settings
    if not holder.is_overridden(name):
        return False, None
    if django.VERSION >= (6, 1):
        return True, getattr(holder._wrapped, name)
    return True, getattr(holder, name)


# -- the environment ------------------------------------------------------------------------

# Environment variable -> the resolver option it gives a value for (below the settings).
ENV_OPTIONS = {
    "GMAIL_SMTP_SSL_CAFILE": "ssl_cafile",
    "GMAIL_SMTP_TIMEOUT": "timeout",
    "GMAIL_SMTP_AUTH_METHOD": "auth_method",
    "GMAIL_SMTP_OAUTH_CLIENT_ID": "oauth_client_id",
    "GMAIL_SMTP_OAUTH_CLIENT_SECRET": "oauth_client_secret",
    "GMAIL_SMTP_OAUTH_REFRESH_TOKEN": "oauth_refresh_token",
    "GMAIL_SMTP_IMAP_HOST": "imap_host",
    "GMAIL_SMTP_IMAP_PORT": "imap_port",
    "GMAIL_SMTP_POP_HOST": "pop_host",
    "GMAIL_SMTP_POP_PORT": "pop_port",
}
ENVIRONMENT = ("EMAIL_URL", *ENV_OPTIONS)
"""Every environment variable this app reads: ``EMAIL_URL`` (the whole SMTP configuration in
django-environ's syntax) and the ``GMAIL_SMTP_*`` variables of :data:`ENV_OPTIONS`."""


def environment_variable(name: str) -> str | None:
    """The value of one of this app's environment variables (:data:`ENVIRONMENT`); None when it is
    unset or empty. The only read of ``os.environ`` in the app (tests/test_architecture.py)."""
    if name not in ENVIRONMENT:
        raise KeyError(f"{name} is not one of this app's environment variables (app_settings.ENVIRONMENT)")
    return os.environ.get(name) or None


def email_url_sources() -> dict[str, str]:
    """Where an ``EMAIL_URL`` is configured: ``{"os.environ['EMAIL_URL']": url, "settings.EMAIL_URL": url}``."""
    found = {
        "os.environ['EMAIL_URL']": environment_variable("EMAIL_URL"),
        "settings.EMAIL_URL": getattr(settings, "EMAIL_URL", None),
    }
    return {place: url for place, url in found.items() if isinstance(url, str) and url}
