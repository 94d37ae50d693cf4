"""Finding a secret anywhere it could leak: texts, bytes, and the local variables of traceback frames.

A secret counts as leaked when any of its *forms* appears: the secret itself, its base64 (AUTH
LOGIN), percent-encoded, the AUTH PLAIN string and blob (``\\0user\\0secret``, also with an
authorization identity), and the XOAUTH2 string and blob (``user=...\\x01auth=Bearer secret``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms(secret: str, username: str) -> set[str]:
    """Every encoding of ``secret`` a client sends or a server could echo."""
    plain = f"\0{username}\0{secret}"
    xoauth2 = f"user={username}\x01auth=Bearer {secret}\x01\x01"
    return {
        secret,
        _b64(secret),
        quote(secret, safe=""),
        plain,
        _b64(plain),
        _b64(f"{username}{plain}"),
        xoauth2,
        _b64(xoauth2),
    }


def all_forms(secrets: Iterable[str], username: str) -> set[str]:
    return {form for secret in secrets for form in forms(secret, username)}


def found_in(text: str | bytes, needles: set[str]) -> list[str]:
    """The forms that occur in ``text``."""
    if isinstance(text, bytes):
        return [n for n in needles if n.encode() in text]
    return [n for n in needles if n in text]


def raised(call: Callable[[], Any]) -> BaseException:
    """The exception ``call()`` raises (this frame's only local is ``call``, a lambda)."""
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable through ``__cause__`` and ``__context__``,
    whether or not ``__suppress_context__`` hides it from the default display."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]


def frames(tb: TracebackType | None) -> Iterator[Any]:
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def frame_leaks(exc: BaseException, needles: set[str]) -> list[str]:
    """What a Sentry-like tool would capture, searched for secrets.

    For every exception of the chain, every frame of its traceback, every local variable:
    a ``str`` or ``bytes`` value is searched as it is; any other value through its ``repr``
    (which is what such tools record for objects; containers show their items). Returns
    ``"<code name>.<variable>: <form>"`` for each hit.
    """
    hits = []
    for current in chain(exc):
        for frame in frames(current.__traceback__):
            for name, value in frame.f_locals.items():
                if isinstance(value, str | bytes):
                    text: str | bytes = value
                else:
                    text = repr(value)
                hits += [f"{frame.f_code.co_name}.{name}: {form!r}" for form in found_in(text, needles)]
    return hits
