"""Try this account: "Test connection", "Send test email", "Confirm delivery", and their history entries.

Each button posts the form's current values (unsaved changes included) to its own view, which
runs :func:`django_gmail_smtp.diagnose.run_check` and answers with the steps, the cause and fix
of a failure, and the redacted SMTP transcript. The list action tests stored accounts as the
backend resolves them. All of it needs the test and change permissions (:mod:`.admin_base`) and
is recorded in the admin history: what was tried, the outcome, where it went and which kind of
secret it used, never the secret. A stored secret is used only with the destination it was
entered for (see :mod:`.binding`; the form asks for it again otherwise).
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.decorators import method_decorator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from . import admin_pending, conf, diagnose, roundtrip
from .accounts import account_options
from .admin_base import TEMPLATE_DIR, AccountAdminBase, sensitive_secret
from .admin_forms import (
    CLIENT_SECRET_FIELD,
    DESTINATION_FIELDS,
    OAUTH_FIELDS,
    REFRESH_TOKEN_FIELD,
    SECRET_FIELD,
    GmailAccountForm,
    problem_text,
)
from .models import GmailAccount

__all__ = [
    "RECIPIENT_FIELD",
    "TryAccountViews",
    "form_credential",
    "history_message",
    "outcome_summary",
    "server_summary",
    "stored_credential",
]

RECIPIENT_FIELD = "_test_recipient"


# -- what the admin history says ------------------------------------------------------------------


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
    if form.uses_oauth2:
        if form.typed(CLIENT_SECRET_FIELD) or form.typed(REFRESH_TOKEN_FIELD):
            return gettext("a typed OAuth2 client secret or refresh token")
    elif form.typed(SECRET_FIELD):
        return gettext("a typed app password")
    return stored_credential(obj)


# -- the views ------------------------------------------------------------------------------------


class TryAccountViews(AccountAdminBase):
    """The "Try this account" buttons of the change form and the list action "Test the connection"."""

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        name = self.pattern_name
        return [
            path("add/test-connection/", wrap(self.test_connection_view), name=name("test_new")),
            path("add/send-test-email/", wrap(self.send_test_email_view), name=name("send_new")),
            path("add/confirm-delivery/", wrap(self.round_trip_view), name=name("round_trip_new")),
            path("<path:object_id>/test-connection/", wrap(self.test_connection_view), name=name("test")),
            path("<path:object_id>/send-test-email/", wrap(self.send_test_email_view), name=name("send")),
            path("<path:object_id>/confirm-delivery/", wrap(self.round_trip_view), name=name("round_trip")),
            *super().get_urls(),
        ]

    def try_buttons(self, request: HttpRequest, obj: GmailAccount | None, *, add: bool) -> dict[str, Any]:
        """The change form's context for "Try this account": where each button posts."""
        suffix, kwargs = ("_new", {}) if obj is None or add else ("", {"object_id": obj.pk})
        return {
            "test_recipient_field": RECIPIENT_FIELD,
            "default_test_recipient": getattr(request.user, "email", "") or "",
            "test_connection_action": self.page_url(f"test{suffix}", **kwargs),
            "send_test_email_action": self.page_url(f"send{suffix}", **kwargs),
            "round_trip_action": self.page_url(f"round_trip{suffix}", **kwargs),
            "round_trip_timeout": f"{roundtrip.DEFAULT_TIMEOUT:g}",
        }

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

        form = self.posted_form(request, obj)
        errors = form.field_errors((SECRET_FIELD, *OAUTH_FIELDS, "username", "host", "port", "security", "timeout"))
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
