"""A finding and its words: :class:`Problem`, and :class:`Check`, an id with its sentences.

Every rule module declares its checks as :class:`Check` constants -- the id, the level, what it
means and its sentences as translatable templates -- and a rule only fills in the values, so a
message is written once, next to its id. The values go in lazily: the text is translated into
the language active when it is shown (the admin's request, ``manage.py check``), not now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from django.utils.functional import Promise, lazy
from django.utils.translation import gettext_lazy as _

from ..conf import SmtpConfig
from ..exceptions import GmailConfigError

ERROR, WARNING = "error", "warning"

Text = str | Promise
"""A sentence: plain, or translated when shown."""


@dataclass(frozen=True)
class Problem:
    """One finding: a stable id (``gmail_smtp.E003``), one sentence, and the fix.

    ``option`` names the option it is about when the id alone does not (E010: port or timeout).
    """

    id: str
    level: str
    message: str | Promise
    hint: str | Promise
    option: str = ""

    @property
    def is_error(self) -> bool:
        return self.level == ERROR


Rule = Callable[[SmtpConfig], list[Problem]]


def _interpolate(template: str, values: Mapping[str, Any]) -> str:
    return str(template) % {key: str(value) for key, value in values.items()}


_format = cast(Callable[..., Promise], lazy(_interpolate, str))


def text(template: Text, **values: Any) -> Promise:
    """A translatable sentence with ``%(name)s`` placeholders, filled in lazily."""
    return _format(template, values)


def quote(value: Any) -> str:
    """A value as a message shows it: ``'smtp.gmail.com'``."""
    return repr(str(value))


def _filled(template: Text, values: Mapping[str, Any] | None) -> Text:
    return text(template, **values) if values else template


@dataclass(frozen=True)
class Check:
    """One check id: its level, what it means (:data:`~django_gmail_smtp.rules.CHECK_IDS`), its words.

    ``message`` and ``hint`` are translatable templates with ``%(name)s`` placeholders. Variants
    replace them where the reader needs other words: ``form_hint`` for a value typed in the admin's
    account form (its fields, not settings), ``url_message`` and ``url_hint`` for a value from
    ``EMAIL_URL``. A check whose words travel with the error that carries its id (raised while
    resolving a configuration, or by a stored account) has none here.
    """

    id: str
    level: str
    what: str
    message: Text = ""
    hint: Text = ""
    form_hint: Text = ""
    url_message: Text = ""
    url_hint: Text = ""
    option: str = ""

    def problem(
        self,
        said: Mapping[str, Any] | None = None,
        fix: Mapping[str, Any] | None = None,
        *,
        form: bool = False,
        url: bool = False,
        message: Text | None = None,
        hint: Text | None = None,
    ) -> Problem:
        """This check's finding: its message filled in with ``said``, its hint with ``fix``.

        ``form`` and ``url`` pick the variants; ``message`` and ``hint`` give another of this id's
        sentences (a constant declared next to the check).
        """
        if message is None:
            message = self.url_message if url and self.url_message else self.message
        if hint is None:
            hint = self.url_hint if url and self.url_hint else self.form_hint if form and self.form_hint else self.hint
        return Problem(self.id, self.level, _filled(message, said), _filled(hint, fix), self.option)


def to_error(problem: Problem, alias: str | None = None) -> GmailConfigError:
    """The :class:`GmailConfigError` that says ``problem``: its words, its id (one wording, one id)."""
    return GmailConfigError(str(problem.message), hint=str(problem.hint), check_id=problem.id, alias=alias)


def problem_from_error(exc: GmailConfigError, config_name: str = "") -> Problem:
    """A :class:`GmailConfigError` that resolving a configuration raised, as a Problem.

    ``conf.resolve()`` raises E001, E009, E010 and E017, a stored account E019-E025 (and
    the OAuth2 rules' E015/E016 when a backend starts). ``config_name``
    (``MAILERS['default']``) is put in front of the message so that, with several
    mailers, it says which one. An error without a check id is a bug of the caller:
    every error a configuration can resolve to has one.
    """
    if not exc.check_id:
        raise ValueError(f"{type(exc).__name__} has no check id: {exc}")
    message: str | Promise = exc.message
    if config_name:
        message = text(_("%(mailer)s: %(message)s"), mailer=config_name, message=exc.message)
    return Problem(exc.check_id, ERROR, message, exc.hint)
