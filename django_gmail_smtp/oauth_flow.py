"""Getting a refresh token: the OAuth2 authorization-code flow with PKCE, for ``gmail_authorize`` and the admin.

:func:`authorization_url` builds the address to send the browser to (Gmail's scope, a fresh
``state``, a PKCE S256 challenge), :func:`parse_redirect` reads the code from the address the
browser comes back to, :func:`exchange_code` trades it for tokens at the token endpoint, and
:func:`granted_mail_scope` tells whether Gmail's scope was granted. The browser comes back to
the loopback listener of ``gmail_authorize`` (:mod:`.oauth_receiver`) or to the admin's callback
view. Google retired the out-of-band ("copy this code") flow in 2022; nothing here uses it.
This small flow is written here (on ``requests``) rather than taken from google-auth-oauthlib:
its ``InstalledAppFlow`` runs its own browser and web server, has no headless variant any more,
and needs ``OAUTHLIB_INSECURE_TRANSPORT`` tricks for ``http://127.0.0.1`` redirects.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from .exceptions import DeadlineExceeded, OAuthError, ReplyTooLongError
from .oauth import SCOPE, AuthorizationError, auth_uri, check_endpoint, require_library, token_uri
from .oauth_http import TimedRequest, token_error, too_large_error, transport_reason, unreachable_error
from .redaction import Redactor, detach

__all__ = [
    "AuthorizationError",
    "AuthorizationRequest",
    "authorization_url",
    "exchange_code",
    "granted_mail_scope",
    "parse_redirect",
    "pkce_pair",
]


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
    request = TimedRequest(timeout, uri)
    unreachable: OAuthError | None = None
    try:
        response = request.fetch(uri, "POST", data, {"Accept": "application/json"})
    except ReplyTooLongError:
        unreachable = too_large_error(uri)
    except (requests.RequestException, DeadlineExceeded) as exc:
        unreachable = unreachable_error(uri, scrub(transport_reason(exc)))
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
