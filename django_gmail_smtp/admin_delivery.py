"""Admin for the delivery log of the queued backend: read-only, with a *retry* action.

Entries are never edited here; the message itself (kept only until it is sent) is never shown.
Retrying needs the ``gmail_smtp.retry_deliverylog`` permission (superusers have it) and applies to
failed messages and to stuck ones (unsent, more than a lease overdue: no worker ran them).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import queued
from .models import DeliveryLog

__all__ = ["DeliveryLogAdmin"]

RETRY_PERMISSION = "retry_deliverylog"


@admin.register(DeliveryLog)
class DeliveryLogAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "created_at",
        "status",
        "stuck",
        "message_id",
        "account",
        "mailer",
        "recipients",
        "attempts",
        "reply_line",
        "due_at",
        "sent_at",
    )
    list_filter = ("status", "account", "mailer", "cause")
    search_fields = ("message_id", "account")
    date_hierarchy = "created_at"
    exclude = ("payload",)
    readonly_fields = (
        "message_id",
        "status",
        "mailer",
        "account",
        "recipients",
        "attempts",
        "last_reply",
        "cause",
        "task_backend",
        "queue_name",
        "due_at",
        "created_at",
        "updated_at",
        "sent_at",
    )
    actions = ["retry_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{RETRY_PERMISSION}")

    @admin.display(description=_("last reply"))
    def reply_line(self, obj: DeliveryLog) -> str:
        line = obj.last_reply.splitlines()[0] if obj.last_reply else ""
        return line if len(line) <= 80 else line[:79] + "…"

    @admin.display(description=_("stuck"), boolean=True)
    def stuck(self, obj: DeliveryLog) -> bool:
        return queued.is_stuck(obj)

    @admin.action(description=_("Retry the selected failed or stuck messages"), permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[DeliveryLog]) -> None:
        def failed_to_queue(entry: DeliveryLog, exc: Exception) -> None:
            self.message_user(
                request,
                gettext("%(message_id)s could not be queued again: %(error)s")
                % {"message_id": entry.message_id, "error": exc},
                messages.ERROR,
            )

        count = queued.retry(queryset, on_error=failed_to_queue)
        skipped = queryset.count() - count
        if count:
            self.message_user(
                request,
                ngettext("%(count)d message was queued again.", "%(count)d messages were queued again.", count)
                % {"count": count},
                messages.SUCCESS,
            )
        if skipped > 0:
            self.message_user(
                request,
                ngettext(
                    "%(count)d message was left alone: only failed or stuck messages that are not sent yet can be retried.",
                    "%(count)d messages were left alone: only failed or stuck messages that are not sent yet can be retried.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )
