"""What every step of the connection test shares: names, ids, titles, time bounds, and how a
failure is named."""

from __future__ import annotations

import smtplib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext_lazy

from ..causes import CATALOGUE, Cause
from ..conf import SmtpConfig
from ..exceptions import GmailConfigError, explain_exception
from ..roundtrip.steps import ROUND_TRIP_STEPS
from ..roundtrip.steps import STEP_TITLES as ROUND_TRIP_TITLES

__all__ = [
    "DEFAULT_WAITS",
    "FAREWELL_WAIT",
    "IMPLICIT_TLS_PORTS",
    "NETWORK_ERRORS",
    "PROBE_WAIT",
    "QUICK_WAIT",
    "SIGN_IN_ERRORS",
    "STEP_IDS",
    "STEP_NAMES",
    "STEP_TITLES",
    "Waits",
    "cause_of",
    "title",
]

#: Every step name, in the order they can appear. ``ehlo`` appears twice with
#: STARTTLS (before and after TLS; ``data["tls"]`` tells which). With implicit TLS
#: ``tls`` comes before ``greeting``.
_SMTP_STEPS = ("config", "dns", "connect", "greeting", "tls", "ehlo", "token", "auth", "send", "quit")
STEP_NAMES = (*_SMTP_STEPS, *ROUND_TRIP_STEPS)  # the round trip's: django_gmail_smtp.roundtrip
#: Step ids, unique within a run: the name, except that an EHLO over TLS is ``ehlo_tls``.
STEP_IDS = (*_SMTP_STEPS[:6], "ehlo_tls", *_SMTP_STEPS[6:], *ROUND_TRIP_STEPS)


#: Ports where a server speaks TLS from the first byte (SMTPS, IMAPS, POP3S, HTTPS):
#: a STARTTLS or plain client waits only briefly for a greeting there.
IMPLICIT_TLS_PORTS = frozenset({465, 993, 995, 443})
#: How long to wait for a greeting on those ports (Gmail greets within a second).
QUICK_WAIT = 3.0
#: Bound for the extra probes that refine a diagnosis (is it TLS? is it plain SMTP?).
PROBE_WAIT = 3.0
#: Bound for the QUIT that ends a conversation after a failed step.
FAREWELL_WAIT = 2.0


@dataclass(frozen=True)
class Waits:
    """Where the test waits less than the configured timeout, and how long (the defaults above)."""

    implicit_tls_ports: frozenset[int] = IMPLICIT_TLS_PORTS
    quick: float = QUICK_WAIT
    """For a greeting on one of ``implicit_tls_ports``, without implicit TLS."""
    probe: float = PROBE_WAIT
    farewell: float = FAREWELL_WAIT


DEFAULT_WAITS = Waits()


STEP_TITLES: Mapping[str, Any] = {
    "config": gettext_lazy("Configuration"),
    "dns": gettext_lazy("DNS lookup"),
    "connect": gettext_lazy("TCP connection"),
    "greeting": gettext_lazy("Server greeting"),
    "tls": gettext_lazy("TLS"),
    "ehlo": gettext_lazy("EHLO"),
    "token": gettext_lazy("OAuth2 access token"),
    "auth": gettext_lazy("Sign-in"),
    "send": gettext_lazy("Test message"),
    "quit": gettext_lazy("QUIT"),
    **ROUND_TRIP_TITLES,
}


def title(name: str) -> str:
    """The title of step ``name`` in the active language."""
    return str(STEP_TITLES[name])


def cause_of(exc: BaseException, stage: str, config: SmtpConfig) -> Cause:
    """Why a step failed with ``exc``: its own cause, else the catalogue's explanation of it."""
    found = getattr(exc, "cause", None)
    if found is None:
        found = explain_exception(exc, stage=stage, port=config.port, use_ssl=config.use_ssl, host=config.host)
    if found is None:
        found = CATALOGUE["unexpected_reply" if isinstance(exc, smtplib.SMTPResponseException) else "unexpected_error"]
    return found


# What the network steps expect: a server's refusal or a network/TLS failure (ssl.SSLError,
# socket.timeout and OAuthError included). Anything else is a bug: run_check() reports it
# with exit status 1 instead of passing it off as that step's failure.
NETWORK_ERRORS: tuple[type[Exception], ...] = (smtplib.SMTPException, OSError)
# Signing in may also stop at a setting (GmailConfigError) or at credentials smtplib cannot
# encode (UnicodeError: a non-ASCII password).
SIGN_IN_ERRORS: tuple[type[Exception], ...] = (*NETWORK_ERRORS, GmailConfigError, UnicodeError)
