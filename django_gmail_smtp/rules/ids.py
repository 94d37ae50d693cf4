"""Every check id this app reports, with what it means.

Each rule module declares its ids as :class:`~.problem.Check` constants (listed in its
``CHECKS``); this table gathers them, so an id is declared once, next to its words. Never reuse
an id: retire it with a comment here ("gmail_smtp.W011: reserved, was ...") instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import connection, credentials, deploy, gmail_smtp_setting, oauth2, senders, stored_accounts
from .problem import Check

MODULES = (connection, credentials, oauth2, senders, gmail_smtp_setting, stored_accounts, deploy)
"""The rule modules, each with its ``CHECKS``."""

ALL_CHECKS: tuple[Check, ...] = tuple(
    sorted((check for module in MODULES for check in module.CHECKS), key=lambda c: c.id)
)

CHECK_IDS: Mapping[str, str] = {check.id: check.what for check in ALL_CHECKS}
