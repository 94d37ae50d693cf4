"""Loopback-only addresses for the sandbox's servers (SMTP and OAuth2)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable

__all__ = ["busy_ports", "loopback_host"]


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


def busy_ports(host: str, ports: Iterable[int]) -> list[int]:
    """The ports among ``ports`` that something already holds on ``host`` (0, "any free port",
    is never busy). A probe, so that every taken port can be named at once before anything
    starts; the real listeners still report a port taken in between."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    busy: list[int] = []
    for port in ports:
        if port == 0:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the listeners do (asyncio's reuse_address): a port in TIME_WAIT is not busy.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                busy.append(port)
    return busy
