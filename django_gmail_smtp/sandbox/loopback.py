"""Loopback-only addresses for the sandbox's servers (SMTP and OAuth2)."""

from __future__ import annotations

import ipaddress

__all__ = ["loopback_host"]


def loopback_host(host: str) -> str:
    """``host`` as a loopback IP address; ``ValueError`` for anything else."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"The Gmail sandbox listens on loopback only; {host!r} is not a loopback address (use 127.0.0.1)."
        )
    return str(address)
