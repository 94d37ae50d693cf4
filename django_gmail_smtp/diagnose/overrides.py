"""The configuration a check tests: the one the backend would use (a ``MAILERS`` alias or the
``EMAIL_*`` settings), with values given for this run only on top, each saying where it came from.

``gmail_check --host/--port/--tls...`` passes its options here; the command only reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from django.conf import settings

from .. import conf
from ..app_settings import mailers_enabled
from ..conf import SmtpConfig, Value

__all__ = ["SOURCE_COMMAND_LINE", "configured_mailers", "default_alias", "mailer_name", "resolve_with_overrides"]

SOURCE_COMMAND_LINE = "command_line"
"""The provenance source of a value given on the command line."""


def configured_mailers() -> Mapping[str, Any]:
    """``settings.MAILERS`` as the project defines it (empty without)."""
    return getattr(settings, "MAILERS", None) or {}


def default_alias() -> str | None:
    """The mailer ``send_mail()`` uses: ``"default"`` when ``MAILERS`` (Django 6.1) defines it,
    else None (the ``EMAIL_*`` settings)."""
    if mailers_enabled() and "default" in configured_mailers():
        return "default"
    return None


def mailer_name(alias: str | None) -> str:
    """How an error names the configuration of ``alias`` (nothing for the ``EMAIL_*`` settings)."""
    return f"MAILERS[{alias!r}]" if alias else ""


def resolve_with_overrides(
    overrides: Mapping[str, Any],
    origins: Mapping[str, str],
    *,
    alias: str | None,
    accounts: conf.AccountSource | None,
) -> SmtpConfig:
    """Resolve the configuration of ``alias`` (its ``MAILERS`` OPTIONS), or of the ``EMAIL_*``
    settings, with ``overrides`` on top; ``origins[option]`` is the command-line flag that set
    it (its provenance). ``accounts`` as for :func:`conf.resolve`."""
    if alias is not None:
        base = dict((configured_mailers()[alias] or {}).get("OPTIONS", {}))
        base.update(overrides)
        config = conf.resolve(base, alias=alias, accounts=accounts)
    else:
        config = conf.resolve(overrides, alias=None, accounts=accounts)
    if origins:
        provenance = dict(config.provenance)
        for option, origin in origins.items():
            provenance[option] = Value(SOURCE_COMMAND_LINE, origin)
        config = replace(config, provenance=provenance)
    return config
