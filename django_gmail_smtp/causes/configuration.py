"""Causes in the configuration: a value missing or contradictory, found before or while connecting."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from .cause import APP_PASSWORDS_URL, Cause

CAUSES: tuple[Cause, ...] = (
    # The queued backend's worker (README.md#background-sending).
    Cause(
        "config",
        _("The worker could not send the message with the configuration it found (settings or stored account)."),
        _(
            "Read the error under the last reply, correct the settings or the stored account (the "
            "account's “Test connection” button or 'manage.py gmail_check' shows what is wrong), then "
            "retry the message."
        ),
    ),
    Cause(
        "username_missing",
        _("No username is configured, so the backend would not sign in."),
        _("Set EMAIL_HOST_USER (or 'username' in MAILERS OPTIONS) to the full Gmail address of the account."),
        form_fix=_("Enter the full Gmail address of the account in the “Gmail address” field."),
    ),
    Cause(
        "credentials_missing",
        _("Neither a username nor a password is configured, so the backend would not sign in."),
        _(
            "Set EMAIL_HOST_USER to the full Gmail address and EMAIL_HOST_PASSWORD to a "
            "16-letter app password (or 'username' and 'password' in MAILERS OPTIONS)."
        ),
        url=APP_PASSWORDS_URL,
        form_fix=_(
            "Enter the full Gmail address in the “Gmail address” field and a 16-letter app password in the “App password” field."
        ),
    ),
    Cause(
        "password_missing",
        _("No password is configured, so the backend would not sign in."),
        _("Set EMAIL_HOST_PASSWORD (or 'password' in MAILERS OPTIONS) to a 16-letter app password."),
        url=APP_PASSWORDS_URL,
        form_fix=_("Enter a 16-letter app password in the “App password” field."),
    ),
    Cause(
        "tls_and_ssl",
        _("STARTTLS and implicit TLS are both turned on."),
        _("Turn one off: port 587 uses STARTTLS (use_tls), port 465 implicit TLS (use_ssl)."),
    ),
    Cause(
        "invalid_setting",
        _("A mail setting has an invalid value."),
        _("Correct the setting named in the message."),
        form_fix=_("Correct the field named in the message."),
    ),
)
