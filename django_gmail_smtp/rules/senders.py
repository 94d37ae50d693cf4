"""From addresses: DEFAULT_FROM_EMAIL and SERVER_EMAIL against the account, and its declared aliases."""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from ..conf import SmtpConfig
from .credentials import is_email
from .naming import origin_of
from .problem import ERROR, WARNING, Check, Problem, quote

REWRITTEN = _(
    "%(setting)s %(value)s is neither the Gmail account %(account)s (from "
    "%(origin)s) nor listed in GMAIL_SMTP['FROM_ALIASES'], so Gmail will rewrite "
    "the From address of %(consequence)s to the account."
)
"""W005 and W006 say the same of their setting."""
ADD_AN_ALIAS = _(
    "Add %(address)s as a verified 'Send mail as' address in Gmail (Settings, "
    "Accounts) and list it in GMAIL_SMTP['FROM_ALIASES'], or set %(setting)s to "
    "the account's address and put other addresses in Reply-To."
)

W005 = Check(
    "gmail_smtp.W005", WARNING, "DEFAULT_FROM_EMAIL is not the account or a declared alias", REWRITTEN, ADD_AN_ALIAS
)
W006 = Check("gmail_smtp.W006", WARNING, "SERVER_EMAIL is not the account or a declared alias", REWRITTEN, ADD_AN_ALIAS)

E013 = Check(
    "gmail_smtp.E013",
    ERROR,
    "GMAIL_SMTP['FROM_ALIASES'] is not a list of e-mail addresses",
    message=_("GMAIL_SMTP['FROM_ALIASES'] contains %(entry)s, which is not an e-mail address."),
    hint=_(
        "Write GMAIL_SMTP['FROM_ALIASES'] = ['alias@example.com', ...], listing only verified 'Send mail as' addresses."
    ),
)
E013_NOT_A_LIST = _("GMAIL_SMTP['FROM_ALIASES'] is a %(type)s, not a list of e-mail addresses.")

CHECKS = (E013, W005, W006)


def _address(value: str) -> str:
    return parseaddr(str(value))[1].strip().lower()


def _is_list(from_aliases: Any) -> bool:
    """True when ``from_aliases`` can be a list of addresses (a string is one address, not a list)."""
    return not isinstance(from_aliases, str) and isinstance(from_aliases, Sequence | set | frozenset)


def _valid_aliases(from_aliases: Any) -> set[str]:
    if not _is_list(from_aliases):
        return set()
    return {_address(alias) for alias in from_aliases if isinstance(alias, str)}


def _check_sender(
    config: SmtpConfig,
    setting: str,
    value: str,
    from_aliases: Any,
    check: Check,
    consequence: Promise,
) -> list[Problem]:
    if not config.is_gmail or not config.username or not is_email(config.username):
        return []  # E005/E006 already say what is wrong with the account
    address = _address(value)
    if address == config.username.strip().lower() or address in _valid_aliases(from_aliases):
        return []
    said = {
        "setting": setting,
        "value": quote(value),
        "account": quote(config.username),
        "origin": origin_of(config, "username"),
        "consequence": consequence,
    }
    return [check.problem(said, {"address": quote(address or value), "setting": setting})]


def check_default_from_email(config: SmtpConfig, default_from_email: str, from_aliases: Any = ()) -> list[Problem]:
    """W005: mail sent without a from_email goes out as the account, not DEFAULT_FROM_EMAIL."""
    return _check_sender(
        config, "DEFAULT_FROM_EMAIL", default_from_email, from_aliases, W005, _("mail sent without a from_email")
    )


def check_server_email(config: SmtpConfig, server_email: str, from_aliases: Any = ()) -> list[Problem]:
    """W006: error mail to ADMINS (and mail to MANAGERS) is sent from SERVER_EMAIL."""
    return _check_sender(
        config, "SERVER_EMAIL", server_email, from_aliases, W006, _("error mail to ADMINS and mail to MANAGERS")
    )


def check_senders(
    config: SmtpConfig,
    *,
    default_from_email: str,
    server_email: str,
    from_aliases: Any = (),
    admin_mail: bool = True,
) -> list[Problem]:
    """W005/W006 for one configuration.

    ``admin_mail``: whether ``ADMINS`` or ``MANAGERS`` is set (``SERVER_EMAIL``
    is used only then). ``from_aliases`` is ``GMAIL_SMTP['FROM_ALIASES']``.
    """
    problems = check_default_from_email(config, default_from_email, from_aliases)
    if admin_mail:
        problems += check_server_email(config, server_email, from_aliases)
    return problems


def check_from_aliases(from_aliases: Any) -> list[Problem]:
    """E013: ``GMAIL_SMTP['FROM_ALIASES']`` is a list of e-mail addresses."""
    if not _is_list(from_aliases):
        return [E013.problem({"type": type(from_aliases).__name__}, message=E013_NOT_A_LIST)]
    return [
        E013.problem({"entry": quote(alias)})
        for alias in from_aliases
        if not isinstance(alias, str) or not is_email(_address(alias))
    ]
