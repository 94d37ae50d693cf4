"""Validation rules over a resolved configuration, written once.

Each rule is a plain function ``rule(config) -> list[Problem]``. The system
checks, the admin form and ``gmail_check`` all call them, so a mistake reads
the same everywhere. Ids are stable and never reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .conf import SmtpConfig
from .exceptions import GmailConfigError

__all__ = ["BLOCKING_RULES", "CONFIG_RULES", "Problem", "check_config", "raise_for_blocking"]

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Problem:
    """One finding: a stable id (``gmail_smtp.E003``), one sentence, and the fix."""

    id: str
    level: str
    message: str | Promise
    hint: str | Promise

    @property
    def is_error(self) -> bool:
        return self.level == ERROR


Rule = Callable[[SmtpConfig], list[Problem]]


def _origin(config: SmtpConfig, option: str) -> str:
    value = config.provenance.get(option)
    return value.origin if value else option


def check_port_matches_mode(config: SmtpConfig) -> list[Problem]:
    """Gmail's 465 speaks TLS from the first byte, 587 expects STARTTLS."""
    if not config.is_gmail:
        return []
    if config.port == 465 and config.use_tls:
        return [
            Problem(
                "gmail_smtp.E003",
                ERROR,
                _("Port 465 (from %(port)s) expects implicit TLS, but STARTTLS is configured (%(tls)s): "
                  "the connection would hang.")
                % {"port": _origin(config, "port"), "tls": _origin(config, "use_tls")},
                _("Use implicit TLS on 465 (EMAIL_USE_SSL = True, or django-environ's smtp+ssl://), "
                  "or port 587 with STARTTLS. django-environ's smtps:// means STARTTLS."),
            )
        ]
    if config.port == 587 and config.use_ssl:
        return [
            Problem(
                "gmail_smtp.E004",
                ERROR,
                _("Port 587 (from %(port)s) expects STARTTLS, but implicit TLS is configured (%(ssl)s).")
                % {"port": _origin(config, "port"), "ssl": _origin(config, "use_ssl")},
                _("Use STARTTLS on 587 (EMAIL_USE_TLS = True, EMAIL_USE_SSL = False) or port 465 "
                  "with implicit TLS."),
            )
        ]
    return []


# Rules whose errors make sending impossible: the backend refuses to start with them.
BLOCKING_RULES: tuple[Rule, ...] = (check_port_matches_mode,)


# Every rule over one resolved configuration, in report order.
CONFIG_RULES: tuple[Rule, ...] = (check_port_matches_mode,)


def check_config(config: SmtpConfig) -> list[Problem]:
    """All problems found in one resolved configuration (errors and warnings)."""
    return [problem for rule in CONFIG_RULES for problem in rule(config)]


def raise_for_blocking(config: SmtpConfig) -> None:
    """Raise :class:`GmailConfigError` for the first error that makes sending impossible."""
    for rule in BLOCKING_RULES:
        for problem in rule(config):
            if problem.is_error:
                raise GmailConfigError(str(problem.message), hint=str(problem.hint), check_id=problem.id)
