"""How a message names a setting, and where a value came from (its provenance).

A message names the setting a user edits (``EMAIL_PORT``, ``MAILERS['bulk']['OPTIONS']['port']``,
``GMAIL_SMTP['IMAP_HOST']``, or the admin form's field) and says where the value it speaks of came
from (``EMAIL_URL``, an environment variable, Gmail's default ...).
"""

from __future__ import annotations

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from ..conf import (
    GMAIL_DEFAULT_LABEL,
    LEGACY_SETTINGS,
    MAILBOX_OPTIONS,
    OAUTH_OPTIONS,
    SOURCE_DEFAULT,
    SOURCE_FORM,
    SmtpConfig,
)
from .problem import text


def from_form(config: SmtpConfig, option: str = "host") -> bool:
    """True when ``option`` was typed in the admin's account form (messages then name its fields)."""
    value = config.provenance.get(option)
    return value is not None and value.source == SOURCE_FORM


def came_from(config: SmtpConfig, option: str, origin: str) -> bool:
    """True when the value of ``option`` came from ``origin`` (``EMAIL_URL``)."""
    value = config.provenance.get(option)
    return value is not None and value.origin == origin


def setting_name(config: SmtpConfig, option: str) -> str:
    """The setting a user edits to change ``option`` for this configuration.

    ``MAILERS['alias']['OPTIONS']['port']`` on Django 6.1 with ``MAILERS``,
    ``EMAIL_PORT`` otherwise; in the admin's form, the field (“the “Port” field”).
    """
    if from_form(config, option):
        return str(config.provenance[option].origin)
    if config.alias is not None:
        return f"MAILERS[{config.alias!r}]['OPTIONS'][{option!r}]"
    if option in OAUTH_OPTIONS or option in MAILBOX_OPTIONS:  # no EMAIL_* setting: this app's own
        return f"GMAIL_SMTP[{option.upper()!r}]"
    return LEGACY_SETTINGS.get(option, option)


def origin_of(config: SmtpConfig, option: str) -> str | Promise:
    """Where the value of ``option`` came from, naming the mailer when it is a MAILERS one."""
    value = config.provenance.get(option)
    if value is None or value.source == SOURCE_DEFAULT:
        found: str | Promise = (
            _("Gmail's default") if value and value.origin == GMAIL_DEFAULT_LABEL else _("the default")
        )
    else:
        found = value.origin
    if config.alias is None or str(found).startswith("MAILERS["):
        return found
    return text(_("%(origin)s, for %(mailer)s"), origin=found, mailer=f"MAILERS[{config.alias!r}]")


def named(config: SmtpConfig, option: str) -> str | Promise:
    """Where ``option`` was set, or the setting to set it in when it was not."""
    value = config.provenance.get(option)
    if value is None or value.source == SOURCE_DEFAULT:
        return setting_name(config, option)
    return origin_of(config, option)


def setting_names(config: SmtpConfig, **options: str) -> dict[str, str]:
    """Placeholder -> the setting to edit for the option: ``setting_names(config, port="port")``."""
    return {placeholder: setting_name(config, option) for placeholder, option in options.items()}


def origins(config: SmtpConfig, **options: str) -> dict[str, str | Promise]:
    """Placeholder -> where the option's value came from: ``origins(config, port="port")``."""
    return {placeholder: origin_of(config, option) for placeholder, option in options.items()}
