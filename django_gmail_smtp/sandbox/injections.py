"""Failures the sandbox can be told to produce, the way Gmail produces them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

AUTH_KINDS = frozenset({"bad_credentials", "app_password_required", "web_login_required", "too_many_logins"})
MAIL_KINDS = frozenset({"throttled", "temporary", "daily_quota"})

#: kind -> (required parameters, optional parameters)
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    **{kind: (frozenset(), frozenset()) for kind in AUTH_KINDS | MAIL_KINDS},
    "too_large": (frozenset(), frozenset({"at"})),
    "too_many_recipients": (frozenset(), frozenset()),
    "bad_recipient": (frozenset(), frozenset({"address"})),
    "disconnect_after": (frozenset({"messages"}), frozenset()),
    "idle_timeout": (frozenset({"seconds"}), frozenset()),
    "no_greeting": (frozenset(), frozenset()),
    # The receiving side (the accounts' mailboxes, IMAP and POP3).
    "spam": (frozenset(), frozenset()),
    "slow_arrival": (frozenset({"seconds"}), frozenset()),
    "auth_results": (frozenset(), frozenset({"spf", "dkim", "dmarc"})),
    "imap_disabled": (frozenset(), frozenset()),
    "pop_disabled": (frozenset(), frozenset()),
    "mailbox_bad_credentials": (frozenset(), frozenset()),
}
VERDICTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})


@dataclass(eq=False)
class Injection:
    """A failure waiting to happen; ``times=None`` means it fires forever."""

    kind: str
    times: int | None = 1
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


def validate(kind: str, times: int | None, params: dict[str, Any]) -> None:
    """Raise ``ValueError`` for an unknown kind, a bad ``times`` or wrong parameters."""
    if kind not in KINDS:
        raise ValueError(f"Unknown failure kind {kind!r}; choose one of: {', '.join(sorted(KINDS))}.")
    if times is not None and (not isinstance(times, int) or times < 1):
        raise ValueError(f"times must be a positive integer or None (forever), not {times!r}.")
    required, optional = KINDS[kind]
    missing = required - params.keys()
    if missing:
        raise ValueError(f"{kind!r} needs the parameter(s): {', '.join(sorted(missing))}.")
    unknown = params.keys() - required - optional
    if unknown:
        raise ValueError(f"{kind!r} does not take the parameter(s): {', '.join(sorted(unknown))}.")
    if kind == "disconnect_after" and not (isinstance(params["messages"], int) and params["messages"] >= 1):
        raise ValueError("disconnect_after needs messages=N with N >= 1.")
    if kind == "idle_timeout" and not (isinstance(params["seconds"], int | float) and params["seconds"] > 0):
        raise ValueError("idle_timeout needs seconds=S with S > 0.")
    if kind == "slow_arrival" and not (isinstance(params["seconds"], int | float) and params["seconds"] > 0):
        raise ValueError("slow_arrival needs seconds=S with S > 0.")
    if kind == "auth_results" and any(value not in VERDICTS for value in params.values()):
        raise ValueError(f"auth_results takes spf=, dkim=, dmarc= with one of: {', '.join(sorted(VERDICTS))}.")
    if kind == "too_large" and params.get("at") not in (None, "mail", "data"):
        raise ValueError("too_large takes at='mail' or at='data' (default: MAIL if it has SIZE=).")


class InjectionBoard:
    """The pending injections, shared between the test thread and the server thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Injection] = []

    def add(self, injection: Injection) -> Injection:
        with self._lock:
            self._pending.append(injection)
        return injection

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def peek(self, kinds: frozenset[str] | str, when: Callable[[Injection], bool] | None = None) -> Injection | None:
        """The oldest pending injection of one of ``kinds`` (and matching ``when``), unfired."""
        kinds = frozenset({kinds}) if isinstance(kinds, str) else kinds
        with self._lock:
            for injection in self._pending:
                if injection.kind in kinds and (when is None or when(injection)):
                    return injection
        return None

    def take(self, kinds: frozenset[str] | str, when: Callable[[Injection], bool] | None = None) -> Injection | None:
        """Like :meth:`peek`, but the injection fires: count it, drop it once exhausted."""
        kinds = frozenset({kinds}) if isinstance(kinds, str) else kinds
        with self._lock:
            for injection in self._pending:
                if injection.kind in kinds and (when is None or when(injection)):
                    injection.fired += 1
                    if injection.exhausted:
                        self._pending.remove(injection)
                    return injection
        return None

    def fire(self, injection: Injection) -> bool:
        """Fire a specific injection found with :meth:`peek`; False if it is gone meanwhile."""
        with self._lock:
            if injection not in self._pending:
                return False
            injection.fired += 1
            if injection.exhausted:
                self._pending.remove(injection)
            return True
