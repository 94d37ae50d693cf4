"""Gmail accounts stored in the database, their secrets encrypted (see :mod:`.crypto`).

The backend uses one when the configuration names it: ``account="name"`` (keyword argument, or
``MAILERS[alias]["OPTIONS"]["account"]`` on Django 6.1) or ``GMAIL_SMTP["ACCOUNT"] = "name"``.
Lookups go through :mod:`.accounts`, which caches them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import crypto
from .conf import normalize_app_password
from .exceptions import SecretDecryptionError

__all__ = ["DeliveryLog", "GmailAccount", "QuotaAccount", "QuotaUse"]


def secret_error(name: str) -> SecretDecryptionError:
    """The error for a stored secret that no configured key decrypts."""
    return SecretDecryptionError(
        gettext(
            "The stored secret of the Gmail account %(name)r cannot be decrypted with the current "
            "keys: SECRET_KEY or GMAIL_SMTP['ENCRYPTION_KEYS'] changed since it was saved."
        )
        % {"name": name},
        account=name,
        hint=gettext(
            "Put the old key back (in SECRET_KEY_FALLBACKS, or at the end of "
            "GMAIL_SMTP['ENCRYPTION_KEYS']) and run 'manage.py gmail_rotate_keys', or enter the "
            "app password again on the account's admin page."
        ),
    )


class GmailAccount(models.Model):
    """One Gmail account to send with. The secret is write-only and encrypted at rest."""

    class AuthMethod(models.TextChoices):
        APP_PASSWORD = "app_password", _("App password")
        OAUTH2 = "oauth2", _("OAuth2 (XOAUTH2)")

    class Security(models.TextChoices):
        STARTTLS = "starttls", _("STARTTLS (port 587)")
        SSL = "ssl", _("Implicit TLS (port 465)")

    name = models.SlugField(
        _("name"),
        max_length=100,
        unique=True,
        help_text=_(
            'What the configuration refers to: account="name", MAILERS OPTIONS "account", or GMAIL_SMTP[\'ACCOUNT\'].'
        ),
    )
    username = models.CharField(
        _("Gmail address"),
        max_length=254,
        help_text=_("The account's full address, used to sign in, e.g. you@gmail.com."),
    )
    auth_method = models.CharField(
        _("authentication method"),
        max_length=20,
        choices=AuthMethod.choices,
        default=AuthMethod.APP_PASSWORD,
    )
    # Fernet token of a JSON object: {"password": ...} for app passwords; OAuth2 keeps
    # {"client_id", "client_secret", "refresh_token"} in the same place. Never shown anywhere.
    encrypted_secret = models.TextField(_("encrypted secret"), blank=True, default="", editable=False)
    host = models.CharField(_("host"), max_length=255, default="smtp.gmail.com")
    port = models.PositiveIntegerField(_("port"), default=587)
    security = models.CharField(_("security"), max_length=10, choices=Security.choices, default=Security.STARTTLS)
    timeout = models.FloatField(_("timeout (seconds)"), default=10.0)
    from_aliases = models.JSONField(
        _("'Send mail as' addresses"),
        default=list,
        blank=True,
        help_text=_("Addresses verified in Gmail (Settings, Accounts) that this account may send as."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    is_default = models.BooleanField(
        _("default account"),
        default=False,
        help_text=_('Used when the configuration names the account "default" and none is called so.'),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    last_checked_at = models.DateTimeField(_("last tested"), null=True, blank=True, editable=False)
    last_check_ok = models.BooleanField(_("last test passed"), null=True, blank=True, editable=False)
    last_check_message = models.TextField(_("last test result"), blank=True, default="", editable=False)

    class Meta:
        verbose_name = _("Gmail account")
        verbose_name_plural = _("Gmail accounts")
        ordering = ["name"]
        # Declared so that Django's JSONField check does not query the database on
        # every `manage.py check` (Django 6.1 passes all databases to model checks).
        required_db_features = ["supports_json_field"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="gmail_smtp_one_default_account",
                violation_error_message=_("Another Gmail account is already the default; untick it there first."),
            )
        ]
        permissions = [
            (
                "test_gmailaccount",
                _("Can test Gmail accounts, send test email and see whether a secret is stored"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.username})" if self.username else self.name

    def __repr__(self) -> str:
        return f"<GmailAccount {self.name!r} {self.username!r} {self.host}:{self.port} {self.security}>"

    # -- the secret (write-only) ---------------------------------------------------------------

    @property
    def has_secret(self) -> bool:
        """True when a secret is stored (whether or not the current keys can decrypt it)."""
        return bool(self.encrypted_secret)

    @sensitive_variables()
    def set_secret(self, data: dict[str, str]) -> None:
        """Encrypt and store ``data`` (e.g. ``{"password": ...}``); an empty dict clears it."""
        self.encrypted_secret = crypto.encrypt(json.dumps(data, sort_keys=True)) if data else ""

    @sensitive_variables()
    def get_secret(self) -> dict[str, str]:
        """The decrypted secret; :class:`SecretDecryptionError` when no key opens it."""
        return decrypt_secret(self.name, self.encrypted_secret)

    def set_password(self, password: str) -> None:
        """Store an app password (the spaces Google shows in one are removed)."""
        password = normalize_app_password(password.strip())
        self.set_secret({"password": password} if password else {})

    def get_password(self) -> str:
        return self.get_secret().get("password", "")

    OAUTH_PARTS = ("client_id", "client_secret", "refresh_token")

    @sensitive_variables()
    def get_oauth(self) -> dict[str, str]:
        """The OAuth2 parts of the secret: client_id, client_secret, refresh_token ("" when absent)."""
        secret = self.get_secret()
        return {part: str(secret.get(part) or "") for part in self.OAUTH_PARTS}

    @sensitive_variables()
    def set_oauth(self, **parts: str | None) -> None:
        """Update OAuth2 parts of the secret (None: keep, "": remove); drops an app password.

        ``client_id``, ``client_secret`` and ``refresh_token`` live in the same encrypted JSON
        object as an app password would (a new client drops the refresh token issued to the old one).
        """
        unknown = set(parts) - set(self.OAUTH_PARTS)
        if unknown:
            raise TypeError(f"unknown OAuth2 parts: {', '.join(sorted(unknown))}")
        current = self.get_oauth() if self.has_secret else dict.fromkeys(self.OAUTH_PARTS, "")
        new_client = parts.get("client_id") is not None and parts["client_id"] != current["client_id"]
        if new_client and parts.get("refresh_token") is None:
            current["refresh_token"] = ""
        for part, value in parts.items():
            if value is not None:
                current[part] = value.strip()
        self.set_secret({part: value for part, value in current.items() if value})

    @property
    def secret_readable(self) -> bool:
        """True when a secret is stored and the current keys decrypt it."""
        if not self.has_secret:
            return False
        try:
            self.get_secret()
        except SecretDecryptionError:
            return False
        return True

    # -- what the resolver gets -----------------------------------------------------------------

    @property
    def use_tls(self) -> bool:
        return self.security == self.Security.STARTTLS

    @property
    def use_ssl(self) -> bool:
        return self.security == self.Security.SSL

    def record_check(self, ok: bool, message: str, at: datetime | None = None) -> None:
        """Store the outcome of a test (run ``at``, default now); changes nothing the backend uses."""
        from django.utils import timezone

        self.last_checked_at = at or timezone.now()
        self.last_check_ok = ok
        self.last_check_message = message[:2000]
        if self.pk is not None:
            type(self).objects.filter(pk=self.pk).update(
                last_checked_at=self.last_checked_at,
                last_check_ok=ok,
                last_check_message=self.last_check_message,
            )


@sensitive_variables()
def decrypt_secret(name: str, token: str) -> dict[str, Any]:
    """Decrypt a stored secret token of the account ``name`` (``{}`` when none is stored)."""
    if not token:
        return {}
    try:
        data = json.loads(crypto.decrypt(token))
    except (crypto.InvalidToken, ValueError, UnicodeError):
        raise secret_error(name) from None
    return data if isinstance(data, dict) else {}


# -- background sending (README.md#background-sending) ---------------------------------------------------------


class DeliveryLog(models.Model):
    """One message sent through the queued backend: where it stands, never its content once sent.

    ``payload`` holds the message (as queued) only while it is not sent: a worker that dies
    mid-send, and the admin's *retry* action, need it. It is erased when the server accepts the
    message. No password or other secret is ever part of it.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        SENDING = "sending", _("sending")
        HELD = "held", _("held (daily limit)")
        SENT = "sent", _("sent")
        FAILED = "failed", _("failed")

    message_id = models.CharField(_("Message-ID"), max_length=255, db_index=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.QUEUED)
    mailer = models.CharField(
        _("mailer"), max_length=100, blank=True, default="", help_text=_("MAILERS alias; empty for EMAIL_BACKEND.")
    )
    account = models.CharField(
        _("account"), max_length=254, blank=True, default="", help_text=_("The address the message is sent with.")
    )
    account_name = models.CharField(
        _("stored account"),
        max_length=100,
        blank=True,
        default="",
        help_text=_("The stored Gmail account the message is sent with, if any."),
    )
    recipients = models.PositiveIntegerField(_("recipients"), default=0)
    # Who and what, for "did my mail to bob@example.com go out?" (README.md#the-delivery-log):
    # recorded unless GMAIL_SMTP["LOG_RECIPIENTS"] / ["LOG_SUBJECTS"] is False. Never the body.
    to = models.TextField(
        _("to"), blank=True, default="", help_text=_("Every envelope recipient (To, Cc and Bcc), one per line.")
    )
    subject = models.CharField(_("subject"), max_length=255, blank=True, default="")
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_reply = models.TextField(_("last reply"), blank=True, default="")
    cause = models.CharField(_("cause"), max_length=50, blank=True, default="")
    task_backend = models.CharField(_("Tasks backend"), max_length=100, default="default")
    queue_name = models.CharField(_("queue"), max_length=100, default="default")
    # Each (re)scheduling bumps the generation; tasks of an older generation do nothing.
    generation = models.PositiveIntegerField(_("generation"), default=1, editable=False)
    due_at = models.DateTimeField(_("due"), help_text=_("Next attempt, or end of the running attempt's lease."))
    created_at = models.DateTimeField(_("queued at"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    payload = models.JSONField(_("message until sent"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("delivery log entry")
        verbose_name_plural = _("delivery log")
        ordering = ["-created_at", "-pk"]
        required_db_features = ["supports_json_field"]
        indexes = [
            models.Index(fields=["status", "due_at"], name="gmail_smtp_log_status_due"),
            models.Index(fields=["account", "status"], name="gmail_smtp_log_account"),
            models.Index(fields=["sent_at"], name="gmail_smtp_log_sent_at"),
        ]
        permissions = [("retry_deliverylog", _("Can retry failed or stuck messages"))]

    def __str__(self) -> str:
        return f"{self.subject or self.message_id} ({self.get_status_display()})"


class QuotaAccount(models.Model):
    """One sending account of the daily-limit guard (:mod:`django_gmail_smtp.quota`); its row is the lock."""

    key = models.CharField(_("account"), max_length=254, unique=True)
    blocked_until = models.DateTimeField(_("blocked until"), null=True, blank=True)
    blocked_reason = models.TextField(_("reason"), blank=True, default="")
    lock_version = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        verbose_name = _("daily limit account")
        verbose_name_plural = _("daily limit accounts")

    def __str__(self) -> str:
        return self.key


class QuotaUse(models.Model):
    """Messages an account sent (or is sending) at one moment; rows older than the window are deleted."""

    account = models.ForeignKey(QuotaAccount, on_delete=models.CASCADE, related_name="uses")
    at = models.DateTimeField()
    count = models.PositiveIntegerField(default=1)

    class Meta:
        indexes = [models.Index(fields=["account", "at"], name="gmail_smtp_quota_use_at")]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.count} at {self.at.isoformat()}"
