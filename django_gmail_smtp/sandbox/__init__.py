"""A local, Gmail-like SMTP server for development and tests.

``GmailSandbox`` needs the ``sandbox`` extra (aiosmtpd, trustme) and is imported on first
use, so this package (and its pytest plugin) can be imported without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constants import SANDBOX_PASSWORD, SANDBOX_USER
from .injections import Injection
from .oauth_server import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, OAuthServer
from .received import ReceivedMessage

if TYPE_CHECKING:
    from .server import GmailSandbox, PortInUseError

__all__ = [
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_PASSWORD",
    "SANDBOX_USER",
    "GmailSandbox",
    "Injection",
    "OAuthServer",
    "PortInUseError",
    "ReceivedMessage",
]


def __getattr__(name: str) -> Any:
    if name in ("GmailSandbox", "PortInUseError"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
