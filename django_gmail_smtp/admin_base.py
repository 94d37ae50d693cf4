"""What the Gmail account admin's pages share: the test permission, the admin history, page addresses.

:class:`AccountAdminBase` is the ``ModelAdmin`` that the account admin's parts build on (its
pages in :mod:`.admin`, "Try this account" in :mod:`.admin_try`, "Authorize with Google" in
:mod:`.admin_oauth`). Testing an account, sending a test email and authorizing it need the
``gmail_smtp.test_gmailaccount`` permission (superusers have it) and the change permission; the
test permission alone shows whether a secret is stored. Each of them is recorded in the admin
history (``LogEntry``), never with a secret.
"""

from __future__ import annotations

from typing import cast

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_post_parameters

from .admin_forms import WRITE_ONLY_FIELDS, GmailAccountForm
from .models import GmailAccount

__all__ = ["TEMPLATE_DIR", "TEST_PERMISSION", "AccountAdminBase", "sensitive_secret"]

TEST_PERMISSION = "test_gmailaccount"
TEMPLATE_DIR = "admin/gmail_smtp/gmailaccount"

sensitive_secret = method_decorator(sensitive_post_parameters(*WRITE_ONLY_FIELDS))
"""For every view that receives the account form: its write-only secrets stay out of error reports."""


class AccountAdminBase(admin.ModelAdmin):  # type: ignore[type-arg]
    """Permissions, the admin history entry and page addresses of the Gmail account admin."""

    # -- permissions ----------------------------------------------------------------------------

    def has_test_permission(self, request: HttpRequest) -> bool:
        """May test accounts, send test email and see whether a secret is stored."""
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.{TEST_PERMISSION}"))

    def has_test_and_change_permission(self, request: HttpRequest, obj: GmailAccount | None = None) -> bool:
        """What the list action needs, as the buttons do (an action's ``permissions`` need only one)."""
        return self.has_test_permission(request) and self.has_change_permission(request, obj)

    def posted_form(self, request: HttpRequest, obj: GmailAccount | None) -> GmailAccountForm:
        """The account form bound to what a button posted (they post the whole form), validated."""
        form_class = self.get_form(request, obj, change=obj is not None)
        form = cast(GmailAccountForm, form_class(request.POST, request.FILES, instance=obj))
        form.is_valid()  # builds form.config when the connection's fields are valid
        return form

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

    # -- addresses of the pages -----------------------------------------------------------------

    def pattern_name(self, page: str) -> str:
        """The URL pattern name of one of this admin's pages (``"change"``, ``"oauth_callback"``...)."""
        return f"{self.opts.app_label}_{self.opts.model_name}_{page}"

    def page_url(self, page: str, **kwargs: object) -> str:
        """The address of one of this admin's pages (``kwargs``: its ``object_id``, if it takes one)."""
        return reverse(f"admin:{self.pattern_name(page)}", kwargs=kwargs or None, current_app=self.admin_site.name)

    def _add_url(self) -> str:
        return self.page_url("add")

    def _change_url(self, obj: GmailAccount) -> str:
        return self.page_url("change", object_id=obj.pk)
