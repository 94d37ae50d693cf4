"""The catalogue's entries: a cause (what happened, the fix, and its words), and a reply that means one."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

APP_PASSWORDS_URL = "https://myaccount.google.com/apppasswords"
OAUTH_CONSENT_URL = "https://console.cloud.google.com/apis/credentials/consent"
OAUTH_CREDENTIALS_URL = "https://console.cloud.google.com/apis/credentials"

CHOOSE_STARTTLS = _("Choose STARTTLS (port 587) or implicit TLS (port 465) in the “Security” field.")
"""The admin form's fix for every cause whose fix is "the other TLS mode"."""


@dataclass(frozen=True)
class Cause:
    """One known failure: a stable id, what it means, and the fix.

    ``form_fix`` is the fix worded for the admin's account form (its fields rather than settings),
    where ``fix`` names settings; :meth:`fix_for` picks one.
    """

    id: str
    summary: str | Promise
    fix: str | Promise
    temporary: bool = False
    url: str = ""
    form_fix: str | Promise = ""

    def fix_for(self, *, form: bool) -> str | Promise:
        """The fix for someone editing settings, or (``form=True``) the admin's account form."""
        return self.form_fix or self.fix if form else self.fix

    def explain(self) -> str:
        text = _("Cause: %(summary)s Fix: %(fix)s") % {"summary": self.summary, "fix": self.fix}
        return f"{text} {self.url}".rstrip() + f" [{self.id}]"

    def lines(self) -> list[str]:
        """The cause as the commands print it, one fact a line: cause, fix, link, whether it is
        temporary, and its id."""
        lines = [_("Cause: %(summary)s") % {"summary": self.summary}, _("Fix: %(fix)s") % {"fix": self.fix}]
        if self.url:
            lines.append(_("More: %(url)s") % {"url": self.url})
        if self.temporary:
            lines.append(str(_("This is usually temporary: retrying later may work.")))
        lines.append(_("Cause id: %(id)s") % {"id": self.id})
        return lines


@dataclass(frozen=True)
class Reply:
    """Replies that mean the cause ``cause``: a reply code among ``codes`` (any code when empty)
    and, when ``statuses`` or ``words`` are given, one of those enhanced status codes
    (``5.7.14``) or one of those words in the reply's text (lower case). SMTP replies, and the
    words of a mailbox's refused sign-in (no code, no status)."""

    cause: str
    codes: Collection[int] = ()
    statuses: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    def matches(self, code: int, status: str, text: str) -> bool:
        """Whether the reply ``code`` with the enhanced ``status`` and the lower-case ``text`` is one of these."""
        if self.codes and code not in self.codes:
            return False
        if not self.statuses and not self.words:
            return True
        return status in self.statuses or any(word in text for word in self.words)
