"""Admin for stored Gmail accounts: write-only secret, "Test connection" and "Send test email".

Both buttons post the form's current values (unsaved changes included) to their own view, which
runs :func:`django_gmail_smtp.diagnose.run_check` and answers with the steps, the cause and
fix of a failure, and the redacted SMTP transcript. They need the ``gmail_smtp.test_gmailaccount``
permission (superusers have it) and the change permission, as does the list action; the test
permission alone shows whether a secret is stored. A stored secret is used only with the
destination it was entered for (see :mod:`.binding`; the form asks for it again otherwise).
Every test, test email and authorization is recorded in the admin history (``LogEntry``).

An OAuth2 account also gets "Authorize with Google" (same permission, POST only): it sends the
browser to the authorization endpoint with a ``state`` kept in the session and a PKCE challenge;
the callback view (one fixed address, to register as an authorized redirect URI of the OAuth
client) checks the state, trades the code for a refresh token and stores it encrypted.
"""

from __future__ import annotations

import time
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import unquote
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from . import admin_pending, conf, diagnose, oauth, roundtrip
from .accounts import account_options
from .admin_display import badge, when
from .admin_forms import (
    CLIENT_SECRET_FIELD,
    DESTINATION_FIELDS,
    OAUTH_FIELDS,
    REFRESH_TOKEN_FIELD,
    SECRET_FIELD,
    WRITE_ONLY_FIELDS,
    GmailAccountForm,
    problem_text,
)
from .causes import CATALOGUE
from .exceptions import GmailConfigError, OAuthError, SecretDecryptionError, SecretDestinationError
from .models import GmailAccount, destination_label

__all__ = ["GmailAccountAdmin", "outcome_summary"]

TEST_PERMISSION = "test_gmailaccount"
RECIPIENT_FIELD = "_test_recipient"
TEMPLATE_DIR = "admin/gmail_smtp/gmailaccount"

sensitive_secret = method_decorator(sensitive_post_parameters(*WRITE_ONLY_FIELDS))
# Authorizations in progress, in the session: {state: {"account", "verifier", "redirect_uri", "user", "created"}}.
OAUTH_SESSION_KEY = "gmail_smtp_oauth_pending"
OAUTH_PENDING_SECONDS = 600
OAUTH_PENDING_MAX = 5


def _client_stored(obj: GmailAccount) -> bool:
    try:
        parts = obj.get_oauth()
    except GmailConfigError:  # unreadable, or entered for another destination: the status says which
        return False
    return bool(parts["client_id"] and parts["client_secret"])


@sensitive_variables()
def diagnose_config(obj: GmailAccount) -> conf.SmtpConfig:
    """A configuration holding the account's stored OAuth2 parts (to find its cached access token)."""
    parts = obj.get_oauth()
    return conf.SmtpConfig(
        host=obj.host,
        port=obj.port,
        username=obj.username,
        password="",
        use_tls=obj.use_tls,
        use_ssl=obj.use_ssl,
        timeout=obj.timeout,
        auth_method=conf.AUTH_OAUTH2,
        oauth_client_id=parts["client_id"],
        oauth_client_secret=parts["client_secret"],
        oauth_refresh_token=parts["refresh_token"],
    )


def outcome_summary(diagnosis: diagnose.Diagnosis, *, sent_to: str = "") -> str:
    """One line recorded on the account: what passed, or which step failed and why."""
    trip = diagnosis.round_trip or {}
    if diagnosis.ok:
        if trip.get("arrived"):
            return gettext("Test email delivered to %(to)s: it arrived in %(folder)s after %(seconds).1f s.") % {
                "to": trip.get("to", ""),
                "folder": trip.get("folder", ""),
                "seconds": trip.get("seconds", 0.0),
            }
        if sent_to:
            send = diagnosis.step("send")
            reply = send.data.get("reply", "") if send is not None else ""
            return gettext("Test email sent to %(to)s; the server replied: %(reply)s") % {
                "to": sent_to,
                "reply": reply or "-",
            }
        return gettext("Connection, TLS and sign-in succeeded.")
    failed = diagnosis.step(diagnosis.failed_step or "")
    title = failed.title if failed is not None else diagnosis.failed_step
    cause = diagnosis.cause
    summary = str(cause.summary) if cause is not None else diagnosis.error
    return gettext("Failed at %(step)s: %(summary)s") % {"step": title, "summary": summary}


def server_summary(host: Any, port: Any, security: Any, username: Any, credential: str) -> str:
    """Where a test went and with what, for the admin history: never a secret, only which one."""
    try:
        security_label = str(GmailAccount.Security(security).label)
    except ValueError:
        security_label = str(security)
    return gettext("Server %(host)s:%(port)s (%(security)s), user %(username)s, %(credential)s.") % {
        "host": str(host)[:255],
        "port": str(port)[:10],
        "security": security_label[:40],
        "username": str(username)[:254],
        "credential": credential,
    }


def history_message(action: str, result: str, server: str) -> str:
    """One admin history entry of a test: the action, its result, then where it went."""
    return gettext("%(action)s: %(result)s") % {"action": action, "result": result} + " " + server


def stored_credential(obj: GmailAccount | None) -> str:
    """Which stored secret a test of a saved account uses (its kind, never its value)."""
    if obj is None or not obj.has_secret:
        return gettext("no stored secret")
    if obj.auth_method == GmailAccount.AuthMethod.OAUTH2:
        return gettext("the stored OAuth2 client secret and refresh token")
    return gettext("the stored app password")


def form_credential(form: GmailAccountForm, obj: GmailAccount | None) -> str:
    """Which secret the posted form tests with: the typed one, or the stored one."""
    data = getattr(form, "cleaned_data", {})
    if form.uses_oauth2:
        if data.get(CLIENT_SECRET_FIELD) or data.get(REFRESH_TOKEN_FIELD):
            return gettext("a typed OAuth2 client secret or refresh token")
    elif data.get(SECRET_FIELD):
        return gettext("a typed app password")
    return stored_credential(obj)


@admin.register(GmailAccount)
class GmailAccountAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = GmailAccountForm
    list_display = ("name", "username", "host", "port", "security", "enabled", "is_default", "last_check")
    list_display_links = ("name",)
    list_filter = ("enabled", "security")
    search_fields = ("name", "username")
    ordering = ("name",)
    actions = ["test_selected"]

    class Media:
        css = {"all": ("gmail_smtp/admin/admin.css",)}

    # -- permissions ----------------------------------------------------------------------------

    def has_test_permission(self, request: HttpRequest) -> bool:
        """May test accounts, send test email and see whether a secret is stored."""
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.{TEST_PERMISSION}"))

    def has_test_and_change_permission(self, request: HttpRequest, obj: GmailAccount | None = None) -> bool:
        """What the list action needs, as the buttons do (an action's ``permissions`` need only one)."""
        return self.has_test_permission(request) and self.has_change_permission(request, obj)

    # -- the admin history ----------------------------------------------------------------------

    def log_test(self, request: HttpRequest, obj: GmailAccount | None, message: str, *, name: str = "") -> None:
        """Record a test, test email or authorization in the admin history: who, what, the outcome.

        On a saved account it is a change entry of that account (its history page lists it). A
        test on the add page has no account yet: the entry names the typed name and links to
        nothing (it shows under "Recent actions"). ``message`` must never hold a secret.
        """
        if obj is not None:
            self.log_change(request, obj, message)
            return
        LogEntry.objects.create(
            user_id=cast(int, request.user.pk),  # the admin views need a signed-in user
            content_type_id=ContentType.objects.get_for_model(self.model, for_concrete_model=False).pk,
            object_id=None,
            object_repr=(name.strip() or gettext("new Gmail account (not saved)"))[:200],
            action_flag=CHANGE,
            change_message=message,
        )

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
        context["test_recipient_field"] = RECIPIENT_FIELD
        context["default_test_recipient"] = getattr(request.user, "email", "") or ""
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
        info = (self.opts.app_label, self.opts.model_name)
        if obj is None or add:
            kwargs: dict[str, Any] = {}
            prefix = f"admin:{info[0]}_{info[1]}_%s_new"
        else:
            kwargs = {"object_id": obj.pk}
            prefix = f"admin:{info[0]}_{info[1]}_%s"
        can_act = context.get("can_test_account", False) and (
            self.has_change_permission(request, obj) if obj is not None else self.has_add_permission(request)
        )
        oauth2 = obj is not None and not add and obj.auth_method == GmailAccount.AuthMethod.OAUTH2
        context.update(
            can_test_account=can_act,
            test_connection_action=reverse(prefix % "test", kwargs=kwargs, current_app=self.admin_site.name),
            send_test_email_action=reverse(prefix % "send", kwargs=kwargs, current_app=self.admin_site.name),
            round_trip_action=reverse(prefix % "round_trip", kwargs=kwargs, current_app=self.admin_site.name),
            round_trip_timeout=f"{roundtrip.DEFAULT_TIMEOUT:g}",
            config_warnings=[problem_text(p) for p in getattr(context["adminform"].form, "config_warnings", [])],
            can_authorize=can_act and oauth2,
            oauth_client_ready=oauth2 and obj is not None and _client_stored(obj),
            oauth_authorize_action=reverse(
                f"admin:{info[0]}_{info[1]}_oauth_authorize", kwargs=kwargs, current_app=self.admin_site.name
            )
            if oauth2
            else "",
            oauth_redirect_uri=request.build_absolute_uri(self._callback_path()) if oauth2 else "",
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request: HttpRequest, obj: GmailAccount, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        tested = admin_pending.recall(request, getattr(form, "config", None))
        if tested is not None:  # these very values were tested before they were saved
            obj.record_check(*tested)
        for problem in getattr(form, "config_warnings", []):
            messages.warning(request, problem_text(problem))

    # -- Test connection / Send test email --------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        wrap = self.admin_site.admin_view
        name = "{}_{}_{}".format
        return [
            path("oauth-callback/", wrap(self.oauth_callback_view), name=name(*info, "oauth_callback")),
            path(
                "<path:object_id>/authorize-with-google/",
                wrap(self.oauth_authorize_view),
                name=name(*info, "oauth_authorize"),
            ),
            path("add/test-connection/", wrap(self.test_connection_view), name=name(*info, "test_new")),
            path("add/send-test-email/", wrap(self.send_test_email_view), name=name(*info, "send_new")),
            path("add/confirm-delivery/", wrap(self.round_trip_view), name=name(*info, "round_trip_new")),
            path("<path:object_id>/test-connection/", wrap(self.test_connection_view), name=name(*info, "test")),
            path("<path:object_id>/send-test-email/", wrap(self.send_test_email_view), name=name(*info, "send")),
            path("<path:object_id>/confirm-delivery/", wrap(self.round_trip_view), name=name(*info, "round_trip")),
            *super().get_urls(),
        ]

    @sensitive_secret
    @method_decorator(require_POST)
    def test_connection_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        return self._run_test(request, object_id, send=False)

    @sensitive_secret
    @method_decorator(require_POST)
    def send_test_email_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        return self._run_test(request, object_id, send=True)

    @sensitive_secret
    @method_decorator(require_POST)
    def round_trip_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        """Send a test email to the account itself and confirm its delivery over IMAP (the round trip)."""
        return self._run_test(request, object_id, send=False, round_trip=True)

    def _run_test(
        self, request: HttpRequest, object_id: str | None, *, send: bool, round_trip: bool = False
    ) -> HttpResponse:
        """Test the values in the posted form (before saving); the stored secret if none was typed.

        Nothing runs on values Save would refuse: the form's errors are the answer. The outcome is
        the account's "last test" only when the form holds its saved values; otherwise it is kept
        (:mod:`.admin_pending`) and recorded if exactly these values are saved.
        """
        if not self.has_test_permission(request):
            raise PermissionDenied
        obj: GmailAccount | None = None
        if object_id is not None:
            obj = self.get_object(request, unquote(object_id))
            if obj is None:
                raise Http404
            if not self.has_change_permission(request, obj):
                raise PermissionDenied
        elif not self.has_add_permission(request):
            raise PermissionDenied

        form_class = self.get_form(request, obj, change=obj is not None)
        form = cast(GmailAccountForm, form_class(request.POST, request.FILES, instance=obj))
        form.is_valid()  # builds form.config when the connection's fields are valid
        errors: list[str] = []
        for field in (SECRET_FIELD, *OAUTH_FIELDS, "username", "host", "port", "security", "timeout"):
            errors += [f"{form.fields[field].label}: {error}" for error in form.errors.get(field, [])]
        errors += [str(error) for error in form.non_field_errors()]
        if form.config is None and not errors:
            errors.append(gettext("Fill in the account's address, server, port, security and timeout first."))
        recipient = str(request.POST.get(RECIPIENT_FIELD, "")).strip()
        if send:
            try:
                validate_email(recipient)
            except ValidationError:
                errors.append(gettext("Enter the address to send the test email to."))
        errors = list(dict.fromkeys(errors))

        diagnosis = None
        unsaved = obj is None or form.has_changed()
        if not errors and form.config is not None:
            if round_trip:
                # The mailbox (IMAP) comes from GMAIL_SMTP or the defaults: Gmail's for a Gmail host,
                # else the SMTP host itself, which the stored secret is bound to.
                config = conf.with_mailbox(form.config)
                diagnosis = diagnose.run_check(config, round_trip=roundtrip.RoundTrip(), from_admin=True)
            else:
                diagnosis = diagnose.run_check(form.config, send_to=[recipient] if send else (), from_admin=True)
            summary = outcome_summary(diagnosis, sent_to=recipient if send else "")
            if unsaved:
                admin_pending.remember(request, form.config, diagnosis.ok, summary)
                if obj is not None:  # for the history: not what the saved account does
                    summary += " " + gettext("(Tested with unsaved changes.)")
            else:
                cast(GmailAccount, obj).record_check(diagnosis.ok, summary)
        else:
            summary = gettext("Not run: %(errors)s") % {"errors": " ".join(errors)}
        posted = {field: form.data.get(field, "") for field in DESTINATION_FIELDS}
        title = (
            gettext("Send test email and confirm delivery")
            if round_trip
            else gettext("Send test email")
            if send
            else gettext("Test connection")
        )
        server = server_summary(**posted, credential=form_credential(form, obj))
        self.log_test(request, obj, history_message(title, summary, server), name=str(form.data.get("name", "")))

        send_step = diagnosis.step("send") if diagnosis is not None and send else None
        failed_step = diagnosis.step(diagnosis.failed_step) if diagnosis and diagnosis.failed_step else None
        cause = diagnosis.cause if diagnosis is not None else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "title": title,
            "send": send,
            "round_trip": diagnosis.round_trip if diagnosis is not None and round_trip else None,
            "confirming": round_trip,
            "mailbox_transcript": diagnosis.mailbox_transcript_lines() if diagnosis is not None else [],
            "recipient": recipient,
            "errors": errors,
            "diagnosis": diagnosis,
            "failed_step": failed_step,
            "cause": cause,
            "cause_fix": cause.fix_for(form=True) if cause is not None else "",
            "problems": [(p, problem_text(p)) for p in (diagnosis.problems if diagnosis else [])],
            "transcript": diagnosis.transcript_lines() if diagnosis is not None else [],
            "server_reply": send_step.data.get("reply", "") if send_step is not None else "",
            "unsaved": unsaved,
            "form_url": self._change_url(obj) if obj is not None else self._add_url(),
        }
        fragment = request.headers.get("X-Requested-With") == "XMLHttpRequest"
        template = f"{TEMPLATE_DIR}/test_result.html" if fragment else f"{TEMPLATE_DIR}/test_result_page.html"
        return TemplateResponse(request, template, context)

    # -- Authorize with Google (OAuth2 web flow) --------------------------------------------------

    def _callback_path(self) -> str:
        info = (self.opts.app_label, self.opts.model_name)
        return reverse(f"admin:{info[0]}_{info[1]}_oauth_callback", current_app=self.admin_site.name)

    def _add_url(self) -> str:
        info = (self.opts.app_label, self.opts.model_name)
        return reverse(f"admin:{info[0]}_{info[1]}_add", current_app=self.admin_site.name)

    def _change_url(self, obj: GmailAccount) -> str:
        info = (self.opts.app_label, self.opts.model_name)
        return reverse(f"admin:{info[0]}_{info[1]}_change", args=[obj.pk], current_app=self.admin_site.name)

    def _may_authorize(self, request: HttpRequest, obj: GmailAccount) -> bool:
        return self.has_test_permission(request) and self.has_change_permission(request, obj)

    def _posted_form_problem(self, request: HttpRequest, obj: GmailAccount) -> str:
        """Why the values posted with *Authorize with Google* forbid it ("" when they do not).

        The button posts the whole change form. Google's answer is bound to the saved account,
        so a changed host, port, security or username must be saved first, which needs the
        secret typed again: that field's error is the answer.
        """
        if not any(field in request.POST for field in DESTINATION_FIELDS):
            return ""  # not posted from the form: the saved account alone counts
        form_class = self.get_form(request, obj, change=True)
        form = cast(GmailAccountForm, form_class(request.POST, request.FILES, instance=obj))
        form.is_valid()
        changed = [field for field in DESTINATION_FIELDS if field in form.changed_data]
        if not changed:
            return ""
        errors = [
            f"{form.fields[field].label}: {error}"
            for field in (CLIENT_SECRET_FIELD, *DESTINATION_FIELDS)
            for error in form.errors.get(field, [])
        ]
        if errors:
            return " ".join(errors)
        return gettext(
            "Save the account first: %(fields)s changed, and the authorization is stored for the saved values."
        ) % {"fields": ", ".join(f"“{form.fields[field].label}”" for field in changed)}

    @sensitive_secret
    @method_decorator(require_POST)
    def oauth_authorize_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Send the browser to the authorization endpoint (the state is kept in the session)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        if not self._may_authorize(request, obj):
            raise PermissionDenied
        back = HttpResponseRedirect(self._change_url(obj))
        if obj.auth_method != GmailAccount.AuthMethod.OAUTH2:
            messages.error(request, gettext("This account does not sign in with OAuth2: choose OAuth2 and save first."))
            return back
        problem = self._posted_form_problem(request, obj)
        if problem:
            self._log_authorization(request, obj, gettext("refused: %(reason)s") % {"reason": problem})
            return self._oauth_failure(request, obj, problem)
        try:
            parts = obj.get_oauth()  # only where it was entered for (E020 if the row was changed)
        except GmailConfigError as exc:
            self._log_authorization(request, obj, gettext("refused: %(reason)s") % {"reason": exc.message})
            messages.error(request, f"{exc.message} {exc.hint}")
            return back
        if not (parts["client_id"] and parts["client_secret"]):
            messages.error(request, gettext("Enter and save the OAuth2 client ID and client secret first."))
            return back
        redirect_uri = request.build_absolute_uri(self._callback_path())
        try:
            pending = oauth.authorization_url(parts["client_id"], redirect_uri, login_hint=obj.username)
        except GmailConfigError as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
            return back
        store = {
            state: entry
            for state, entry in dict(request.session.get(OAUTH_SESSION_KEY) or {}).items()
            if time.time() - float(entry.get("created", 0)) < OAUTH_PENDING_SECONDS
        }
        store[pending.state] = {
            "account": obj.pk,
            "verifier": pending.code_verifier,
            "redirect_uri": redirect_uri,
            "user": request.user.pk,
            "created": time.time(),
        }
        request.session[OAUTH_SESSION_KEY] = dict(list(store.items())[-OAUTH_PENDING_MAX:])
        self._log_authorization(request, obj, gettext("started (the browser was sent to Google's sign-in page)."))
        return HttpResponseRedirect(pending.url)

    def _log_authorization(self, request: HttpRequest, obj: GmailAccount, outcome: str) -> None:
        self.log_test(request, obj, gettext("Authorize with Google: %(outcome)s") % {"outcome": outcome})

    @method_decorator(sensitive_variables())
    def oauth_callback_view(self, request: HttpRequest) -> HttpResponse:
        """The authorization endpoint's redirect: check the state, trade the code, store the token."""
        store = dict(request.session.get(OAUTH_SESSION_KEY) or {})
        state = str(request.GET.get("state", ""))
        entry = store.pop(state, None) if state else None
        if entry is not None:
            request.session[OAUTH_SESSION_KEY] = store
        fresh = entry is not None and time.time() - float(entry.get("created", 0)) < OAUTH_PENDING_SECONDS
        if entry is None or not fresh or entry.get("user") != request.user.pk:
            return self._oauth_failure(
                request,
                None,
                gettext(
                    "This answer does not match an authorization started from this browser session "
                    "(wrong or expired state), so it was rejected and nothing was stored. Start again "
                    "with “Authorize with Google”."
                ),
            )
        obj = GmailAccount.objects.filter(pk=entry["account"]).first()
        if obj is None:
            raise Http404
        if not self._may_authorize(request, obj):
            raise PermissionDenied
        try:
            code = oauth.parse_redirect(request.META.get("QUERY_STRING", ""), state)
            parts = obj.get_oauth()
            answer = oauth.exchange_code(
                parts["client_id"],
                parts["client_secret"],
                code,
                redirect_uri=entry["redirect_uri"],
                code_verifier=entry["verifier"],
                timeout=obj.timeout or 10.0,
            )
        except oauth.AuthorizationError as exc:
            return self._oauth_failure(request, obj, str(exc), log=True)
        except (OAuthError, GmailConfigError) as exc:
            explained = getattr(exc, "cause", None)
            text = exc.message if isinstance(exc, GmailConfigError) else str(exc.args[0] if exc.args else exc)
            if explained is not None:
                text = f"{text} {explained.summary} {explained.fix}"
            return self._oauth_failure(request, obj, text, log=True)
        refresh_token = str(answer.get("refresh_token") or "")
        if not refresh_token:
            return self._oauth_failure(
                request,
                obj,
                gettext("Google returned no refresh token: remove the app's access in the Google account, then retry."),
                log=True,
            )
        if not oauth.granted_mail_scope(answer):
            return self._oauth_failure(
                request,
                obj,
                f"{CATALOGUE['oauth_wrong_scope'].summary} {CATALOGUE['oauth_wrong_scope'].fix}",
                log=True,
            )
        oauth.forget_token(diagnose_config(obj))  # the access token cached for the old refresh token
        obj.set_oauth(refresh_token=refresh_token)
        obj.save()
        self.log_change(request, obj, gettext("Authorized with Google (refresh token stored)."))
        messages.success(
            request,
            gettext(
                "The Gmail account “%(name)s” is authorized: the refresh token is stored, encrypted. Try “Test connection”."
            )
            % {"name": obj.name},
        )
        return HttpResponseRedirect(self._change_url(obj))

    def _oauth_failure(
        self, request: HttpRequest, obj: GmailAccount | None, text: str, *, log: bool = False
    ) -> HttpResponse:
        if log and obj is not None:
            self._log_authorization(request, obj, gettext("failed: %(reason)s") % {"reason": text})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "title": gettext("Authorize with Google"),
            "error": text,
            "change_url": self._change_url(obj) if obj is not None else "",
        }
        return TemplateResponse(request, f"{TEMPLATE_DIR}/oauth_failed.html", context, status=400)

    # -- list action ----------------------------------------------------------------------------

    @admin.action(description=_("Test the connection of the selected accounts"), permissions=["test_and_change"])
    def test_selected(self, request: HttpRequest, queryset: QuerySet[GmailAccount]) -> None:
        """Test each stored account exactly as the backend would resolve it (test + change permissions)."""
        for account in queryset:
            diagnosis = diagnose.check({"account": account.name}, accounts=account_options)
            summary = outcome_summary(diagnosis)
            account.record_check(diagnosis.ok, summary)
            server = server_summary(
                account.host, account.port, account.security, account.username, stored_credential(account)
            )
            action = gettext("Test the connection of the selected accounts")
            self.log_test(request, account, history_message(action, summary, server))
            level = messages.SUCCESS if diagnosis.ok else messages.ERROR
            # Not "name: ...": the admin capitalises a message's first letter, and names are lowercase slugs.
            self.message_user(
                request,
                gettext("Gmail account “%(name)s”: %(outcome)s") % {"name": account.name, "outcome": summary},
                level,
            )


from . import admin_delivery  # noqa: E402, F401  (the delivery log of the queued backend)
