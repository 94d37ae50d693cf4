"""The admin form of :class:`~django_gmail_smtp.models.GmailAccount`.

The app password, the OAuth2 client secret and the refresh token are write-only
(:class:`WriteOnlySecretField`): never rendered back (not even encrypted), an empty field keeps
the stored one. Validation runs :func:`django_gmail_smtp.rules.check_config` on a
configuration built from the form's values only (never the settings), so a mistake reads the
same here as in ``manage.py check``; the same configuration feeds "Test connection".
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import replace
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import binding, conf, crypto, rules
from .app_settings import app_setting, environment_variable
from .conf import SOURCE_FORM, SmtpConfig, Value
from .exceptions import GmailConfigError, SecretDecryptionError, SecretDestinationError
from .models import GmailAccount, bound_secret, describe_changes
from .rules import Problem

__all__ = [
    "OAUTH_FIELDS",
    "SOURCE_FORM",
    "WRITE_ONLY_FIELDS",
    "AddressListField",
    "GmailAccountForm",
    "WriteOnlySecretField",
    "problem_text",
]

SECRET_FIELD = "app_password"  # noqa: S105 - the form field's name
# OAuth2 fields; the client secret and the refresh token are write-only like the app password
# (WriteOnlySecretField; WRITE_ONLY_FIELDS, after the form, lists them).
CLIENT_ID_FIELD = "oauth_client_id"
CLIENT_SECRET_FIELD = "oauth_client_secret"  # noqa: S105 - the form field's name
REFRESH_TOKEN_FIELD = "oauth_refresh_token"  # noqa: S105 - the form field's name
OAUTH_FIELDS = (CLIENT_ID_FIELD, CLIENT_SECRET_FIELD, REFRESH_TOKEN_FIELD)
# The fields a stored secret is bound to (README.md#stored-secrets-go-only-where-they-were-entered-for):
# changing one of them needs the secret typed again. Name, timeout, aliases, enabled and default do not.
DESTINATION_FIELDS = ("host", "port", "security", "username")

# The form field each rule id is about (None: the form as a whole).
FIELD_FOR_PROBLEM = {
    "gmail_smtp.E001": "security",
    "gmail_smtp.E002": "security",
    "gmail_smtp.E003": "port",
    "gmail_smtp.E004": "port",
    "gmail_smtp.E005": "username",
    "gmail_smtp.E006": "username",
    "gmail_smtp.E007": SECRET_FIELD,
    "gmail_smtp.E008": "timeout",
    "gmail_smtp.E014": "auth_method",
    "gmail_smtp.E015": REFRESH_TOKEN_FIELD,
    "gmail_smtp.E016": CLIENT_SECRET_FIELD,
    "gmail_smtp.W001": SECRET_FIELD,
    "gmail_smtp.W002": "host",
    "gmail_smtp.W003": "port",
    "gmail_smtp.W004": "timeout",
    "gmail_smtp.W020": "host",
}

# The option each form field provides, for the provenance of the built configuration.
OPTION_FIELDS = {
    "host": "host",
    "port": "port",
    "username": "username",
    "password": SECRET_FIELD,
    "use_tls": "security",
    "use_ssl": "security",
    "timeout": "timeout",
    "auth_method": "auth_method",
    "oauth_client_id": CLIENT_ID_FIELD,
    "oauth_client_secret": CLIENT_SECRET_FIELD,
    "oauth_refresh_token": REFRESH_TOKEN_FIELD,
}


def validate_host(value: str) -> None:
    """A host name or an IP address (:func:`rules.valid_host`): no URL, no space, no port."""
    if not rules.valid_host(value):
        raise ValidationError(
            gettext("Enter a host name or an IP address alone, such as smtp.gmail.com (no https://, no port)."),
            code="invalid_host",
        )


class AddressListField(forms.CharField):
    """E-mail addresses, one per line (commas also separate); cleans to a list."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 40})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list | tuple):
            return [str(item) for item in value]
        text = str(super().to_python(value) or "")
        return [part.strip() for part in re.split(r"[\n,;]+", text) if part.strip()]

    def validate(self, value: Any) -> None:
        super().validate(value)
        for address in value:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(
                    gettext("%(address)s is not an e-mail address.") % {"address": address},
                    code="invalid_address",
                ) from None


class WriteOnlySecretField(forms.CharField):
    """A secret typed into the form and never shown again; left empty, the stored one stays.

    Not rendered back, not even encrypted (a password input that forgets its value), never
    required, stripped. The admin keeps every field of this class out of error reports
    (:data:`WRITE_ONLY_FIELDS`); :meth:`GmailAccountForm.typed` reads what was typed.
    """

    def __init__(self, *, label: Any, help_text: Any, autocomplete: str = "off") -> None:
        super().__init__(
            label=label,
            help_text=help_text,
            required=False,
            strip=True,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": autocomplete}),
        )


def problem_text(problem: Problem) -> str:
    """A rule's finding as one line for the admin: message, hint and id.

    The configuration comes from the form (provenance ``form``), so the rules already name the
    form's fields instead of settings (:func:`~django_gmail_smtp.rules.setting_name`).
    """
    return f"{problem.message} {problem.hint} ({problem.id})"


class GmailAccountForm(forms.ModelForm):  # type: ignore[type-arg]
    """Add/change form: write-only secret, rules from :mod:`.rules`, a buildable configuration."""

    app_password = WriteOnlySecretField(
        label=_("App password"),
        autocomplete="new-password",
        help_text=_(
            "Write-only: it is never shown again. Leave empty to keep the stored one, which is only "
            "used with the host, port, security and address it was entered for. "
            "Create one at https://myaccount.google.com/apppasswords (16 letters; spaces may stay)."
        ),
    )
    oauth_client_id = forms.CharField(
        label=_("OAuth2 client ID"),
        required=False,
        strip=True,
        max_length=255,
        widget=forms.TextInput(attrs={"class": "vTextField", "autocomplete": "off"}),
        help_text=_(
            "For OAuth2 only: the client ID of a Google Cloud OAuth client (APIs & Services, "
            "Credentials), e.g. 1234-abc.apps.googleusercontent.com."
        ),
    )
    oauth_client_secret = WriteOnlySecretField(
        label=_("OAuth2 client secret"),
        help_text=_(
            "For OAuth2 only. Write-only: it is never shown again. Leave empty to keep the stored one, "
            "which is only used with the host, port, security and address it was entered for."
        ),
    )
    oauth_refresh_token = WriteOnlySecretField(
        label=_("OAuth2 refresh token"),
        help_text=_(
            "For OAuth2 only. Usually left empty: save the account, then click “Authorize with "
            "Google”. Or paste one printed by 'manage.py gmail_authorize'. Write-only; leave empty "
            "to keep the stored one."
        ),
    )
    from_aliases = AddressListField(
        label=_("'Send mail as' addresses"),
        required=False,
        help_text=_("One per line; only addresses verified in Gmail (Settings, Accounts)."),
    )

    class Meta:
        model = GmailAccount
        fields = [
            "name",
            "username",
            "auth_method",
            "host",
            "port",
            "security",
            "timeout",
            "from_aliases",
            "enabled",
            "is_default",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What can be used at all, as rules.py says for the checks and gmail_check: refused here
        # field by field, so no test ever runs on a value Save would refuse.
        if "port" in self.fields:
            self.fields["port"].validators += [
                MinValueValidator(rules.PORT_RANGE[0]),
                MaxValueValidator(rules.PORT_RANGE[1]),
            ]
        if "timeout" in self.fields:
            self.fields["timeout"].validators.append(MaxValueValidator(rules.TIMEOUT_LIMIT))
        if "host" in self.fields:
            self.fields["host"].validators.append(validate_host)
        self.config: SmtpConfig | None = None
        self.problems: list[Problem] = []
        self.oauth_parts: dict[str, str] | None = None  # what save() stores for OAuth2, set by clean()
        if CLIENT_ID_FIELD in self.fields and self.instance.pk is not None and self.instance.has_secret:
            # The client id is no secret: show the stored one (it lives in the encrypted blob).
            with contextlib.suppress(GmailConfigError):  # the clean() reports it
                client_id = self.instance.stored_secret().secret.get("client_id")
                self.fields[CLIENT_ID_FIELD].initial = str(client_id or "")

    @property
    def config_warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if not problem.is_error]

    @sensitive_variables()
    def field_errors(self, fields: tuple[str, ...]) -> list[str]:
        """The errors of ``fields``, each as "label: error", for a button's message."""
        return [f"{self.fields[field].label}: {error}" for field in fields for error in self.errors.get(field, [])]

    def typed(self, field: str) -> str:
        """What was typed into ``field`` ("" for nothing, or before the form is cleaned)."""
        return str(getattr(self, "cleaned_data", {}).get(field) or "").strip()

    @property
    def uses_oauth2(self) -> bool:
        method = self.cleaned_data.get("auth_method") if hasattr(self, "cleaned_data") else None
        return method == GmailAccount.AuthMethod.OAUTH2

    @sensitive_variables()
    def stored_for_form(self, parts: tuple[str, ...]) -> dict[str, Any]:
        """The stored secret, if it may be sent where the form points; ``{}`` when it holds none of ``parts``.

        Raises :class:`SecretDecryptionError` when it cannot be decrypted and
        :class:`SecretDestinationError` when the form's host, port, security or username (or the
        token endpoint) differ from those it was entered for, or it is bound to none.
        """
        data = self.cleaned_data
        if self.instance.pk is None or not self.instance.has_secret:
            return {}
        if any(data.get(name) in (None, "") for name in DESTINATION_FIELDS):
            return {}  # an invalid destination field: its own error stops everything
        sealed: binding.Sealed = self.instance.stored_secret()
        if not any(sealed.secret.get(part) for part in parts):
            return {}  # nothing of it would be used
        return bound_secret(
            self.instance.name,
            sealed,
            host=data["host"],
            port=data["port"],
            security=data["security"],
            username=data["username"],
        )

    @sensitive_variables()
    def current_oauth(self) -> dict[str, str]:
        """The OAuth2 parts the form stands for: typed ones, else the stored ones.

        A new client id without a new refresh token drops the stored refresh token (it belongs to
        the old client). Stored parts are used only while the form points where they were
        entered for; otherwise the client secret must be typed again and the stored refresh
        token is dropped (authorize again). Raises :class:`SecretDecryptionError` when the
        stored ones cannot be read, :class:`SecretDestinationError` when they may not be used
        and no client secret was typed.
        """
        typed = {
            "client_id": self.typed(CLIENT_ID_FIELD),
            "client_secret": self.typed(CLIENT_SECRET_FIELD),
            "refresh_token": self.typed(REFRESH_TOKEN_FIELD),
        }
        stored = dict.fromkeys(GmailAccount.OAUTH_PARTS, "")
        if self.instance.pk is not None and self.instance.has_secret:
            try:
                found = (
                    {}
                    if typed["client_secret"] and typed["refresh_token"]
                    else self.stored_for_form(GmailAccount.OAUTH_PARTS)
                )
            except SecretDestinationError:
                if not typed["client_secret"]:
                    raise
                found = {}  # a new client secret for the new destination; the old refresh token stays behind
            if not found and not typed["client_id"]:
                found = {"client_id": self.instance.stored_secret().secret.get("client_id")}  # no secret
            stored.update({part: str(found.get(part) or "") for part in GmailAccount.OAUTH_PARTS})
        parts = {part: typed[part] or stored[part] for part in GmailAccount.OAUTH_PARTS}
        if typed["client_id"] and typed["client_id"] != stored["client_id"] and not typed["refresh_token"]:
            parts["refresh_token"] = ""
        return parts

    # -- the configuration the form describes ---------------------------------------------------

    def _origin(self, field: str) -> str:
        label = self.fields[field].label if field in self.fields else field
        return gettext("the “%(field)s” field") % {"field": label}

    @sensitive_variables()
    def current_password(self) -> str:
        """The app password the form stands for: the typed one, else the stored one.

        Raises :class:`SecretDecryptionError` when the stored one cannot be decrypted, and
        :class:`SecretDestinationError` when it was entered for another destination.
        """
        typed = self.typed(SECRET_FIELD)
        if typed:
            return conf.normalize_app_password(typed)
        return str(self.stored_for_form(("password",)).get("password") or "")

    @sensitive_variables()
    def build_config(self, password: str, oauth: dict[str, str] | None = None) -> SmtpConfig | None:
        """The configuration of the form's values (None if one of them is invalid).

        Only the form counts: the settings and the environment add nothing but the TLS files
        (``GMAIL_SMTP['SSL_CAFILE']`` / ``GMAIL_SMTP_SSL_CAFILE``), as they do for the backend.
        """
        data = self.cleaned_data
        if any(data.get(name) in (None, "") for name in ("host", "port", "security", "timeout", "username")):
            return None
        provenance = {option: Value(SOURCE_FORM, self._origin(field)) for option, field in OPTION_FIELDS.items()}
        cafile = app_setting("SSL_CAFILE")
        if cafile:
            provenance["ssl_cafile"] = Value(conf.SOURCE_SETTINGS, "GMAIL_SMTP['SSL_CAFILE']")
        else:
            cafile = environment_variable("GMAIL_SMTP_SSL_CAFILE")
            if cafile:
                provenance["ssl_cafile"] = Value(conf.SOURCE_ENVIRONMENT, "GMAIL_SMTP_SSL_CAFILE")
        security = data["security"]
        parts = oauth or {}
        return SmtpConfig(
            host=str(data["host"]).strip(),
            port=int(data["port"]),
            username=str(data["username"]).strip(),
            password=password,
            use_tls=security == GmailAccount.Security.STARTTLS,
            use_ssl=security == GmailAccount.Security.SSL,
            timeout=float(data["timeout"]),
            ssl_cafile=cafile,
            auth_method=conf.AUTH_APP_PASSWORD if oauth is None else conf.AUTH_OAUTH2,
            oauth_client_id=parts.get("client_id", ""),
            oauth_client_secret=parts.get("client_secret", ""),
            oauth_refresh_token=parts.get("refresh_token", ""),
            provenance=provenance,
        )

    def destination_text(self, exc: SecretDestinationError) -> str:
        """E020/E021 worded for this form: which field changed, what it was, and what to do."""
        oauth2 = self.uses_oauth2
        if exc.bound is None:
            if oauth2:
                text = gettext(
                    "The stored OAuth2 client secret and refresh token are bound to no server (saved by an "
                    "older version and not upgraded by 'manage.py migrate'), so they are sent nowhere: "
                    "type the client secret again, save, then authorize again."
                )
            else:
                text = gettext(
                    "The stored app password is bound to no server (saved by an older version and not "
                    "upgraded by 'manage.py migrate'), so it is sent nowhere: type it again."
                )
            return f"{text} ({exc.check_id})"
        was = describe_changes(exc.changed, exc.bound, self._bound_label)
        if oauth2:
            text = gettext(
                "The stored OAuth2 client secret and refresh token were entered for another destination "
                "(%(was)s) and are never sent anywhere else. Type the client secret again (then "
                "authorize again, or paste a refresh token), or put the old values back."
            )
        else:
            text = gettext(
                "The stored app password was entered for another destination (%(was)s) and is never "
                "sent anywhere else. Type the app password again, or put the old values back."
            )
        text = text % {"was": was}
        return f"{text} ({exc.check_id})"

    def _bound_label(self, field: str) -> str:
        if field in self.fields:
            return gettext("the “%(field)s” field") % {"field": self.fields[field].label}
        return "GMAIL_SMTP['OAUTH_TOKEN_URI']"

    @sensitive_variables()
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        self.config, self.problems, self.secret_unreadable = None, [], False
        oauth2 = self.uses_oauth2
        self.oauth_parts = None
        secret_field = CLIENT_SECRET_FIELD if oauth2 else SECRET_FIELD
        try:
            crypto.encryption_keys()  # a wrong GMAIL_SMTP['ENCRYPTION_KEYS'] stops the form, not save()
            password = "" if oauth2 else self.current_password()
            oauth = self.current_oauth() if oauth2 else None
        except SecretDecryptionError as exc:
            if cleaned.get("enabled") is False:
                # A lost key must not stop an operator from switching the account off: saved as
                # it is, its unreadable secret untouched (and unused while it is disabled).
                self.secret_unreadable = True
                return cleaned
            self.add_error(secret_field, ValidationError(f"{exc.message} {exc.hint}", code="undecryptable"))
            return cleaned
        except SecretDestinationError as exc:
            self.add_error(secret_field, ValidationError(self.destination_text(exc), code=exc.check_id))
            return cleaned
        except GmailConfigError as exc:  # GMAIL_SMTP['ENCRYPTION_KEYS'] itself is wrong
            self.add_error(None, ValidationError(str(exc), code=exc.check_id or "invalid"))
            return cleaned
        self.oauth_parts = oauth
        config = self.build_config(password, oauth)
        if config is None:
            return cleaned
        self.config = config
        self.problems = [self._form_level(problem) for problem in rules.unsilenced(rules.check_config(config))]
        for problem in self.problems:
            if problem.is_error:
                field = FIELD_FOR_PROBLEM.get(problem.id) or OPTION_FIELDS.get(problem.option)
                if field is not None and field not in self.fields:
                    field = None
                self.add_error(field, ValidationError(problem_text(problem), code=problem.id))
        return cleaned

    @staticmethod
    def _form_level(problem: Problem) -> Problem:
        """How much a rule's finding weighs here: not authorized yet is no reason to refuse saving."""
        if problem.id == "gmail_smtp.E015":  # the button needs a saved account
            return replace(problem, level=rules.WARNING)
        return problem

    @sensitive_variables()
    def save(self, commit: bool = True) -> GmailAccount:
        instance: GmailAccount = super().save(commit=False)
        if getattr(self, "secret_unreadable", False):
            pass  # disabled with its unreadable secret kept as it is (see clean())
        elif self.uses_oauth2 and self.oauth_parts is not None:
            # All three parts given: nothing stored is read again, the new values bind them.
            instance.set_oauth(**self.oauth_parts)
        else:
            typed = self.typed(SECRET_FIELD)
            if typed:
                instance.set_password(typed)
        if commit:
            instance.save()  # the model has no many-to-many fields to save after it
        return instance


WRITE_ONLY_FIELDS = tuple(
    name for name, field in GmailAccountForm.base_fields.items() if isinstance(field, WriteOnlySecretField)
)
"""The form's write-only secrets: the app password, the OAuth2 client secret and refresh token."""
