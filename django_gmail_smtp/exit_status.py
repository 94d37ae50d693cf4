"""The exit statuses of a diagnosis: one table of each status, what ends with it and what it means.

``gmail_check`` exits with :func:`exit_code` of its :class:`~.diagnosis.Diagnosis` and prints
:data:`EXIT_STATUSES` in its ``--help``; :data:`EXIT_CODES` and :data:`ROUND_TRIP_EXIT_CODES` are
the same table by key. A status never changes meaning: new ones get the next free number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext_lazy

__all__ = [
    "EXIT_CODES",
    "EXIT_OK",
    "EXIT_STATUSES",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "ROUND_TRIP_EXIT_CODES",
    "ExitStatus",
    "exit_code",
]

EXIT_OK = 0
#: A bug or an error nobody expected (Django's default CommandError status).
EXIT_UNEXPECTED = 1
#: Wrong command-line usage (argparse's status).
EXIT_USAGE = 2


@dataclass(frozen=True)
class ExitStatus:
    """One exit status: its number, what it means for people, and what ends a run with it.

    ``key`` names it in :data:`EXIT_CODES` (a step of the SMTP test) or, with ``round_trip``, in
    :data:`ROUND_TRIP_EXIT_CODES`. A failed SMTP step ends with the status that lists it in
    ``steps``; a failed round-trip step with the one that lists its cause in ``causes``, else its
    step in ``steps``.
    """

    code: int
    meaning: Any  # a lazy translation
    key: str = ""
    steps: tuple[str, ...] = ()
    causes: tuple[str, ...] = ()
    round_trip: bool = False


def _step(code: int, key: str, meaning: Any, *also: str) -> ExitStatus:
    return ExitStatus(code, meaning, key, steps=(key, *also))


def _trip(
    code: int, key: str, meaning: Any, *, steps: tuple[str, ...] = (), causes: tuple[str, ...] = ()
) -> ExitStatus:
    return ExitStatus(code, meaning, key, steps=steps, causes=causes, round_trip=True)


EXIT_STATUSES: tuple[ExitStatus, ...] = (
    ExitStatus(EXIT_OK, gettext_lazy("every step passed")),
    ExitStatus(EXIT_UNEXPECTED, gettext_lazy("unexpected error (a bug: please report it)")),
    ExitStatus(EXIT_USAGE, gettext_lazy("wrong command-line usage")),
    _step(3, "config", gettext_lazy("configuration error (nothing was sent over the network)")),
    _step(4, "dns", gettext_lazy("DNS lookup failed")),
    _step(5, "connect", gettext_lazy("TCP connection failed (refused, blocked, unreachable)")),
    _step(6, "greeting", gettext_lazy("no SMTP greeting (wrong TLS mode for the port, or blocked)")),
    _step(7, "tls", gettext_lazy("TLS or STARTTLS failed (certificate, wrong mode)")),
    _step(8, "ehlo", gettext_lazy("EHLO rejected")),
    _step(9, "auth", gettext_lazy("sign-in failed (password, app password, Google's checks)")),
    _step(10, "send", gettext_lazy("the test message was refused (--send-to)"), "round_trip_send"),
    _step(11, "quit", gettext_lazy("QUIT failed")),
    # Added later, so numbered after the others (exit codes never change meaning).
    _step(12, "token", gettext_lazy("no OAuth2 access token (refresh token expired or revoked, wrong client)")),
    _trip(
        13,
        "mailbox_connect",
        gettext_lazy("--round-trip: the IMAP/POP3 server could not be reached (DNS, TCP, TLS)"),
        steps=("imap_connect", "pop_connect"),
    ),
    _trip(
        14,
        "mailbox_disabled",
        gettext_lazy("--round-trip: IMAP (or POP) is turned off for the account"),
        causes=("imap_disabled", "pop_disabled"),
    ),
    _trip(
        15,
        "mailbox_sign_in",
        gettext_lazy("--round-trip: the mailbox sign-in was refused"),
        steps=("imap_auth", "pop_auth"),
    ),
    _trip(
        16,
        "mailbox_folder",
        gettext_lazy("--round-trip: a mailbox folder could not be opened"),
        steps=("imap_folders",),
        causes=("imap_no_folder",),
    ),
    _trip(
        17,
        "not_arrived",
        gettext_lazy("--round-trip: the test message did not arrive in time"),
        causes=("round_trip_timeout",),
    ),
    _trip(18, "spam", gettext_lazy("--round-trip: the test message arrived in Spam"), causes=("round_trip_spam",)),
    _trip(
        19,
        "mailbox_protocol",
        gettext_lazy("--round-trip: the mailbox server broke off or broke the protocol"),
        causes=("imap_protocol", "pop_protocol"),
    ),
)

#: The exit status for a failure at each step of the SMTP test.
EXIT_CODES: Mapping[str, int] = {s.key: s.code for s in EXIT_STATUSES if s.key and not s.round_trip}
#: Exit statuses of the round trip (``--round-trip``), by what went wrong with the mailbox.
ROUND_TRIP_EXIT_CODES: Mapping[str, int] = {s.key: s.code for s in EXIT_STATUSES if s.round_trip}

_BY_STEP = {step: s.code for s in EXIT_STATUSES if not s.round_trip for step in s.steps}
_TRIP_BY_CAUSE = {cause: s.code for s in EXIT_STATUSES if s.round_trip for cause in s.causes}
_TRIP_BY_STEP = {step: s.code for s in EXIT_STATUSES if s.round_trip for step in s.steps}


def exit_code(failed_step: str | None, cause_id: str = "", *, unexpected: bool = False) -> int:
    """The exit status of a run that failed at ``failed_step`` (None: it passed) with ``cause_id``."""
    if failed_step is None:
        return EXIT_OK
    if unexpected:
        return EXIT_UNEXPECTED
    if failed_step in _BY_STEP:
        return _BY_STEP[failed_step]
    return _TRIP_BY_CAUSE.get(cause_id) or _TRIP_BY_STEP.get(failed_step) or EXIT_UNEXPECTED
