"""Stored accounts: the ids their errors carry, and the shape of the keys that encrypt their secrets.

The words of E020-E025 travel with the errors that the models, the crypto and the account
lookup raise (:func:`~django_gmail_smtp.rules.problem_from_error` turns them into problems);
E019 checks ``GMAIL_SMTP['ENCRYPTION_KEYS']`` with the settings reader's
:func:`~django_gmail_smtp.app_settings.validate_keys`, so the check and the use say the same.
"""

from __future__ import annotations

from typing import Any

from ..app_settings import KEYS_CHECK_ID, validate_keys
from ..exceptions import GmailConfigError
from .problem import ERROR, Check, Problem, problem_from_error

E019 = Check(KEYS_CHECK_ID, ERROR, "GMAIL_SMTP['ENCRYPTION_KEYS'] is not a list of valid Fernet keys")
E020 = Check(
    "gmail_smtp.E020",
    ERROR,
    "a stored account's secret was entered for another host, port, security, username or token endpoint",
)
E021 = Check(
    "gmail_smtp.E021",
    ERROR,
    "a stored account's secret is bound to no destination (saved before the binding, not upgraded)",
)
E022 = Check("gmail_smtp.E022", ERROR, "the configuration names a stored account that does not exist")
E023 = Check("gmail_smtp.E023", ERROR, "the stored account is disabled")
E024 = Check("gmail_smtp.E024", ERROR, "the stored app-password account has no app password")
E025 = Check(
    "gmail_smtp.E025",
    ERROR,
    "a stored account's secret cannot be decrypted with the current keys, or there is no key at all",
)

CHECKS = (E019, E020, E021, E022, E023, E024, E025)


def check_encryption_keys(keys: Any) -> list[Problem]:
    """E019: every entry of ``GMAIL_SMTP['ENCRYPTION_KEYS']`` is a Fernet key (its shape only: nothing is decrypted)."""
    if keys is None:
        return []
    try:
        validate_keys(keys)
    except GmailConfigError as exc:
        return [problem_from_error(exc)]
    return []
