"""Admin for the delivery log of the queued backend: "did my mail to bob@example.com go out, and if not, why?".

Read-only, with a *retry* action. The list fits a 1280-pixel screen (when, status, to, subject,
account, attempts, last reply), is searchable by recipient, subject, Message-ID and account, and
starts with a picture: the last 24 hours hour by hour (sent, failed, held) and each account's use
of its daily limit. The detail page explains a failure with its cause and fix from
:mod:`.causes`. The message itself (kept only until it is sent) is never shown.

Retrying needs the ``gmail_smtp.retry_deliverylog`` permission (superusers have it) and applies to
failed messages and to stuck ones (unsent, more than a lease overdue: no worker ran them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.formats import date_format, number_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import queue_report, queued
from .admin_display import address, badge, readme, reply_summary, shorten, when
from .app_settings import number_setting
from .causes import CATALOGUE, Cause, explain_reply
from .models import DeliveryLog, GmailAccount

__all__ = ["DeliveryLogAdmin", "cause_of"]

RETRY_PERMISSION = "retry_deliverylog"
OPEN_STATUSES = (DeliveryLog.Status.QUEUED, DeliveryLog.Status.HELD, DeliveryLog.Status.SENDING)
# Badges say a status in one word; the full label is their tooltip.
SHORT_STATUS: dict[str, Any] = {DeliveryLog.Status.HELD: _("held")}
_REPLY_CODE = re.compile(r"^\s*([2-5]\d\d)[ -]")


def cause_of(entry: DeliveryLog) -> Cause | None:
    """What went wrong with an entry: its recorded cause id, else what its last reply means."""
    if entry.cause in CATALOGUE:
        return CATALOGUE[entry.cause]
    match = _REPLY_CODE.match(entry.last_reply)
    if match and entry.status != DeliveryLog.Status.SENT:
        return explain_reply(int(match.group(1)), entry.last_reply)
    return None


# -- the picture on top of the list ---------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 480, 150
PLOT_LEFT, PLOT_TOP, PLOT_BOTTOM = 30, 8, 126  # the plot area inside the SVG's coordinates


@dataclass(frozen=True)
class Bar:
    """One hour's stacked bar in the SVG: each series as (y, height) in the chart's coordinates."""

    x: float
    width: float
    sent: tuple[float, float]
    failed: tuple[float, float]
    held: tuple[float, float]
    label: str
    tooltip: str
    hour: queue_report.HourCounts


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... that is at least ``value`` (the chart's top)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def chart(activity: queue_report.Activity) -> dict[str, Any]:
    """The geometry of the 24-hour chart, for ``overview.html`` to draw (no JavaScript)."""
    top = _nice_ceiling(max(activity.peak, 1))
    height = PLOT_BOTTOM - PLOT_TOP
    slot = (CHART_WIDTH - PLOT_LEFT - 4) / max(len(activity.hours), 1)
    scale = height / top
    bars = []
    for number, hour in enumerate(activity.hours):
        y = float(PLOT_BOTTOM)
        parts = {}
        for series in ("sent", "failed", "held"):
            size = getattr(hour, series) * scale
            y -= size
            parts[series] = (round(y, 1), round(size, 1))
        label = date_format(hour.start, "H:i")
        bars.append(
            Bar(
                x=round(PLOT_LEFT + number * slot + slot * 0.15, 1),
                width=round(slot * 0.7, 1),
                sent=parts["sent"],
                failed=parts["failed"],
                held=parts["held"],
                label=label if number % 3 == 0 else "",
                tooltip=gettext("%(hour)s: %(sent)d sent, %(failed)d failed, %(held)d held")
                % {"hour": label, "sent": hour.sent, "failed": hour.failed, "held": hour.held},
                hour=hour,
            )
        )
    ticks = [(value, round(PLOT_BOTTOM - value * scale, 1)) for value in (0, top // 2, top) if value or top]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": PLOT_LEFT,
        "top": PLOT_TOP,
        "plot_height": height,
        "right": CHART_WIDTH - 4,
        "bottom": PLOT_BOTTOM,
        "label_y": PLOT_BOTTOM + 16,
        "bars": bars,
        "ticks": sorted(set(ticks)),
        "summary": gettext("Messages per hour over the last 24 hours: %(sent)d sent, %(failed)d failed, %(held)d held.")
        % {"sent": activity.sent, "failed": activity.failed, "held": activity.held},
        "activity": activity,
    }


def limit_bars(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each account's use of its daily limit, as ``gmail_queue_status`` reports it, ready to draw."""
    names: dict[str, list[str]] = {}
    for name, username in GmailAccount.objects.values_list("name", "username"):
        names.setdefault(username.strip().lower(), []).append(name)
    warn_at = number_setting("QUOTA_WARN_AT", allow_none=True)
    rows = []
    for account in report["accounts"]:
        standing = account["quota"]
        used, limit = standing["used"], standing["limit"]
        share = min(used / limit, 1.0) if limit else 0.0
        blocked = bool(standing["blocked_until"])
        if blocked or (limit is not None and used >= limit):
            level = "full"
        elif limit and warn_at is not None and share >= float(warn_at):
            level = "high"
        else:
            level = "ok"
        if blocked:
            slot = gettext("blocked until %(when)s") % {"when": when(_parse(standing["blocked_until"]))}
        elif standing["remaining"] is None or standing["remaining"] > 0:
            slot = gettext("now")
        else:
            slot = when(_parse(standing["next_free"]))
        key = account["account"]
        stored = names.get(key, [])
        rows.append(
            {
                "key": key,
                "label": f"{', '.join(stored)} ({key})" if stored else key,
                "used": used,
                "limit": limit,
                "percent": f"{share * 100:.1f}",
                "level": level,
                "next_slot": slot,
                "text": (
                    gettext("%(used)s of %(limit)s messages in the last %(hours)s hours")
                    % {
                        "used": number_format(used, force_grouping=True),
                        "limit": number_format(limit, force_grouping=True),
                        "hours": _hours(standing["window_hours"]),
                    }
                    if limit is not None
                    else gettext("%(used)s messages in the last %(hours)s hours (no limit)")
                    % {
                        "used": number_format(used, force_grouping=True),
                        "hours": _hours(standing["window_hours"]),
                    }
                ),
            }
        )
    return rows


def _hours(value: float) -> str:
    return number_format(value, decimal_pos=0 if float(value).is_integer() else 1)


def _parse(value: str | None) -> Any:
    from django.utils.dateparse import parse_datetime

    return parse_datetime(value) if value else None


# -- the admin ------------------------------------------------------------------------------------


class ValuesFilter(admin.AllValuesFieldListFilter):
    """Django's filter by each value of a field, with a name for the empty value (not a blank link)."""

    def has_output(self) -> bool:
        return len(self.lookup_choices) > 1  # one value alone filters nothing

    def choices(self, changelist: Any) -> Any:
        for choice in super().choices(changelist):
            if choice["display"] == "":
                choice = {**choice, "display": gettext("(none)")}
            yield choice


@admin.register(DeliveryLog)
class DeliveryLogAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("queued_at", "status_badge", "to_short", "subject_short", "account_label", "attempts", "reply")
    list_display_links = ("queued_at",)
    list_filter = (
        "status",
        ("account_name", ValuesFilter),
        ("account", ValuesFilter),
        ("mailer", ValuesFilter),
        ("cause", ValuesFilter),
    )
    search_fields = ("to", "subject", "message_id", "account", "account_name")
    search_help_text = _("Search by recipient, subject, Message-ID or account.")
    date_hierarchy = "created_at"
    exclude = ("payload",)
    actions = ["retry_selected"]
    list_per_page = 50

    class Media:
        css = {"all": ("gmail_smtp/admin/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{RETRY_PERMISSION}")

    # -- the list -----------------------------------------------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"title": gettext("Delivery log"), **(extra_context or {})}
        context["log_help_url"] = readme("the-delivery-log-the-admin-and-the-commands")
        context["queue_help_url"] = readme("background-sending")
        if DeliveryLog.objects.exists():
            context["chart"] = chart(queue_report.activity())
            context["limits"] = limit_bars(queue_report.queue_status())
        return super().changelist_view(request, context)

    @admin.display(description=_("queued at"), ordering="created_at")
    def queued_at(self, obj: DeliveryLog) -> str:
        return when(obj.created_at)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: DeliveryLog) -> SafeString:
        full = str(obj.get_status_display())
        label = badge(obj.status, str(SHORT_STATUS.get(obj.status, full)), full)
        if queued.is_stuck(obj):
            return format_html(
                "{} {}",
                label,
                badge(
                    "stuck",
                    gettext("stuck"),
                    gettext("More than a lease overdue: no worker is running, or its task was lost."),
                ),
            )
        return label

    @admin.display(description=_("to"), ordering="to")
    def to_short(self, obj: DeliveryLog) -> str:
        addresses = obj.to.split()
        if not addresses:
            return ngettext("%(count)d recipient", "%(count)d recipients", obj.recipients) % {"count": obj.recipients}
        if len(addresses) == 1:
            return address(addresses[0])
        more = ngettext("and %(count)d more", "and %(count)d more", len(addresses) - 1) % {"count": len(addresses) - 1}
        return format_html('<span title="{}">{} {}</span>', ", ".join(addresses[:50]), address(addresses[0]), more)

    @admin.display(description=_("subject"), ordering="subject")
    def subject_short(self, obj: DeliveryLog) -> str:
        if len(obj.subject) <= 50:
            return obj.subject
        return format_html('<span title="{}">{}</span>', obj.subject, shorten(obj.subject, 50))

    @admin.display(description=_("account"), ordering="account_name")
    def account_label(self, obj: DeliveryLog) -> str:
        if obj.account_name:
            return format_html('<span title="{}">{}</span>', obj.account, obj.account_name)
        return address(obj.account)

    @admin.display(description=_("last reply"))
    def reply(self, obj: DeliveryLog) -> str:
        short = reply_summary(obj.last_reply)
        if short == obj.last_reply.strip():
            return short
        return format_html('<span title="{}">{}</span>', shorten(obj.last_reply, 300), short)

    # -- one entry ----------------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: DeliveryLog | None = None) -> Any:
        message = ["status_badge", "to_list", "subject", "account_detail", "mailer", "message_id"]
        delivery = ["attempts", "last_reply_detail"]
        if obj is not None and cause_of(obj) is not None:
            delivery.append("cause_detail")
        if obj is not None and obj.status in OPEN_STATUSES:
            delivery.append("next_attempt")
        delivery.append("queued_at")
        if obj is not None and obj.sent_at is not None:
            delivery.append("sent_at_detail")
        delivery.append("updated_at_detail")
        return [
            (None, {"fields": message}),
            (_("Delivery"), {"fields": delivery}),
            (_("Queue"), {"fields": ["task_backend", "queue_name"], "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: DeliveryLog | None = None) -> Any:
        return [field for _name, options in self.get_fieldsets(request, obj) for field in options["fields"]]

    @admin.display(description=_("to"))
    def to_list(self, obj: DeliveryLog) -> str:
        addresses = obj.to.split()
        if not addresses:
            count = ngettext("%(count)d recipient", "%(count)d recipients", obj.recipients) % {"count": obj.recipients}
            return gettext("%(count)s (addresses not recorded: GMAIL_SMTP['LOG_RECIPIENTS'] is off).") % {
                "count": count
            }
        return format_html(
            '<ul class="gmail-smtp-addresses">{}</ul>', format_html_join("", "<li>{}</li>", ((a,) for a in addresses))
        )

    @admin.display(description=_("account"))
    def account_detail(self, obj: DeliveryLog) -> str:
        if obj.account_name:
            return gettext("%(name)s (stored account, signs in as %(address)s)") % {
                "name": obj.account_name,
                "address": obj.account,
            }
        return obj.account

    @admin.display(description=_("last reply"))
    def last_reply_detail(self, obj: DeliveryLog) -> str:
        if not obj.last_reply:
            return "–"
        return format_html('<pre class="gmail-smtp-reply">{}</pre>', obj.last_reply)

    @admin.display(description=_("cause"))
    def cause_detail(self, obj: DeliveryLog) -> str:
        found = cause_of(obj)
        if found is None:
            return "–"
        link = format_html(' <a href="{}" rel="noopener noreferrer">{}</a>', found.url, found.url) if found.url else ""
        return format_html(
            '<div class="gmail-smtp-cause"><p><strong>{}</strong></p><p>{} {}{}</p><p class="quiet">{} <code>{}</code></p></div>',
            found.summary,
            gettext("Fix:"),
            found.fix,
            link,
            gettext("Cause id:"),
            found.id,
        )

    @admin.display(description=_("next attempt"))
    def next_attempt(self, obj: DeliveryLog) -> str:
        return when(obj.due_at)

    @admin.display(description=_("sent at"))
    def sent_at_detail(self, obj: DeliveryLog) -> str:
        return when(obj.sent_at)

    @admin.display(description=_("updated"))
    def updated_at_detail(self, obj: DeliveryLog) -> str:
        return when(obj.updated_at)

    # -- retry ------------------------------------------------------------------------------------

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
