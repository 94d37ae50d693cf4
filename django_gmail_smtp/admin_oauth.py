"""Authorize with Google: the admin's OAuth2 web flow for a stored account (authorize, callback).

An OAuth2 account gets an "Authorize with Google" button (test and change permissions, POST
only): it sends the browser to the authorization endpoint with a ``state`` kept in the session
and a PKCE challenge. The callback view (one fixed address, to register as an authorized
redirect URI of the OAuth client) checks the state, trades the code for a refresh token and
stores it encrypted. Every start, refusal, failure and success is recorded in the admin history.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.decorators import method_decorator
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from . import conf, oauth, oauth_flow
from .admin_base import TEMPLATE_DIR, AccountAdminBase, sensitive_secret
from .admin_forms import CLIENT_SECRET_FIELD, DESTINATION_FIELDS
from .causes import CATALOGUE
from .exceptions import GmailConfigError, OAuthError
from .models import GmailAccount

__all__ = ["OAUTH_SESSION_KEY", "AuthorizeViews", "diagnose_config"]

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


class AuthorizeViews(AccountAdminBase):
    """ "Authorize with Google" on the change form of an OAuth2 account, and the callback it returns to."""

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        name = self.pattern_name
        return [
            path("oauth-callback/", wrap(self.oauth_callback_view), name=name("oauth_callback")),
            path(
                "<path:object_id>/authorize-with-google/",
                wrap(self.oauth_authorize_view),
                name=name("oauth_authorize"),
            ),
            *super().get_urls(),
        ]

    def authorize_button(
        self, request: HttpRequest, obj: GmailAccount | None, *, add: bool, allowed: bool
    ) -> dict[str, Any]:
        """The change form's context for "Authorize with Google" (``allowed``: the permissions hold)."""
        oauth2 = obj is not None and not add and obj.auth_method == GmailAccount.AuthMethod.OAUTH2
        return {
            "can_authorize": allowed and oauth2,
            "oauth_client_ready": oauth2 and obj is not None and _client_stored(obj),
            "oauth_authorize_action": self.page_url("oauth_authorize", object_id=obj.pk)
            if oauth2 and obj is not None
            else "",
            "oauth_redirect_uri": request.build_absolute_uri(self._callback_path()) if oauth2 else "",
        }

    def _callback_path(self) -> str:
        return self.page_url("oauth_callback")

    def _posted_form_problem(self, request: HttpRequest, obj: GmailAccount) -> str:
        """Why the values posted with *Authorize with Google* forbid it ("" when they do not).

        The button posts the whole change form. Google's answer is bound to the saved account,
        so a changed host, port, security or username must be saved first, which needs the
        secret typed again: that field's error is the answer.
        """
        if not any(field in request.POST for field in DESTINATION_FIELDS):
            return ""  # not posted from the form: the saved account alone counts
        form = self.posted_form(request, obj)
        changed = [field for field in DESTINATION_FIELDS if field in form.changed_data]
        if not changed:
            return ""
        if errors := form.field_errors((CLIENT_SECRET_FIELD, *DESTINATION_FIELDS)):
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
        if not self.has_test_and_change_permission(request, obj):
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
            pending = oauth_flow.authorization_url(parts["client_id"], redirect_uri, login_hint=obj.username)
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
        if not self.has_test_and_change_permission(request, obj):
            raise PermissionDenied
        try:
            code = oauth_flow.parse_redirect(request.META.get("QUERY_STRING", ""), state)
            parts = obj.get_oauth()
            answer = oauth_flow.exchange_code(
                parts["client_id"],
                parts["client_secret"],
                code,
                redirect_uri=entry["redirect_uri"],
                code_verifier=entry["verifier"],
                timeout=obj.timeout or 10.0,
            )
        except oauth_flow.AuthorizationError as exc:
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
        if not oauth_flow.granted_mail_scope(answer):
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
