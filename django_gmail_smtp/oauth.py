"""OAuth2 for Gmail SMTP: access tokens (google-auth, cached), XOAUTH2, and getting a refresh token.

Three parts, used by the session, ``gmail_check``, ``gmail_authorize`` and the admin:

* **Access tokens** -- :func:`access_token` returns one for a configuration that signs in with
  OAuth2 (client id, client secret, refresh token). It comes from Django's cache (the ``default``
  cache, shared across processes when that cache is) until shortly before it expires, else from
  the token endpoint through google-auth (the ``oauth`` extra). The cache key is a digest of the
  client id and the refresh token, never either of them; the value holds the access token.
* **XOAUTH2** -- the sign-in itself is the SMTP layer's (:mod:`.smtp_auth`, which takes its
  tokens from here); the wire format (:func:`xoauth2_response`, :func:`parse_challenge`) is in
  :mod:`.xoauth2` and still importable from here.
* **Authorization** -- :func:`authorization_url`, :func:`parse_redirect` and
  :func:`exchange_code`: the authorization-code flow with PKCE (S256) and a ``state``, for the
  loopback redirect of ``gmail_authorize`` and the admin's web flow. Google retired the
  out-of-band ("copy this code") flow in 2022; nothing here uses it. This small flow is written
  here (on ``requests``) rather than taken from google-auth-oauthlib: its ``InstalledAppFlow``
  runs its own browser and web server, has no headless variant any more, and needs
  ``OAUTHLIB_INSECURE_TRANSPORT`` tricks for ``http://127.0.0.1`` redirects.

Endpoints come from ``GMAIL_SMTP["OAUTH_TOKEN_URI"]`` and ``GMAIL_SMTP["OAUTH_AUTH_URI"]``
(Google's by default), so tests and the sandbox use a local server. Tokens and secrets never
appear in exceptions, logs or transcripts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import http.server
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from . import rules
from .app_settings import app_setting
from .causes import CATALOGUE, Cause
from .conf import SmtpConfig
from .deadline import Deadline
from .exceptions import DeadlineExceeded, OAuthError, ReplyTooLongError, with_cause
from .hosts import endpoint_is_safe  # also importable from here
from .redaction import Redactor, detach
from .xoauth2 import MAX_INLINE_AUTH, parse_challenge, xoauth2_response  # also importable from here

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_INLINE_AUTH",
    "SCOPE",
    "AccessToken",
    "AuthorizationRequest",
    "LoopbackReceiver",
    "access_token",
    "authorization_url",
    "available",
    "cache_key",
    "check_endpoint",
    "exchange_code",
    "forget_token",
    "parse_challenge",
    "parse_redirect",
    "require_library",
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


def token_uri() -> str:
    return str(app_setting("OAUTH_TOKEN_URI"))


def auth_uri() -> str:
    return str(app_setting("OAUTH_AUTH_URI"))


def check_endpoint(uri: str, setting: str) -> None:
    """Raise :class:`GmailConfigError` (E018, the rule's words) for an endpoint that would carry
    secrets in clear text."""
    if not endpoint_is_safe(uri):
        raise rules.to_error(rules.oauth_endpoint_problem(setting, uri))


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


def _cause_for_error(error: str) -> Cause:
    if error == "invalid_grant":
        return CATALOGUE["oauth_invalid_grant"]
    if error in ("invalid_client", "unauthorized_client"):
        return CATALOGUE["oauth_invalid_client"]
    if error == "invalid_scope":
        return CATALOGUE["oauth_wrong_scope"]
    return CATALOGUE["oauth_token_error"]


def token_error(error: str, description: str, status: int, *, scrub: Callable[[str], str] | None = None) -> OAuthError:
    """The exception for an error answer of the token endpoint, with its cause."""
    scrub = scrub or (lambda text: text)
    error, description = scrub(error)[:100], scrub(description)[:300]
    if error:
        message = _("The OAuth2 token endpoint refused: %(error)s (%(description)s).") % {
            "error": error,
            "description": description or "-",
        }
    else:
        message = _("The OAuth2 token endpoint answered with HTTP status %(status)s: %(description)s") % {
            "status": status or "-",
            "description": description or "-",
        }
    exc = OAuthError(message, error=error, description=description, status=status)
    return with_cause(exc, _cause_for_error(error), "token")  # type: ignore[return-value]


def unreachable_error(uri: str, reason: str) -> OAuthError:
    exc = OAuthError(
        _("The OAuth2 token endpoint %(uri)s could not be reached: %(reason)s") % {"uri": uri, "reason": reason}
    )
    return with_cause(exc, CATALOGUE["oauth_token_unreachable"], "token")  # type: ignore[return-value]


MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
"""Largest answer read from the token endpoint (Google's is about 1 KiB); a larger one fails."""


@dataclass(frozen=True)
class _Answer:
    """A token endpoint's answer, read in full (google-auth's transport ``Response``)."""

    status: int
    headers: Mapping[str, str]
    data: bytes = field(repr=False)


class _TimedRequest:
    """HTTP to the token endpoint: the whole request within a deadline, the answer capped.

    requests (which honours the proxy and CA settings of the environment) makes the request in
    a worker thread, and the caller waits for it until the deadline at most: requests' timeout
    bounds each read, not the answer as a whole, so a server sending a byte a second would hold
    the caller for ever. An abandoned worker stops at its next read timeout or once the answer
    passes the cap. Called as google-auth's transport, every failure is a ``TransportError``.
    """

    def __init__(self, timeout: float | None, uri: str) -> None:
        import requests

        self.session = requests.Session()
        self.deadline = Deadline(timeout, "token", uri)

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        import requests
        from google.auth import exceptions as google_exceptions

        try:
            return self.fetch(url, method, body, headers)
        except (requests.RequestException, DeadlineExceeded, ReplyTooLongError) as exc:
            raise google_exceptions.TransportError(exc) from exc  # type: ignore[no-untyped-call]

    def fetch(self, url: str, method: str, body: Any, headers: Any) -> _Answer:
        """The answer; raises requests' exceptions, ``DeadlineExceeded`` or ``ReplyTooLongError``."""
        left = self.deadline.left()
        outcome: dict[str, Any] = {}
        worker = threading.Thread(
            target=self._fetch, args=(outcome, url, method, body, headers, left), name="gmail-smtp-oauth", daemon=True
        )
        worker.start()
        worker.join(None if left == math.inf else left)
        if worker.is_alive():
            raise self.deadline.error(received=outcome.get("received", 0))
        if "error" in outcome:
            raise outcome["error"]
        answer: _Answer = outcome["answer"]
        return answer

    @sensitive_variables()
    def _fetch(self, outcome: dict[str, Any], url: str, method: str, body: Any, headers: Any, left: float) -> None:
        timeout = None if left == math.inf else left
        try:
            with self.session.request(method, url, data=body, headers=headers, timeout=timeout, stream=True) as reply:
                length = reply.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > MAX_TOKEN_RESPONSE_BYTES:
                    raise _too_large()
                data = bytearray()
                for chunk in reply.iter_content(4096):
                    data += chunk
                    outcome["received"] = len(data)
                    if len(data) > MAX_TOKEN_RESPONSE_BYTES:
                        raise _too_large()
                    if self.deadline.expired:  # the caller has given up
                        return
                outcome["answer"] = _Answer(reply.status_code, reply.headers, bytes(data))
        except Exception as exc:  # handed to the caller's thread
            outcome["error"] = exc

    def close(self) -> None:
        self.session.close()


def _too_large() -> ReplyTooLongError:
    return ReplyTooLongError(
        _("The OAuth2 token endpoint's answer is larger than %(count)d bytes (MAX_TOKEN_RESPONSE_BYTES).")
        % {"count": MAX_TOKEN_RESPONSE_BYTES},
        limit="bytes",
        size=MAX_TOKEN_RESPONSE_BYTES,
    )


def _too_large_error(uri: str) -> OAuthError:
    exc = OAuthError(
        _("The OAuth2 token endpoint %(uri)s answered with more than %(count)d bytes: the answer was not read.")
        % {"uri": uri, "count": MAX_TOKEN_RESPONSE_BYTES}
    )
    return with_cause(exc, CATALOGUE["reply_too_long"], "token")  # type: ignore[return-value]


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
    request = _TimedRequest(config.timeout or 10.0, uri)
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
            failure = _too_large_error(uri)
        else:
            failure = unreachable_error(uri, scrub(_reason(exc)))
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


def _reason(exc: BaseException) -> str:
    """The innermost reason of a transport error, in one line (e.g. "Connection refused")."""
    inner: BaseException | None = exc
    text = str(exc)
    while inner is not None:
        if isinstance(inner, DeadlineExceeded):
            return str(inner.args[0])
        if isinstance(inner, ConnectionRefusedError):
            return _("connection refused")
        if isinstance(inner, TimeoutError):
            return _("no answer within the timeout")
        inner = inner.__cause__ or inner.__context__
    low = text.lower()
    if "refused" in low:
        return _("connection refused")
    if "timed out" in low or "timeout" in low:
        return _("no answer within the timeout")
    return text.splitlines()[0][:200] if text else type(exc).__name__


# -- getting a refresh token: the authorization-code flow with PKCE ---------------------------


@dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization in progress: where to send the browser, and what to check on return."""

    url: str
    state: str = field(repr=False)
    code_verifier: str = field(repr=False)
    redirect_uri: str = ""


def pkce_pair() -> tuple[str, str]:
    """(code verifier, S256 code challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(64)[:96]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
    return verifier, challenge.decode("ascii")


def authorization_url(client_id: str, redirect_uri: str, *, login_hint: str = "") -> AuthorizationRequest:
    """The authorization endpoint address for the Gmail scope, with a fresh ``state`` and PKCE.

    ``access_type=offline`` and ``prompt=consent`` make Google return a refresh token every time.
    """
    uri = auth_uri()
    check_endpoint(uri, "OAUTH_AUTH_URI")
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": SCOPE,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
    }
    if login_hint:
        params["login_hint"] = login_hint
    separator = "&" if urlsplit(uri).query else "?"
    return AuthorizationRequest(f"{uri}{separator}{urlencode(params)}", state, verifier, redirect_uri)


class AuthorizationError(Exception):
    """The authorization did not complete: denied, a wrong ``state``, no code. The text says why."""


def parse_redirect(url_or_query: str, expected_state: str) -> str:
    """The authorization code from the address the browser was sent back to.

    Checks the ``state`` (a mismatch means the answer is not for this request) and reports an
    ``error`` (``access_denied`` when the user declined). Accepts the whole address or its query.
    """
    text = url_or_query.strip()
    query = urlsplit(text).query if "://" in text or text.startswith("/") else text.lstrip("?")
    params = {key: values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}
    state = params.get("state", "")
    if not state or not secrets.compare_digest(state, expected_state):
        raise AuthorizationError(
            _(
                "The state in the answer does not match this authorization request, so it was "
                "rejected: start again and use the newest address."
            )
        )
    if params.get("error"):
        if params["error"] == "access_denied":
            raise AuthorizationError(_("Access was denied on Google's consent page: nothing was stored."))
        raise AuthorizationError(
            _("The authorization server answered with an error: %(error)s.") % {"error": params["error"][:100]}
        )
    code = params.get("code", "")
    if not code:
        raise AuthorizationError(_("The answer holds no authorization code."))
    return code


@sensitive_variables()
def exchange_code(
    client_id: str,
    client_secret: str,
    code: str,
    *,
    redirect_uri: str,
    code_verifier: str,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Trade an authorization code for tokens (``grant_type=authorization_code``).

    Returns the endpoint's JSON (``refresh_token``, ``access_token``, ``expires_in``,
    ``scope``). Raises :class:`OAuthError` with a cause when the endpoint refuses or cannot be
    reached, and :class:`GmailConfigError` when the extra is missing.
    """
    require_library()
    import requests

    uri = token_uri()
    check_endpoint(uri, "OAUTH_TOKEN_URI")
    scrub = Redactor(client_secret, code, code_verifier)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    request = _TimedRequest(timeout, uri)
    unreachable: OAuthError | None = None
    try:
        response = request.fetch(uri, "POST", data, {"Accept": "application/json"})
    except ReplyTooLongError:
        unreachable = _too_large_error(uri)
    except (requests.RequestException, DeadlineExceeded) as exc:
        unreachable = unreachable_error(uri, scrub(_reason(exc)))
    finally:
        request.close()
    if unreachable is not None:  # raised outside the except clause: requests' frames hold the form
        raise detach(unreachable)
    text = response.data.decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if response.status != 200 or not isinstance(answer, dict):
        details = answer if isinstance(answer, dict) else {}
        raise token_error(
            str(details.get("error", "")),
            str(details.get("error_description", "")) or text[:200],
            response.status,
            scrub=scrub,
        )
    return answer


def granted_mail_scope(answer: Mapping[str, Any]) -> bool:
    """Whether a token answer grants the Gmail scope (an answer without ``scope`` is trusted)."""
    scope = answer.get("scope")
    return scope is None or SCOPE in str(scope).split()


# -- the loopback redirect of gmail_authorize -------------------------------------------------


class LoopbackReceiver:
    """A one-shot HTTP listener on 127.0.0.1 that receives the browser's redirect.

    ``redirect_uri`` is ``http://127.0.0.1:<port>/``; :meth:`wait` returns the query string
    of the first request that carries ``code`` or ``error`` (None after ``timeout``).
    """

    def __init__(self, port: int = 0, *, done_page: str = "") -> None:
        self._query: str | None = None
        self._arrived = threading.Event()
        self._done_page = done_page or _(
            "Authorization received. You can close this window and return to the terminal."
        )
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urlsplit(self.path).query
                params = parse_qs(query)
                if "code" not in params and "error" not in params:
                    self.send_error(404)
                    return
                body = (
                    "<!doctype html><meta charset=utf-8><title>django-gmail-smtp</title>"
                    f"<p>{html.escape(receiver._done_page)}</p>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
                if receiver._query is None:
                    receiver._query = query
                    receiver._arrived.set()

            def log_message(self, format: str, *args: Any) -> None:  # the code must not reach a log
                pass

        self._server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="gmail-authorize", daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def wait(self, timeout: float | None) -> str | None:
        """The redirect's query string, or None if none came within ``timeout`` seconds."""
        self._arrived.wait(timeout)
        return self._query
