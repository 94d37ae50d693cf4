"""Admin for stored Gmail accounts: the list, the add/change form with its write-only secrets.

The account admin is three parts on one ``ModelAdmin``: this module's pages (the list, the form
and its fieldsets, the secret's status, the last test), "Try this account" (:mod:`.admin_try`:
"Test connection", "Send test email", "Confirm delivery" and the list action) and "Authorize with
Google" (:mod:`.admin_oauth`); :mod:`.admin_base` holds what they share (the test permission,
the admin history, the pages' addresses). The delivery log of the queued backend has its own
admin (:mod:`.admin_delivery`).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import admin_pending
from .admin_base import sensitive_secret
from .admin_display import badge, when
from .admin_forms import OAUTH_FIELDS, SECRET_FIELD, GmailAccountForm, problem_text
from .admin_oauth import AuthorizeViews
from .admin_try import TryAccountViews, outcome_summary
from .exceptions import GmailConfigError, SecretDecryptionError, SecretDestinationError
from .models import GmailAccount, destination_label

__all__ = ["GmailAccountAdmin", "outcome_summary"]


@admin.register(GmailAccount)
class GmailAccountAdmin(TryAccountViews, AuthorizeViews):
    """The list and the add/change form of stored accounts; the buttons come from the two views it extends."""

    form = GmailAccountForm
    list_display = ("name", "username", "host", "port", "security", "enabled", "is_default", "last_check")
    list_display_links = ("name",)
    list_filter = ("enabled", "security")
    search_fields = ("name", "username")
    ordering = ("name",)
    actions = ["test_selected"]

    class Media:
        css = {"all": ("gmail_smtp/admin/admin.css",)}

    # -- the pages ------------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: GmailAccount | None = None) -> Any:
        account = ["name", "username", "auth_method"]
        if obj is not None and self.has_test_permission(request):
            account.append("secret_status")
        account += ["enabled", "is_default"]
        # Each sign-in method's fields in a fieldset of its own: account.js shows the chosen one
        # only; without JavaScript both stay visible, each saying which method it is for.
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (None, {"fields": account}),
            (
                _("App password"),
                {
                    "fields": [SECRET_FIELD],
                    "classes": ["gmail-smtp-method", "gmail-smtp-method-app_password"],
                    "description": _("Only for the “App password” authentication method."),
                },
            ),
            (
                _("OAuth2"),
                {
                    "fields": list(OAUTH_FIELDS),
                    "classes": ["gmail-smtp-method", "gmail-smtp-method-oauth2"],
                    "description": _(
                        "Only for the OAuth2 authentication method (Google Workspace accounts without "
                        "app passwords): see README.md#oauth2-xoauth2 for the Google Cloud console steps."
                    ),
                },
            ),
            (_("Server"), {"fields": ["host", "port", "security", "timeout"], "classes": ["gmail-smtp-server"]}),
            (_("Sending"), {"fields": ["from_aliases"]}),
        ]
        if obj is not None:
            fieldsets.append((_("Status"), {"fields": ["last_check_detail", "created", "updated"]}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: GmailAccount | None = None) -> Any:
        fields = ["last_check_detail", "created", "updated"]
        if self.has_test_permission(request):
            fields.append("secret_status")
        return fields

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = list(super().get_list_display(request))
        if self.has_test_permission(request):
            columns.insert(2, "secret_status")
        return columns

    @admin.display(description=_("secret"))
    def secret_status(self, obj: GmailAccount | None) -> str:
        """Whether a secret is stored and readable; never the secret."""
        oauth2 = obj is not None and obj.auth_method == GmailAccount.AuthMethod.OAUTH2
        if obj is None or not obj.has_secret:
            return gettext("No OAuth2 client stored.") if oauth2 else gettext("No app password stored.")
        try:
            secret = obj.get_secret()
        except SecretDecryptionError:
            return gettext(
                "Stored, but it cannot be decrypted with the current keys (SECRET_KEY or "
                "GMAIL_SMTP['ENCRYPTION_KEYS'] changed): enter it again."
            )
        except SecretDestinationError as exc:
            if exc.bound is None:
                return gettext("Stored, but bound to no server (saved by an older version): enter it again.")
            return gettext(
                "Stored for another destination (%(fields)s changed since), so it is not used: enter it again."
            ) % {"fields": ", ".join(destination_label(field) for field in exc.changed)}
        except GmailConfigError as exc:  # GMAIL_SMTP['ENCRYPTION_KEYS'] itself is wrong
            return exc.message
        if not oauth2:
            return gettext("An app password is stored.")
        if not (secret.get("client_id") and secret.get("client_secret")):
            return gettext("OAuth2: the client ID or client secret is missing.")
        if not secret.get("refresh_token"):
            return gettext("OAuth2: client stored, not authorized yet (use “Authorize with Google”).")
        return gettext("OAuth2: client stored and authorized (a refresh token is stored).")

    @admin.display(description=_("last test"), ordering="last_checked_at")
    def last_check(self, obj: GmailAccount) -> str:
        """Passed or failed in words on a coloured label, and when; the outcome in full on hover."""
        if obj.last_checked_at is None:
            return gettext("never")
        label = (
            badge("ok", gettext("passed"), obj.last_check_message)
            if obj.last_check_ok
            else badge("failed", gettext("failed"), obj.last_check_message)
        )
        return format_html("{} {}", label, when(obj.last_checked_at))

    @admin.display(description=_("last test"))
    def last_check_detail(self, obj: GmailAccount) -> str:
        """The list's label, with the outcome written out (a tooltip is no way to read it)."""
        if obj.last_checked_at is None:
            return gettext("never")
        return format_html('{}<p class="gmail-smtp-check-message">{}</p>', self.last_check(obj), obj.last_check_message)

    @admin.display(description=_("created"))
    def created(self, obj: GmailAccount) -> str:
        return when(obj.created_at)

    @admin.display(description=_("updated"))
    def updated(self, obj: GmailAccount) -> str:
        return when(obj.updated_at)

    @sensitive_secret
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        context["can_test_account"] = self.has_test_permission(request)
        return super().changeform_view(request, object_id, form_url, context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: GmailAccount | None = None,
    ) -> HttpResponse:
        can_act = context.get("can_test_account", False) and (
            self.has_change_permission(request, obj) if obj is not None else self.has_add_permission(request)
        )
        context.update(
            can_test_account=can_act,
            config_warnings=[problem_text(p) for p in getattr(context["adminform"].form, "config_warnings", [])],
            **self.try_buttons(request, obj, add=add),
            **self.authorize_button(request, obj, add=add, allowed=can_act),
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request: HttpRequest, obj: GmailAccount, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        tested = admin_pending.recall(request, getattr(form, "config", None))
        if tested is not None:  # these very values were tested before they were saved
            obj.record_check(*tested)
        for problem in getattr(form, "config_warnings", []):
            messages.warning(request, problem_text(problem))


from . import admin_delivery  # noqa: E402, F401  (the delivery log of the queued backend)
