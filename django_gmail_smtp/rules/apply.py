"""The rules applied: every rule over one configuration in report order, and those that block sending."""

from __future__ import annotations

from collections.abc import Sequence

from ..conf import SmtpConfig
from .connection import (
    check_host,
    check_host_syntax,
    check_port,
    check_port_matches_mode,
    check_port_range,
    check_timeout,
    check_tls_before_sign_in,
    check_tls_on,
)
from .credentials import check_app_password, check_credentials
from .oauth2 import check_oauth_credentials, check_oauth_library
from .problem import Problem, Rule, to_error

# Rules whose errors make sending impossible: the backend refuses to start with them.
BLOCKING_RULES: tuple[Rule, ...] = (
    check_port_matches_mode,
    check_tls_before_sign_in,
    check_oauth_library,
    check_oauth_credentials,
)

# Every rule over one resolved configuration, in report order.
CONFIG_RULES: tuple[Rule, ...] = (
    check_port_range,
    check_host_syntax,
    check_tls_on,
    check_port_matches_mode,
    check_credentials,
    check_app_password,
    check_oauth_library,
    check_oauth_credentials,
    check_host,
    check_port,
    check_timeout,
)


def check_config(config: SmtpConfig) -> list[Problem]:
    """All problems found in one resolved configuration (errors and warnings)."""
    return [problem for rule in CONFIG_RULES for problem in rule(config)]


def unsilenced(problems: Sequence[Problem]) -> list[Problem]:
    """``problems`` without those ``SILENCED_SYSTEM_CHECKS`` lists, for ``gmail_check`` and the admin.

    (``manage.py check`` leaves them to Django, which counts them as silenced.)
    """
    from django.conf import settings

    silenced = {str(item) for item in getattr(settings, "SILENCED_SYSTEM_CHECKS", ()) or ()}
    return [problem for problem in problems if problem.id not in silenced]


def raise_first_error(problems: Sequence[Problem], alias: str | None = None) -> None:
    """Raise the first error among ``problems`` (warnings are not raised)."""
    for problem in problems:
        if problem.is_error:
            raise to_error(problem, alias)


def raise_for_blocking(config: SmtpConfig) -> None:
    """Raise :class:`GmailConfigError` for the first error that makes sending impossible."""
    for rule in BLOCKING_RULES:
        raise_first_error(rule(config), config.alias)
