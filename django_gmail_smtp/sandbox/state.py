"""What every connection of one sandbox shares, whatever its protocol: accounts, sign-in, counters.

SMTP (:mod:`.protocol`), IMAP and POP3 connections sign in against the same accounts and
OAuth2 tokens, draw from the same injected failures and count into the same counters; the
sandbox (:mod:`.server`) holds one :class:`SandboxState` for all of them.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .constants import MAIL_SCOPE  # also importable from here
from .injections import InjectionBoard
from .received import ReceivedMessage

__all__ = ["MAIL_SCOPE", "XOAUTH2_CHALLENGE", "AuthRecord", "SandboxState", "new_session_id", "parse_xoauth2"]


# The base64 JSON challenge Gmail sends after a rejected XOAUTH2 token, byte for byte.
XOAUTH2_CHALLENGE = base64.b64encode(
    json.dumps({"status": "400", "schemes": "Bearer", "scope": MAIL_SCOPE}, separators=(",", ":")).encode()
).decode("ascii")


def new_session_id() -> str:
    """An id shaped like the ones in Gmail's ``<id> - gsmtp`` reply tails."""
    return (
        f"{secrets.token_hex(7)[:13]}-{secrets.token_hex(6)[:11]}"
        f"sm{secrets.randbelow(10**7):07d}{secrets.choice('abcdefgh')}.{secrets.randbelow(100)}"
    )


def parse_xoauth2(blob: bytes) -> tuple[str, str]:
    """(user, bearer token) of an XOAUTH2 initial response; empty strings where missing."""
    fields = dict(part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part)
    bearer = fields.get("auth", "")
    return fields.get("user", ""), bearer[7:] if bearer[:7].lower() == "bearer " else ""


@dataclass(frozen=True)
class AuthRecord:
    """One AUTH exchange, as the sandbox saw it (never the secret itself).

    ``initial_response`` is True when the credentials came on the ``AUTH`` line itself,
    False when they followed a ``334`` continuation; ``command_length`` is the length of the
    ``AUTH`` line (CRLF excluded).
    """

    mechanism: str
    initial_response: bool
    command_length: int
    user: str | None
    ok: bool
    reason: str = ""


class Connection(Protocol):
    """What the sandbox asks of a live SMTP connection (:class:`.protocol.GmailSMTP`)."""

    def abort(self) -> None: ...

    def rearm_idle_timer(self) -> None: ...


class SandboxState:
    """What all connections of one sandbox share: settings, injections, counters, sink."""

    def __init__(
        self,
        *,
        users: Mapping[str, str],
        server_name: str,
        size_limit: int,
        max_recipients: int,
        offer_starttls: bool,
        require_tls_for_auth: bool,
        deliver: Callable[[ReceivedMessage], None],
    ) -> None:
        self._users = {user.lower(): (user, password) for user, password in users.items()}
        self.server_name = server_name
        self.size_limit = size_limit
        self.max_recipients = max_recipients
        self.offer_starttls = offer_starttls
        self.require_tls_for_auth = require_tls_for_auth
        self.deliver = deliver
        self.injections = InjectionBoard()
        self._lock = threading.Lock()
        self._live: set[Connection] = set()
        self.auth_attempts = 0
        self.connections = 0
        self.auth_log: list[AuthRecord] = []
        # Set by GmailSandbox.attach_oauth(): (user, scope) for a live access token, else None.
        self.token_checker: Callable[[str], tuple[str, str] | None] | None = None

    def check_token(self, user: str, token: str) -> tuple[str | None, str]:
        """(the account name, "") when ``token`` is a live token for ``user`` with the Gmail scope;
        (None, why) otherwise."""
        if self.token_checker is None:
            return None, "no OAuth2 server attached"
        found = self.token_checker(token)
        if found is None:
            return None, "unknown, expired or revoked token"
        owner, scope = found
        if owner.lower() != user.lower():
            return None, "token of another user"
        if MAIL_SCOPE not in scope.split():
            return None, "token without the https://mail.google.com/ scope"
        return owner, ""

    def sasl_user(self, mechanism: str, blob: bytes) -> str | None:
        """The account a PLAIN or XOAUTH2 initial response signs in as (IMAP, POP3), or None."""
        if mechanism == "PLAIN":
            parts = blob.split(b"\0")
            return self.check_login(parts[1], parts[2]) if len(parts) == 3 else None
        claimed, token = parse_xoauth2(blob)
        return self.check_token(claimed, token)[0] if claimed and token else None

    def record_auth(self, record: AuthRecord) -> None:
        with self._lock:
            self.auth_log.append(record)

    def check_login(self, login: bytes, password: bytes) -> str | None:
        """The account name if ``login``/``password`` match (address case-insensitive)."""
        found = self._users.get(login.decode("utf-8", "replace").lower())
        if found is None:
            return None
        user, expected = found
        return user if hmac.compare_digest(expected.encode(), password) else None

    def count_auth(self) -> None:
        with self._lock:
            self.auth_attempts += 1

    def reset_counters(self) -> None:
        with self._lock:
            self.auth_attempts = 0
            self.connections = 0
            self.auth_log = []

    def opened(self, connection: Connection) -> None:
        with self._lock:
            self.connections += 1
            self._live.add(connection)

    def closed(self, connection: Connection) -> None:
        with self._lock:
            self._live.discard(connection)

    def live(self) -> list[Connection]:
        with self._lock:
            return list(self._live)
