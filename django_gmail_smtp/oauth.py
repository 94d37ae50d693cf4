"""OAuth2 access tokens for Gmail SMTP: cached, refreshed through google-auth; and XOAUTH2.

Used by the session, ``gmail_check``, the mailbox clients and the admin:

* **Access tokens** -- :func:`access_token` returns one for a configuration that signs in with
  OAuth2 (client id, client secret, refresh token). It comes from Django's cache (the ``default``
  cache, shared across processes when that cache is) until shortly before it expires, else from
  the token endpoint through google-auth (the ``oauth`` extra), over :mod:`.oauth_http`. The
  cache key is a digest of the client id and the refresh token, never either of them; the value
  holds the access token.
* **XOAUTH2** -- the sign-in itself is the SMTP layer's (:mod:`.smtp_auth`, which takes its
  tokens from here); the wire format (:func:`xoauth2_response`, :func:`parse_challenge`) is in
  :mod:`.xoauth2` and still importable from here.

Getting a refresh token in the first place is :mod:`.oauth_flow` (the authorization-code flow
with PKCE) and :mod:`.oauth_receiver` (the loopback redirect of ``gmail_authorize``); their
failures raise :class:`AuthorizationError`, defined here.

Endpoints come from ``GMAIL_SMTP["OAUTH_TOKEN_URI"]`` and ``GMAIL_SMTP["OAUTH_AUTH_URI"]``
(Google's by default), so tests and the sandbox use a local server. Tokens and secrets never
appear in exceptions, logs or transcripts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from . import rules
from .app_settings import app_setting, token_uri
from .conf import SmtpConfig
from .exceptions import OAuthError, ReplyTooLongError
from .hosts import endpoint_is_safe  # also importable from here
from .oauth_http import (  # MAX_TOKEN_RESPONSE_BYTES also importable from here
    MAX_TOKEN_RESPONSE_BYTES,
    TimedRequest,
    token_error,
    too_large_error,
    transport_reason,
    unreachable_error,
)
from .redaction import Redactor, detach
from .xoauth2 import MAX_INLINE_AUTH, parse_challenge, xoauth2_response  # also importable from here

__all__ = [
    "MAX_INLINE_AUTH",
    "MAX_TOKEN_RESPONSE_BYTES",
    "SCOPE",
    "AccessToken",
    "AuthorizationError",
    "access_token",
    "available",
    "cache_key",
    "check_endpoint",
    "forget_token",
    "parse_challenge",
    "require_library",
    "token_uri",
    "xoauth2_response",
]

logger = logging.getLogger("django_gmail_smtp.oauth")

SCOPE = "https://mail.google.com/"
"""The one scope Gmail accepts for SMTP (and IMAP, POP)."""

REFRESH_MARGIN = 60.0
"""Seconds before its expiry at which a cached access token is no longer used."""

CACHE_ALIAS = DEFAULT_CACHE_ALIAS
KEY_PREFIX = "gmail_smtp:oauth:v1"

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


# -- the library and the endpoints -----------------------------------------------------------


available = rules.oauth_library_available
"""True when google-auth and requests (the ``oauth`` extra) can be imported (the rule E014's test)."""


def require_library(config: SmtpConfig | None = None) -> None:
    """Raise :class:`GmailConfigError` (E014, the rule's words) when the ``oauth`` extra is missing."""
    if rules.oauth_library_available():
        return
    if config is not None:
        rules.raise_first_error(rules.check_oauth_library(config), config.alias)
    raise rules.to_error(rules.oauth_library_problem())


def auth_uri() -> str:
    return str(app_setting("OAUTH_AUTH_URI"))


def check_endpoint(uri: str, setting: str) -> None:
    """Raise :class:`GmailConfigError` (E018, the rule's words) for an endpoint that would carry
    secrets in clear text."""
    if not endpoint_is_safe(uri):
        raise rules.to_error(rules.oauth_endpoint_problem(setting, uri))


class AuthorizationError(Exception):
    """The authorization did not complete: denied, a wrong ``state``, no code. The text says why.

    Raised by :mod:`.oauth_flow` and ``gmail_authorize``; here, below them, so that it is importable
    from :mod:`.oauth` as it always was.
    """


# -- access tokens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessToken:
    """An access token, when it expires (epoch seconds) and the scopes granted. Never in ``repr``."""

    token: str = field(repr=False)
    expires_at: float
    scope: str = ""
    cached: bool = False
    """True when it came from the cache (so it may have been revoked since)."""

    @property
    def expires_in(self) -> int:
        """Whole seconds left (0 once expired)."""
        return max(0, int(self.expires_at - time.time()))

    @property
    def has_mail_scope(self) -> bool | None:
        """Whether the Gmail scope was granted; None when the endpoint did not say."""
        if not self.scope:
            return None
        return SCOPE in self.scope.split()


@sensitive_variables()
def cache_key(client_id: str, refresh_token: str) -> str:
    """The cache key of a client's access token: a digest, never the id or the token themselves."""
    digest = hashlib.sha256(f"{client_id}\0{refresh_token}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"{KEY_PREFIX}:{digest}"


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _cached(key: str) -> AccessToken | None:
    try:
        entry = caches[CACHE_ALIAS].get(key)
    except Exception:  # a cache outage must not stop mail: refresh instead
        logger.warning("OAuth2: the cache is not available; refreshing the access token.", exc_info=True)
        return None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("token"), str):
        return None
    expires_at = float(entry.get("expires_at", 0))
    if expires_at - time.time() <= REFRESH_MARGIN:
        return None
    return AccessToken(entry["token"], expires_at, str(entry.get("scope", "")), cached=True)


def _store(key: str, token: AccessToken) -> None:
    timeout = int(token.expires_at - time.time() - REFRESH_MARGIN)
    if timeout <= 0:
        return
    with contextlib.suppress(Exception):
        caches[CACHE_ALIAS].set(
            key, {"token": token.token, "expires_at": token.expires_at, "scope": token.scope}, timeout=timeout
        )


def forget_token(config: SmtpConfig) -> None:
    """Forget the cached access token of ``config`` (in every process sharing the cache)."""
    with contextlib.suppress(Exception):
        caches[CACHE_ALIAS].delete(cache_key(config.oauth_client_id, config.oauth_refresh_token))


def _check_credentials(config: SmtpConfig) -> None:
    """Raise the OAuth2 rules' E015/E016 (their words) for a missing client or refresh token."""
    rules.raise_first_error(rules.check_oauth_credentials(config), config.alias)


@sensitive_variables()
def access_token(config: SmtpConfig, *, force: bool = False) -> AccessToken:
    """A valid access token for ``config``: cached, or refreshed at the token endpoint.

    ``force`` skips the cache (after Gmail rejected the cached token). Raises
    :class:`GmailConfigError` when the extra or a credential is missing, and
    :class:`~django_gmail_smtp.exceptions.OAuthError` (carrying a cause) when the endpoint
    refuses or cannot be reached.
    """
    _check_credentials(config)
    key = cache_key(config.oauth_client_id, config.oauth_refresh_token)
    if not force:
        found = _cached(key)
        if found is not None:
            return found
    with _lock(key):
        if not force:  # another thread may have refreshed it meanwhile
            found = _cached(key)
            if found is not None:
                return found
        token = _refresh(config)
        _store(key, token)
    return token


@sensitive_variables()
def _refresh(config: SmtpConfig) -> AccessToken:
    """A new access token from the token endpoint (``grant_type=refresh_token``), via google-auth."""
    require_library(config)
    uri = token_uri()
    check_endpoint(uri, "OAUTH_TOKEN_URI")
    from google.auth import exceptions as google_exceptions
    from google.oauth2.credentials import Credentials

    credentials = Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token=config.oauth_refresh_token,
        client_id=config.oauth_client_id,
        client_secret=config.oauth_client_secret,
        token_uri=uri,
        scopes=[SCOPE],
    )
    scrub = Redactor(config.oauth_client_secret, config.oauth_refresh_token)
    request = TimedRequest(config.timeout or 10.0, uri)
    started = time.time()
    failure: OAuthError | None = None
    try:
        credentials.refresh(request)  # type: ignore[no-untyped-call]
    except google_exceptions.RefreshError as exc:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], Mapping) else {}
        text = str(exc.args[0]) if exc.args else ""
        failure = token_error(
            str(data.get("error", "")),
            str(data.get("error_description", "")) if data else text,
            0,
            scrub=scrub,
        )
    except google_exceptions.TransportError as exc:
        if isinstance(exc.__cause__, ReplyTooLongError):
            failure = too_large_error(uri)
        else:
            failure = unreachable_error(uri, scrub(transport_reason(exc)))
    finally:
        request.close()
    if failure is not None:  # raised here, not in the except clause: google-auth's frames hold the secrets
        raise detach(failure)
    token = credentials.token
    if not isinstance(token, str) or not token:
        raise token_error("", _("no access token in the answer"), 200)
    expiry = credentials.expiry  # naive UTC datetime, or None
    if expiry is not None:
        from calendar import timegm

        expires_at = float(timegm(expiry.timetuple()))
    else:
        expires_at = started + 3600.0
    granted = credentials.granted_scopes
    scope = " ".join(granted) if granted else ""
    logger.info("OAuth2: new access token from %s, valid for %d s.", uri, max(0, int(expires_at - time.time())))
    return AccessToken(token, expires_at, scope)
