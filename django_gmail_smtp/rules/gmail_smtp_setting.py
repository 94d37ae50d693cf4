"""Rules over the ``GMAIL_SMTP`` setting itself: a dict, of known keys, each of a usable value."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext_lazy as _

from ..app_settings import APP_SETTINGS, NOT_A_DICT, NOT_A_DICT_HINT
from .oauth2 import check_oauth_endpoints
from .problem import ERROR, Check, Problem, quote
from .senders import check_from_aliases
from .stored_accounts import check_encryption_keys

E011 = Check(
    "gmail_smtp.E011",
    ERROR,
    "an unknown key in GMAIL_SMTP",
    message=_("GMAIL_SMTP has an unknown key %(key)s."),
    hint=_("Remove it; the known keys are %(known)s."),
)
E011_DID_YOU_MEAN = _("GMAIL_SMTP has an unknown key %(key)s; did you mean %(match)s?")
E011_RENAME = _("Rename %(key)s to %(match)s.")

E012 = Check("gmail_smtp.E012", ERROR, "GMAIL_SMTP is not a dict", message=NOT_A_DICT, hint=NOT_A_DICT_HINT)

CHECKS = (E011, E012)


def _unknown_key(key: Any) -> Problem:
    """E011, with the known key it looks like a misspelling of, if there is one."""
    matches = difflib.get_close_matches(str(key).upper(), APP_SETTINGS, n=1)
    if matches:
        names = {"key": quote(key), "match": quote(matches[0])}
        return E011.problem(names, names, message=E011_DID_YOU_MEAN, hint=E011_RENAME)
    return E011.problem({"key": quote(key)}, {"known": ", ".join(sorted(APP_SETTINGS))})


def check_app_settings(gmail_smtp: Any) -> list[Problem]:
    """E011/E012/E013/E018/E019: the ``GMAIL_SMTP`` setting itself (``None`` when it is not set)."""
    if gmail_smtp is None:
        return []
    if not isinstance(gmail_smtp, Mapping):
        return [E012.problem({"type": type(gmail_smtp).__name__})]
    problems = [_unknown_key(key) for key in gmail_smtp if key not in APP_SETTINGS]
    problems += check_from_aliases(gmail_smtp.get("FROM_ALIASES", ()))
    problems += check_oauth_endpoints(gmail_smtp)
    problems += check_encryption_keys(gmail_smtp.get("ENCRYPTION_KEYS"))
    return problems
