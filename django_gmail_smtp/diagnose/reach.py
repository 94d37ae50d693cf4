"""Steps 1 and 2: the DNS lookup, then a TCP connection to every address it gave, all at once.

Both bounded by the timeout: the lookup runs in a thread that is abandoned when it drags (it
cannot be cancelled), and a broken IPv6 route cannot hide a working IPv4 address.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from django.utils.translation import gettext as _

from ..causes import CATALOGUE
from ..conf import SmtpConfig
from ..diagnosis import WARNING, Run
from ..exceptions import describe_error
from .steps import cause_of

__all__ = ["FAMILIES", "AddrInfo", "connect_all", "lookup", "resolve"]

FAMILIES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
AddrInfo = tuple[int, str, tuple[Any, ...]]  # family, address, sockaddr


def resolve(host: str, port: int, timeout: float) -> list[AddrInfo]:
    """getaddrinfo() in a thread, abandoned after ``timeout`` (it cannot be cancelled)."""
    outcome: dict[str, Any] = {}

    def lookup() -> None:
        try:
            outcome["result"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=lookup, name="gmail_check-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(_("no answer within %(timeout)s s") % {"timeout": f"{timeout:g}"})
    if "error" in outcome:
        raise outcome["error"]
    seen: set[tuple[int, str]] = set()
    found: list[AddrInfo] = []
    for family, _type, _proto, _name, sockaddr in outcome["result"]:
        key = (family, str(sockaddr[0]))
        if key not in seen and family in FAMILIES:
            seen.add(key)
            found.append((family, str(sockaddr[0]), tuple(sockaddr)))
    return found


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def lookup(run: Run, config: SmtpConfig, timeout: float) -> list[AddrInfo] | None:
    """The DNS step: the host's IPv4 and IPv6 addresses (None: the step failed)."""
    step = run.begin("dns", _("DNS lookup of %(host)s") % {"host": config.host})
    try:
        addresses = resolve(config.host, config.port, timeout)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "no IPv4 or IPv6 address")
    except TimeoutError as exc:
        step.details.append(_("The resolver did not answer within %(timeout)s s.") % {"timeout": f"{timeout:g}"})
        run.fail(step, CATALOGUE["dns_timeout"], describe_error(exc))
        return None
    except (OSError, UnicodeError) as exc:
        run.fail(step, CATALOGUE["dns_failure"], describe_error(exc))
        return None
    if _is_ip(config.host):
        step.details.append(_("%(host)s is an IP address: no lookup needed.") % {"host": config.host})
    for family, address, _sockaddr in addresses:
        record = "A" if family == socket.AF_INET else "AAAA"
        step.details.append(f"{record} {address}")
    step.data = {
        "host": config.host,
        "addresses": [{"family": FAMILIES[f], "address": a} for f, a, _s in addresses],
    }
    run.end(step)
    return addresses


def _connect_once(family: int, sockaddr: tuple[Any, ...], timeout: float) -> tuple[float, BaseException | None]:
    started = time.perf_counter()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except OSError as exc:
        return time.perf_counter() - started, exc
    finally:
        sock.close()
    return time.perf_counter() - started, None


def _error_rank(exc: BaseException) -> int:
    """Which failure tells the most: a silent port, then a refusal, then the rest."""
    if isinstance(exc, TimeoutError):
        return 0
    if isinstance(exc, ConnectionRefusedError):
        return 1
    return 2


def connect_all(run: Run, config: SmtpConfig, addresses: list[AddrInfo], timeout: float) -> bool:
    """Try every address at once (a broken IPv6 route must not hide a working IPv4 one)."""
    step = run.begin("connect", _("TCP connection to port %(port)s") % {"port": config.port})
    results: dict[int, tuple[float, BaseException | None]] = {}

    def attempt(index: int, family: int, sockaddr: tuple[Any, ...]) -> None:
        results[index] = _connect_once(family, sockaddr, timeout)

    threads = [
        threading.Thread(target=attempt, args=(i, family, sockaddr), daemon=True, name="gmail_check-tcp")
        for i, (family, _address, sockaddr) in enumerate(addresses)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))

    attempts: list[dict[str, Any]] = []
    failures: list[BaseException] = []
    working: list[str] = []
    for i, (family, address, _sockaddr) in enumerate(addresses):
        elapsed, exc = results.get(i, (timeout, TimeoutError("timed out")))
        label = f"{address} ({FAMILIES[family]})"
        if exc is None:
            working.append(address)
            step.details.append(_("%(address)s: connected in %(seconds).2fs") % {"address": label, "seconds": elapsed})
        else:
            failures.append(exc)
            step.details.append(_("%(address)s: %(error)s") % {"address": label, "error": describe_error(exc)})
        attempts.append(
            {
                "family": FAMILIES[family],
                "address": address,
                "ok": exc is None,
                "duration": round(elapsed, 4),
                "error": "" if exc is None else describe_error(exc),
            }
        )
    step.data = {"port": config.port, "attempts": attempts, "working": working}
    if not working:
        worst = min(failures, key=_error_rank)
        run.fail(step, cause_of(worst, "connect", config), describe_error(worst))
        return False
    if failures:
        failed = sorted({a["family"] for a in attempts if not a["ok"]})
        good = sorted({a["family"] for a in attempts if a["ok"]})
        step.details.append(
            _(
                "Only %(good)s works; %(failed)s failed. Django tries the addresses in the order "
                "above, so every connection may first wait for the failing one: fix that route or "
                "prefer %(good)s for the mail host."
            )
            % {"good": "/".join(good), "failed": "/".join(failed)}
        )
        run.end(step, WARNING)
    else:
        run.end(step)
    return True
