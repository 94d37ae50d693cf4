"""A small local OAuth2 server for the sandbox: Google's token, authorization and revocation endpoints.

Loopback only, plain HTTP, for development and tests (the client accepts ``http://`` only for a
loopback address). It answers the way Google's endpoints answer:

* ``POST /token`` -- ``grant_type=refresh_token`` and ``grant_type=authorization_code`` (with
  PKCE S256 checked when the request used it). Errors are Google's: ``invalid_grant`` ("Token
  has been expired or revoked."), ``invalid_client``, ``redirect_uri_mismatch``,
  ``unsupported_grant_type``.
* ``GET /auth`` -- the consent page, approved at once: a ``302`` to ``redirect_uri`` with
  ``code`` and ``state`` (or ``error=access_denied`` after :attr:`OAuthServer.deny` is set).
  It signs in as ``login_hint`` when that is a known user, else as :attr:`OAuthServer.approve_as`
  or the first user; :attr:`OAuthServer.grant_scope` simulates a user unticking the Gmail box.
* ``POST /revoke`` -- revokes a refresh token (and its access tokens) or an access token.

The sandbox SMTP server asks :meth:`OAuthServer.check_access_token` about every XOAUTH2 token::

    with OAuthServer() as oauth, GmailSandbox(oauth=oauth) as sandbox:
        refresh_token = oauth.issue_refresh_token()
        ...  # GMAIL_SMTP = oauth.settings(), and the oauth_* options from oauth.mailer_options()
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import secrets
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from .constants import MAIL_SCOPE, SANDBOX_USER
from .loopback import loopback_host

__all__ = ["SANDBOX_CLIENT_ID", "SANDBOX_CLIENT_SECRET", "SCOPE", "OAuthServer"]

SCOPE = MAIL_SCOPE
SANDBOX_CLIENT_ID = "sandbox-client.apps.googleusercontent.com"
SANDBOX_CLIENT_SECRET = "GOCSPX-sandbox-client-secret"  # noqa: S105 - a public, sandbox-only secret
CODE_LIFETIME = 600.0


@dataclass
class _Grant:
    """A refresh token: whose, which client, which scope; revoked or not."""

    user: str
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class _Access:
    user: str
    scope: str
    expires_at: float
    refresh_token: str | None
    revoked: bool = False


@dataclass
class _Code:
    user: str
    client_id: str
    scope: str
    redirect_uri: str
    challenge: str | None
    expires_at: float


class OAuthServer:
    """Token, authorization and revocation endpoints on 127.0.0.1, in a thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clients: dict[str, str] | None = None,
        users: tuple[str, ...] = (SANDBOX_USER,),
        access_token_lifetime: int = 3600,
        token_length: int = 160,
    ) -> None:
        self.host = loopback_host(host)
        self.port = port
        self.clients = dict(clients if clients is not None else {SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET})
        self.users = tuple(users)
        if not self.users:
            raise ValueError("The sandbox OAuth2 server needs at least one user.")
        self.access_token_lifetime = access_token_lifetime
        """Seconds an access token is valid for (Google: 3599)."""
        self.token_length = token_length
        """Characters of each access token; Gmail's are about 200. Long ones test the 334 continuation."""
        self.refresh_token_lifetime: int | None = None
        """Set (e.g. 604799) to answer like an app in "Testing": ``refresh_token_expires_in``."""
        self.approve_as: str | None = None
        self.grant_scope: str | None = None
        self.deny = False
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, _Access] = {}
        self._codes: dict[str, _Code] = {}
        self.token_requests = 0
        """POSTs to the token endpoint since the start or the last :meth:`reset`."""
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<OAuthServer {'running' if self.running else 'stopped'} {self.base_url}>"

    # -- start and stop -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> OAuthServer:
        if self._server is not None:
            return self
        server = http.server.ThreadingHTTPServer((self.host, self.port), _handler(self))
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="gmail-sandbox-oauth", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses and settings -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def auth_uri(self) -> str:
        return f"{self.base_url}/auth"

    @property
    def revoke_uri(self) -> str:
        return f"{self.base_url}/revoke"

    @property
    def client_id(self) -> str:
        return next(iter(self.clients))

    @property
    def client_secret(self) -> str:
        return self.clients[self.client_id]

    def settings(self) -> dict[str, str]:
        """``GMAIL_SMTP`` keys that point the app at this server."""
        return {"OAUTH_TOKEN_URI": self.token_uri, "OAUTH_AUTH_URI": self.auth_uri}

    def mailer_options(self, refresh_token: str | None = None, *, user: str | None = None) -> dict[str, str]:
        """The ``oauth_*`` backend options for a user (a new refresh token unless one is given)."""
        return {
            "oauth_client_id": self.client_id,
            "oauth_client_secret": self.client_secret,
            "oauth_refresh_token": refresh_token or self.issue_refresh_token(user or self.users[0]),
        }

    # -- tokens, for tests ------------------------------------------------------------------

    def _new_access_token(self) -> str:
        body = secrets.token_urlsafe(self.token_length)[: max(8, self.token_length - 5)]
        return f"ya29.{body}"

    def issue_refresh_token(self, user: str | None = None, *, scope: str = SCOPE, client_id: str | None = None) -> str:
        """A refresh token for ``user`` (as if they had consented), without the browser."""
        token = "1//sandbox-" + secrets.token_urlsafe(48)
        with self._lock:
            self._grants[token] = _Grant(user or self.users[0], client_id or self.client_id, scope)
        return token

    def revoke(self, token: str) -> bool:
        """Revoke a refresh token (and every access token from it), or one access token."""
        with self._lock:
            grant = self._grants.get(token)
            if grant is not None:
                grant.revoked = True
                for issued in self._access.values():
                    if issued.refresh_token == token:
                        issued.revoked = True
                return True
            access = self._access.get(token)
            if access is not None:
                access.revoked = True
                return True
        return False

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (as an hour later)."""
        with self._lock:
            for access in self._access.values():
                access.expires_at = 0.0

    def check_access_token(self, token: str) -> tuple[str, str] | None:
        """(user, scope) when ``token`` is a live access token issued here; None otherwise."""
        with self._lock:
            access = self._access.get(token)
            if access is None or access.revoked or access.expires_at <= time.time():
                return None
            return access.user, access.scope

    def issued_tokens(self) -> list[str]:
        """Every refresh and access token issued so far (for tests that check nothing leaks)."""
        with self._lock:
            return [*self._grants, *self._access]

    def reset(self) -> None:
        """Forget every token and code, the counters and the consent settings."""
        with self._lock:
            self._grants.clear()
            self._access.clear()
            self._codes.clear()
            self.token_requests = 0
        self.approve_as = None
        self.grant_scope = None
        self.deny = False
        self.refresh_token_lifetime = None

    # -- the endpoints --------------------------------------------------------------------

    def _issue_access(self, user: str, scope: str, refresh_token: str | None) -> dict[str, Any]:
        token = self._new_access_token()
        self._access[token] = _Access(user, scope, time.time() + self.access_token_lifetime, refresh_token)
        return {
            "access_token": token,
            "expires_in": self.access_token_lifetime,
            "scope": scope,
            "token_type": "Bearer",
        }

    def _client_ok(self, form: dict[str, str]) -> bool:
        expected = self.clients.get(form.get("client_id", ""))
        return expected is not None and hmac.compare_digest(expected, form.get("client_secret", ""))

    def token_endpoint(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests += 1
            if not self._client_ok(form):
                return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
            grant_type = form.get("grant_type", "")
            if grant_type == "refresh_token":
                return self._refresh_grant(form)
            if grant_type == "authorization_code":
                return self._code_grant(form)
            return 400, {"error": "unsupported_grant_type", "error_description": f"Invalid grant_type: {grant_type}"}

    def _refresh_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token = form.get("refresh_token", "")
        grant = self._grants.get(token)
        if grant is None or grant.revoked or grant.client_id != form.get("client_id"):
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        requested = form.get("scope", "").split()
        if requested and not set(requested) <= set(grant.scope.split()):
            return 400, {"error": "invalid_scope", "error_description": "Bad Request"}
        return 200, self._issue_access(grant.user, grant.scope, token)

    def _code_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        code = self._codes.pop(form.get("code", ""), None)
        if code is None or code.expires_at <= time.time() or code.client_id != form.get("client_id"):
            return 400, {"error": "invalid_grant", "error_description": "Malformed auth code."}
        if code.redirect_uri != form.get("redirect_uri", ""):
            return 400, {"error": "redirect_uri_mismatch", "error_description": "Bad Request"}
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not hmac.compare_digest(digest, code.challenge):
                return 400, {"error": "invalid_grant", "error_description": "Invalid code verifier."}
        refresh_token = "1//sandbox-" + secrets.token_urlsafe(48)
        self._grants[refresh_token] = _Grant(code.user, code.client_id, code.scope)
        answer = self._issue_access(code.user, code.scope, refresh_token)
        answer["refresh_token"] = refresh_token
        if self.refresh_token_lifetime is not None:
            answer["refresh_token_expires_in"] = self.refresh_token_lifetime
        return 200, answer

    def authorize(self, params: dict[str, str]) -> tuple[int, str]:
        """(status, Location or error text) for a GET of the authorization endpoint."""
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if client_id not in self.clients:
            return 401, "Error 401: invalid_client. The OAuth client was not found."
        if not redirect_uri.startswith(("http://", "https://")):
            return 400, "Error 400: redirect_uri_mismatch."
        if params.get("response_type") != "code":
            return 400, "Error 400: unsupported_response_type."
        if params.get("code_challenge") and params.get("code_challenge_method", "plain") != "S256":
            return 400, "Error 400: invalid_request. Only S256 code challenges are supported here."
        answer: dict[str, str] = {}
        if self.deny:
            answer["error"] = "access_denied"
        else:
            hint = params.get("login_hint", "").lower()
            known = {user.lower(): user for user in self.users}
            user = self.approve_as or known.get(hint) or self.users[0]
            scope = self.grant_scope if self.grant_scope is not None else params.get("scope", "")
            code = "4/sandbox-" + secrets.token_urlsafe(32)
            with self._lock:
                self._codes[code] = _Code(
                    user,
                    client_id,
                    scope,
                    redirect_uri,
                    params.get("code_challenge") or None,
                    time.time() + CODE_LIFETIME,
                )
            answer.update(code=code, scope=scope)
        if "state" in params:
            answer["state"] = params["state"]
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return 302, f"{redirect_uri}{separator}{urlencode(answer)}"


def _handler(oauth: OAuthServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "sandbox-oauth"
        protocol_version = "HTTP/1.1"

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            return {key: values[0] for key, values in parse_qs(raw, keep_blank_values=True).items()}

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: dict[str, Any]) -> None:
            self._send(status, json.dumps(data).encode(), "application/json; charset=utf-8")

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            form = self._form()
            if path == "/token":
                self._json(*oauth.token_endpoint(form))
            elif path == "/revoke":
                token = form.get("token") or parse_qs(urlsplit(self.path).query).get("token", [""])[0]
                if oauth.revoke(token):
                    self._json(200, {})
                else:
                    self._json(400, {"error": "invalid_token", "error_description": "Bad Request"})
            else:
                self._json(404, {"error": "not_found"})

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/auth":
                self._send(404, b"Not found", "text/plain; charset=utf-8")
                return
            params = {key: values[0] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
            status, text = oauth.authorize(params)
            if status == 302:
                self._send(302, b"", "text/plain; charset=utf-8", {"Location": text})
            else:
                self._send(status, text.encode(), "text/plain; charset=utf-8")

        def log_message(self, format: str, *args: Any) -> None:  # tokens travel in query strings
            pass

    return Handler
