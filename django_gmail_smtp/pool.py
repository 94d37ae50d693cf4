"""Signed-in connections kept between ``send_mail()`` calls.

One idle connection per process, thread and configuration: a thread takes its
own connection out while it sends and puts it back afterwards, so a connection
is never used by two threads at once, and never shared between different
credentials or servers (the key holds a digest of the password, not the
password). Before reuse a connection is checked without any I/O (did the server
hang up or send ``451 4.4.2 Timeout``?) and, after ``POOL_NOOP_AFTER`` idle
seconds, with ``NOOP``; after ``POOL_IDLE_TIMEOUT`` idle seconds it is closed
instead. After ``fork`` the child starts with an empty pool and never touches
the parent's sockets. At exit every connection is closed with ``QUIT``.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import smtplib
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

from .conf import SmtpConfig
from .deadline import Deadline
from .hosts import normalize_host
from .session import SMTPSession

__all__ = ["checkin", "checkout", "close_all", "config_key", "idle_count"]

_QUIT_TIMEOUT = 2.0  # seconds a QUIT may take at exit or when dropping an idle connection


@dataclass(eq=False)
class _Idle:
    session: SMTPSession
    thread: threading.Thread
    since: float


_lock = threading.Lock()
_idle: dict[tuple[int, Hashable], _Idle] = {}
_pid = os.getpid()


def config_key(config: SmtpConfig) -> Hashable:
    """What makes two configurations interchangeable: server, TLS, identity (password digested)."""
    return (
        normalize_host(config.host),
        config.port,
        config.use_tls,
        config.use_ssl,
        config.username,
        hashlib.sha256(config.password.encode("utf-8", "surrogatepass")).digest(),
        config.auth_method,
        hashlib.sha256(
            f"{config.oauth_client_id}\0{config.oauth_refresh_token}".encode("utf-8", "surrogatepass")
        ).digest(),
        config.ssl_cafile,
        config.ssl_certfile,
        config.ssl_keyfile,
        config.timeout,
    )


def _forget_after_fork() -> None:
    """In a forked child: the parent's connections are not ours; drop them without any I/O."""
    global _lock, _pid
    _lock = threading.Lock()  # another thread may have held it at fork time
    _idle.clear()
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _check_process() -> None:
    if _pid != os.getpid():  # forked without the hook (e.g. by a C extension)
        _forget_after_fork()


def _close(session: SMTPSession, *, wait: bool = False) -> None:
    """QUIT; a server that does not answer is simply cut off.

    Without ``wait`` the 221 is not awaited: the thread that happens to sweep a
    stale connection should not pay a round trip for it.
    """
    if not session.usable:
        session.abort()
        return
    try:
        session.quit(wait=wait, within=_QUIT_TIMEOUT)
    except (smtplib.SMTPException, OSError):
        session.abort()


def _sweep(now: float, idle_timeout: float) -> list[SMTPSession]:
    """Take out (under the lock) idle connections that are too old or whose thread has ended."""
    stale = [key for key, idle in _idle.items() if not idle.thread.is_alive() or now - idle.since > idle_timeout]
    return [_idle.pop(key).session for key in stale]


def checkout(
    config: SmtpConfig, *, noop_after: float | None, idle_timeout: float, limit: Deadline | None = None
) -> SMTPSession | None:
    """This thread's idle connection for ``config`` if it is still good, else None.

    Also closes other idle connections past ``idle_timeout`` or left by threads that ended.
    ``limit`` becomes the session's :attr:`~SMTPSession.limit` (its NOOP check included).
    """
    _check_process()
    now = time.monotonic()
    key = (threading.get_ident(), config_key(config))
    with _lock:
        idle = _idle.pop(key, None)
        stale = _sweep(now, idle_timeout)
    for session in stale:
        _close(session)
    if idle is None:
        return None
    session = idle.session
    if now - idle.since > idle_timeout:
        _close(session)
        return None
    session.limit = limit
    if session.pid != os.getpid() or not session.idle_check(noop_after):
        session.abort()
        return None
    return session


def checkin(config: SmtpConfig, session: SMTPSession, *, idle_timeout: float) -> None:
    """Keep ``session`` as this thread's idle connection for ``config``."""
    _check_process()
    if session.pid != os.getpid() or not session.usable:
        session.abort()
        return
    now = time.monotonic()
    key = (threading.get_ident(), config_key(config))
    with _lock:
        previous = _idle.pop(key, None)
        _idle[key] = _Idle(session, threading.current_thread(), now)
        stale = _sweep(now, idle_timeout)
    if previous is not None and previous.session is not session:
        stale.append(previous.session)  # two backends of one thread: keep the fresher connection
    for old in stale:
        _close(old)


def idle_count() -> int:
    """How many connections are waiting in the pool (all threads)."""
    _check_process()
    with _lock:
        return len(_idle)


def close_all() -> None:
    """Close every pooled connection with QUIT (at exit, in tests, after settings change)."""
    _check_process()
    with _lock:
        sessions = [idle.session for idle in _idle.values()]
        _idle.clear()
    for session in sessions:
        _close(session, wait=True)


atexit.register(close_all)
