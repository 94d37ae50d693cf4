"""Small pieces the app's admin pages share: one date format, status badges, shortened text, README links.

Badges carry their meaning in words (colour only repeats it) and their colours keep a contrast of
at least 4.5:1 (``static/gmail_smtp/admin/admin.css``).
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

__all__ = ["README_URL", "address", "badge", "readme", "reply_summary", "shorten", "when"]

README_URL = "https://github.com/django-gmail-smtp/django-gmail-smtp/blob/main/README.md"


def readme(section: str) -> str:
    """The address of a README section (``"background-sending"``), for links on admin pages."""
    return f"{README_URL}#{section}"


def when(value: datetime | None, empty: str = "–") -> str | SafeString:
    """A moment as every page of the app shows it: local time, the locale's short date and time.

    Inside a ``<time>`` element that carries the exact ISO time for machines (and as a tooltip).
    """
    if value is None:
        return empty
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    exact = local.isoformat(timespec="seconds")
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', exact, exact, date_format(local, "SHORT_DATETIME_FORMAT")
    )


def badge(kind: str, label: str, title: str = "") -> SafeString:
    """A coloured label: ``kind`` picks the colours (``sent``, ``failed``, ``held``, ``ok``...)."""
    if title:
        return format_html('<span class="gmail-smtp-badge badge-{}" title="{}">{}</span>', kind, title, label)
    return format_html('<span class="gmail-smtp-badge badge-{}">{}</span>', kind, label)


def address(value: str) -> SafeString:
    """An e-mail address that may wrap after its ``@`` (never in the middle of a name)."""
    local, at, domain = value.rpartition("@")
    if not at:
        return format_html("{}", value)
    return format_html("{}@<wbr>{}", local, domain)


def reply_summary(text: str, limit: int = 30) -> str:
    """A server reply in a few words: ``250 2.0.0 OK`` without Gmail's timestamp and session id."""
    words = []
    for word in (text.strip().splitlines() or [""])[0].split():
        if len(word) >= 8 and any(c.isdigit() for c in word) and "@" not in word:
            break  # an id or a timestamp: it tells an operator nothing
        words.append(word)
    return shorten(" ".join(words), limit)


def shorten(text: str, limit: int) -> str:
    """The first line of ``text``, cut to ``limit`` characters with an ellipsis."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
