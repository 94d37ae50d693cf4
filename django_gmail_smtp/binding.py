"""Where a stored secret may be sent: the destination it was entered for, sealed with it.

A stored account's secret (app password, OAuth2 client secret and refresh token) is encrypted
together with its *destination*: the SMTP host (lower case, without a trailing dot), port,
security mode and username, and, when the secret holds OAuth2 parts, the token endpoint
(``GMAIL_SMTP["OAUTH_TOKEN_URI"]``) they go to. Fernet authenticates the whole payload, so
the destination cannot be altered without the key, and a secret cannot be moved to another
destination by changing the row (admin form, shell, ``QuerySet.update()``, a fixture): the
destination of the row must equal the sealed one for the secret to be used at all.

The payload (the plaintext inside the Fernet token) is JSON::

    {"v": 2, "secret": {"password": "..."},
     "destination": {"host": "smtp.gmail.com", "port": 587, "security": "starttls",
                     "username": "shop@gmail.com", "token_uri": ""}}

Version 1 (before this binding existed) was the bare ``secret`` object; :func:`unseal` reports it
as unbound (``destination`` None), and such a secret is never used. Migration ``0003`` seals
every readable version-1 secret to its row's values once, at upgrade time.

Pure functions, no database and no key (the token endpoint is read from the settings):
:mod:`.models` encrypts and decrypts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.views.decorators.debug import sensitive_variables

from .app_settings import token_uri
from .hosts import normalize_host  # also importable from here

__all__ = [
    "BOUND_FIELDS",
    "FORMAT",
    "OAUTH_PARTS",
    "Destination",
    "Sealed",
    "current_token_uri",
    "destination_for",
    "normalize_host",
    "seal",
    "unseal",
    "uses_token_endpoint",
]

FORMAT = 2
BOUND_FIELDS = ("host", "port", "security", "username", "token_uri")
# Parts of a secret that go to the token endpoint (the client id travels with them).
OAUTH_PARTS = ("client_id", "client_secret", "refresh_token")


def normalize_uri(uri: str) -> str:
    """An endpoint address as compared for the binding: scheme and host in lower case, no trailing dot."""
    text = str(uri or "").strip()
    if not text:
        return ""
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:  # not a number: compared as written (E018 reports such an endpoint)
        return text
    netloc = normalize_host(parts.hostname or "")
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None:  # not expected in a token endpoint; kept so two such addresses differ
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Destination:
    """Where a secret may go. Build it with :meth:`of`, which normalises the values."""

    host: str
    port: int
    security: str
    username: str
    token_uri: str = ""

    @classmethod
    def of(cls, *, host: str, port: int | str, security: str, username: str, token_uri: str = "") -> Destination:
        return cls(
            host=normalize_host(host),
            port=int(port),
            security=str(security).strip().lower(),
            # Addresses are compared without case: Gmail (and the address's domain) ignore it.
            username=str(username).strip().lower(),
            token_uri=normalize_uri(token_uri),
        )

    def changes(self, current: Destination) -> list[str]:
        """The names of the fields (in :data:`BOUND_FIELDS` order) where ``current`` differs."""
        return [name for name in BOUND_FIELDS if getattr(self, name) != getattr(current, name)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sealed:
    """A decrypted payload: the secret, and the destination it is bound to (None: unbound, version 1)."""

    secret: dict[str, Any]
    destination: Destination | None

    def __repr__(self) -> str:  # never the secret
        return f"<Sealed parts={sorted(self.secret)} destination={self.destination!r}>"


def uses_token_endpoint(secret: Mapping[str, Any]) -> bool:
    """True when the secret holds OAuth2 parts, which go to the token endpoint."""
    return any(secret.get(part) for part in OAUTH_PARTS)


current_token_uri = token_uri
"""The token endpoint OAuth2 secrets are sent to now: the one the OAuth client uses."""


def destination_for(
    secret: Mapping[str, Any], *, host: str, port: int | str, security: str, username: str
) -> Destination:
    """The destination ``secret`` would be sent to with these row values (and the settings)."""
    return Destination.of(
        host=host,
        port=port,
        security=security,
        username=username,
        token_uri=current_token_uri() if uses_token_endpoint(secret) else "",
    )


@sensitive_variables()
def seal(secret: Mapping[str, Any], destination: Destination) -> str:
    """The plaintext to encrypt: ``secret`` and the destination it may be sent to."""
    return json.dumps({"v": FORMAT, "secret": dict(secret), "destination": destination.as_dict()}, sort_keys=True)


@sensitive_variables()
def unseal(plaintext: str) -> Sealed:
    """The secret and its destination; ``ValueError`` when the plaintext is not a payload."""
    data = json.loads(plaintext)
    if not isinstance(data, dict):
        raise ValueError("not a secret payload")
    if "v" not in data:  # version 1: the bare secret, bound to nothing
        return Sealed({str(key): value for key, value in data.items()}, None)
    if data.get("v") != FORMAT:
        raise ValueError("unknown secret payload version")
    secret, bound = data.get("secret"), data.get("destination")
    if not isinstance(secret, dict) or not isinstance(bound, dict):
        raise ValueError("not a secret payload")
    try:
        destination = Destination.of(**{name: bound[name] for name in BOUND_FIELDS})
    except (KeyError, TypeError, ValueError):
        raise ValueError("not a secret payload") from None
    return Sealed(secret, destination)
