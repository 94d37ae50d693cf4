"""Gmail accounts stored in the database, their secrets encrypted (see :mod:`.crypto`) and bound to
the destination they were entered for (see :mod:`.binding`).

The backend uses one when the configuration names it: ``account="name"`` (keyword argument, or
``MAILERS[alias]["OPTIONS"]["account"]`` on Django 6.1) or ``GMAIL_SMTP["ACCOUNT"] = "name"``.
Lookups go through :mod:`.accounts`, which caches them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import binding, crypto
from .conf import normalize_app_password
from .exceptions import SecretDecryptionError, SecretDestinationError

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
        check_id="gmail_smtp.E025",
        hint=gettext(
            "Put the old key back (in SECRET_KEY_FALLBACKS, or at the end of "
            "GMAIL_SMTP['ENCRYPTION_KEYS']) and run 'manage.py gmail_rotate_keys', or enter the "
            "app password again on the account's admin page."
        ),
    )


def destination_label(field: str) -> str:
    """What a bound field is called in messages: the model field's name, or the setting."""
    if field == "token_uri":
        return "GMAIL_SMTP['OAUTH_TOKEN_URI']"
    return str(getattr(GmailAccount._meta.get_field(field), "verbose_name", field))


def describe_changes(changes: Iterable[str], bound: Mapping[str, Any], label: Callable[[str], str]) -> str:
    """ "host was 'smtp.gmail.com', port was 587": the values a secret was entered for (none is secret)."""
    return ", ".join(
        gettext("%(field)s was %(value)r") % {"field": label(field), "value": bound.get(field, "")} for field in changes
    )


def destination_error(name: str, bound: binding.Destination | None, changes: list[str]) -> SecretDestinationError:
    """E020 (the secret was entered for other values) or E021 (it is bound to none)."""
    if bound is None:
        return SecretDestinationError(
            gettext(
                "The stored secret of the Gmail account %(name)r is not bound to a server: it was saved "
                "by an older version and 'manage.py migrate' could not read it, so it is sent nowhere."
            )
            % {"name": name},
            account=name,
            hint=gettext(
                "Run 'manage.py migrate' if you have just upgraded; otherwise enter the secret again on "
                "the account's admin page (Gmail SMTP, Gmail accounts)."
            ),
            check_id="gmail_smtp.E021",
        )
    was = describe_changes(changes, bound.as_dict(), destination_label)
    return SecretDestinationError(
        gettext(
            "The stored secret of the Gmail account %(name)r was entered for another destination "
            "(%(was)s), so it is not sent to the account's current one."
        )
        % {"name": name, "was": was},
        account=name,
        changed=tuple(changes),
        bound=bound.as_dict(),
        hint=gettext(
            "The account was changed without entering its secret again (for example with "
            "QuerySet.update(), a fixture or the shell). Enter the secret again on the account's "
            "admin page, or put those values back."
        ),
        check_id="gmail_smtp.E020",
    )


@sensitive_variables()
def open_secret(name: str, token: str) -> binding.Sealed:
    """Decrypt a stored secret token of the account ``name``, without looking at its destination.

    For what never leaves this process (the admin's status, the client id shown back). Raises
    :class:`SecretDecryptionError` when no key opens it, and :class:`GmailConfigError` when
    ``GMAIL_SMTP["ENCRYPTION_KEYS"]`` itself is invalid.
    """
    if not token:
        raise ValueError("no secret is stored")
    try:
        plaintext = crypto.decrypt(token)
    except (crypto.InvalidToken, UnicodeError):
        raise secret_error(name) from None
    try:
        return binding.unseal(plaintext)
    except (ValueError, UnicodeError):
        raise secret_error(name) from None


@sensitive_variables()
def decrypt_secret(name: str, token: str, *, host: str, port: int, security: str, username: str) -> dict[str, Any]:
    """The secret of the account ``name``, if it may be sent to these values (``{}`` when none is stored).

    Raises :class:`SecretDecryptionError` (no key opens it) or :class:`SecretDestinationError`
    (E020: entered for other values; E021: bound to none).
    """
    if not token:
        return {}
    return bound_secret(name, open_secret(name, token), host=host, port=port, security=security, username=username)


@sensitive_variables()
def bound_secret(
    name: str, sealed: binding.Sealed, *, host: str, port: int, security: str, username: str
) -> dict[str, Any]:
    """The secret of ``sealed`` if it may be sent to these values; :class:`SecretDestinationError` if not."""
    if sealed.destination is None:
        raise destination_error(name, None, [])
    current = binding.destination_for(sealed.secret, host=host, port=port, security=security, username=username)
    changes = sealed.destination.changes(current)
    if changes:
        raise destination_error(name, sealed.destination, changes)
    return sealed.secret


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
    # Fernet token of a JSON object holding the secret ({"password": ...} for app passwords;
    # {"client_id", "client_secret", "refresh_token"} for OAuth2) and the destination it was
    # entered for (see binding.py). Never shown anywhere.
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

    # -- the secret (write-only, bound to its destination: see :mod:`.binding`) -------------------

    @property
    def has_secret(self) -> bool:
        """True when a secret is stored (whether or not the current keys can decrypt it)."""
        return bool(self.encrypted_secret)

    def destination_for(self, secret: dict[str, Any]) -> binding.Destination:
        """Where ``secret`` would be sent with this account's current values."""
        return binding.destination_for(
            secret, host=self.host, port=self.port, security=self.security, username=self.username
        )

    @sensitive_variables()
    def set_secret(self, data: dict[str, str]) -> None:
        """Encrypt and store ``data`` (e.g. ``{"password": ...}``), bound to the current host, port,
        security and username (and token endpoint, for OAuth2 parts); an empty dict clears it.

        Set those fields first: the secret will be sent only where they point now.
        """
        if not data:
            self.encrypted_secret = ""
            return
        self.encrypted_secret = crypto.encrypt(binding.seal(data, self.destination_for(data)))

    @sensitive_variables()
    def get_secret(self) -> dict[str, str]:
        """The decrypted secret, if it may be sent where the account points now.

        :class:`SecretDecryptionError` when no key opens it; :class:`SecretDestinationError` when it
        was entered for another host, port, security, username or token endpoint (E020), or is
        bound to none (E021).
        """
        return decrypt_secret(
            self.name,
            self.encrypted_secret,
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
        )

    @sensitive_variables()
    def stored_secret(self) -> binding.Sealed:
        """The stored secret and the destination it is bound to, unchecked (a secret must be stored).

        Only for what stays in this process (whether it is usable, the client id shown back):
        whatever is sent must come from :meth:`get_secret`.
        """
        return open_secret(self.name, self.encrypted_secret)

    def set_password(self, password: str) -> None:
        """Store an app password (the spaces Google shows in one are removed)."""
        password = normalize_app_password(password.strip())
        self.set_secret({"password": password} if password else {})

    def get_password(self) -> str:
        return self.get_secret().get("password", "")

    OAUTH_PARTS = binding.OAUTH_PARTS

    @sensitive_variables()
    def get_oauth(self) -> dict[str, str]:
        """The OAuth2 parts of the secret: client_id, client_secret, refresh_token ("" when absent)."""
        secret = self.get_secret()
        return {part: str(secret.get(part) or "") for part in self.OAUTH_PARTS}

    @sensitive_variables()
    def set_oauth(self, **parts: str | None) -> None:
        """Update OAuth2 parts of the secret (None or absent: keep, "": remove); drops an app password.

        ``client_id``, ``client_secret`` and ``refresh_token`` live in the same encrypted JSON
        object as an app password would (a new client drops the refresh token issued to the old one).
        Parts that are kept are read with :meth:`get_secret`, so only while the account still points
        where they were entered for; all three given, nothing stored is read.
        """
        unknown = set(parts) - set(self.OAUTH_PARTS)
        if unknown:
            raise TypeError(f"unknown OAuth2 parts: {', '.join(sorted(unknown))}")
        kept = [part for part in self.OAUTH_PARTS if parts.get(part) is None]
        current = dict.fromkeys(self.OAUTH_PARTS, "")
        if kept and self.has_secret:
            current = self.get_oauth()
        new_client = parts.get("client_id") is not None and parts["client_id"] != current["client_id"]
        if new_client and parts.get("refresh_token") is None:
            current["refresh_token"] = ""
        for part, value in parts.items():
            if value is not None:
                current[part] = value.strip()
        self.set_secret({part: value for part, value in current.items() if value})

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
