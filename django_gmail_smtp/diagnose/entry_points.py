"""The entry points of the connection test: :func:`run_check` for a resolved configuration,
:func:`check` for the one the backend would resolve."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from django.utils.translation import get_language

from .. import conf
from ..causes import CATALOGUE
from ..conf import SmtpConfig
from ..diagnosis import Diagnosis, Run, StepCallback
from ..exceptions import GmailConfigError, describe_error
from ..roundtrip.receive import receive
from ..roundtrip.trip import RoundTrip
from .configuration import check_config, config_error
from .conversation import Conversation
from .overrides import mailer_name
from .reach import connect_all, lookup
from .steps import DEFAULT_WAITS, Waits, title

__all__ = ["check", "run_check"]


def run_check(
    config: SmtpConfig,
    *,
    send_to: Sequence[str] = (),
    from_email: str | None = None,
    on_step_start: StepCallback | None = None,
    on_step_end: StepCallback | None = None,
    round_trip: RoundTrip | None = None,
    from_admin: bool = False,
    waits: Waits = DEFAULT_WAITS,
) -> Diagnosis:
    """Run every step against ``config`` and return the :class:`Diagnosis`.

    ``send_to``: addresses to send a real test message to (none: nothing is sent); its text
    names the admin as its origin when ``from_admin``, else ``manage.py gmail_check``.
    ``round_trip``: also send a tagged message to the account itself and prove it arrives
    (:class:`~django_gmail_smtp.roundtrip.RoundTrip`; its steps follow QUIT).
    ``on_step_start(step)`` / ``on_step_end(step)`` are called as the steps run
    (for live progress); steps that run inside one socket call (implicit TLS and
    the greeting) are reported as soon as that call returns. Never raises for a
    failure of the server, the network or the configuration; never hangs longer
    than the configured timeout per step (plus short probes that refine a diagnosis).
    ``waits`` says where it waits less than that (:class:`~.steps.Waits`).
    """
    started = time.perf_counter()
    diagnosis = Diagnosis(config=config, language=get_language() or "")
    run = Run(diagnosis, on_step_start, on_step_end)
    timeout = config.timeout if config.timeout and config.timeout > 0 else conf.DEFAULT_TIMEOUT
    try:
        if round_trip is not None:
            diagnosis.round_trip = round_trip.summary  # filled in as the round trip goes
        if not check_config(run, config, round_trip):
            return diagnosis
        addresses = lookup(run, config, timeout)
        if addresses is None or not connect_all(run, config, addresses, timeout):
            return diagnosis
        conversation = Conversation(run, config, timeout, from_admin=from_admin, waits=waits)
        conversation.run_all(send_to, from_email, round_trip)
        if round_trip is not None and diagnosis.ok:
            receive(round_trip, run, config, timeout)
    except Exception as exc:  # a bug: exit status 1 and a request to report it, never a bare traceback
        diagnosis.unexpected = run.redact(traceback.format_exc()) or "-"
        step = run.current or run.begin("config", title("config"))
        run.fail(step, CATALOGUE["unexpected_error"], describe_error(exc))
    finally:
        diagnosis.duration = time.perf_counter() - started
    return diagnosis


def check(
    options: Mapping[str, Any] | None = None,
    *,
    alias: str | None = None,
    send_to: Sequence[str] = (),
    from_email: str | None = None,
    on_step_start: StepCallback | None = None,
    on_step_end: StepCallback | None = None,
    round_trip: RoundTrip | None = None,
    accounts: conf.AccountSource | None = None,
) -> Diagnosis:
    """Resolve the configuration the backend would use (see :func:`conf.resolve`) and test it.

    ``accounts`` is where a stored account the configuration names comes from
    (:func:`django_gmail_smtp.accounts.account_options`, as the backend has it).
    """
    try:
        config = conf.resolve(options or {}, alias=alias, accounts=accounts)
    except GmailConfigError as exc:
        return config_error(exc, config_name=mailer_name(alias))
    return run_check(
        config,
        send_to=send_to,
        from_email=from_email,
        on_step_start=on_step_start,
        on_step_end=on_step_end,
        round_trip=round_trip,
    )
