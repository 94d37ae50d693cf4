"""Encryption of stored account secrets with Fernet (``cryptography``).

Keys, the current one first (new secrets are encrypted under it; every key decrypts):

1. ``GMAIL_SMTP["ENCRYPTION_KEYS"]`` when set: a list of Fernet keys (``generate_key()``);
2. keys derived with HKDF-SHA256 from ``SECRET_KEY``, then from each ``SECRET_KEY_FALLBACKS``
   entry, in that order.

The ``SECRET_KEY``-derived keys are always tried for decryption, after the dedicated ones: a
project that starts using ``ENCRYPTION_KEYS`` (or rotates ``SECRET_KEY`` while keeping the old
one in ``SECRET_KEY_FALLBACKS``) can still read what it stored before, and
``manage.py gmail_rotate_keys`` re-encrypts everything under the current key.

Settings are read at call time, so ``override_settings`` works.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_variables

from .conf import app_setting
from .exceptions import GmailConfigError

__all__ = [
    "InvalidToken",
    "configured_keys",
    "current_key_id",
    "decrypt",
    "derive_key",
    "encrypt",
    "encryption_keys",
    "generate_key",
    "is_current",
    "rotate",
    "validate_keys",
]

HKDF_SALT = b"django-gmail-smtp"
HKDF_INFO = b"django_gmail_smtp.GmailAccount secret, Fernet key, v1"
GENERATE_COMMAND = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
KEYS_CHECK_ID = "gmail_smtp.E019"


def generate_key() -> str:
    """A new random Fernet key, as text to put in ``GMAIL_SMTP["ENCRYPTION_KEYS"]``."""
    return Fernet.generate_key().decode("ascii")


@sensitive_variables()
@functools.lru_cache(maxsize=16)
def derive_key(secret: str | bytes) -> bytes:
    """The Fernet key derived from a Django ``SECRET_KEY`` (HKDF-SHA256, fixed salt and info)."""
    material = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO)
    return base64.urlsafe_b64encode(kdf.derive(material))


def _generate_hint() -> str:
    return gettext("Generate a key with: %(command)s") % {"command": GENERATE_COMMAND}


@sensitive_variables()
def validate_keys(raw: Any) -> list[bytes]:
    """The keys of a ``GMAIL_SMTP["ENCRYPTION_KEYS"]`` value, checked to be Fernet keys.

    Only their shape is checked (URL-safe base64 of 32 bytes): nothing is decrypted. Raises
    :class:`GmailConfigError` (``gmail_smtp.E019``) naming the position of a bad key, never
    the key itself.
    """
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise GmailConfigError(
            gettext(
                "GMAIL_SMTP['ENCRYPTION_KEYS'] must be a list of Fernet keys, the current one first, not a %(type)s."
            )
            % {"type": type(raw).__name__},
            hint=gettext(
                "Write GMAIL_SMTP['ENCRYPTION_KEYS'] = [os.environ['GMAIL_SMTP_KEY']], or remove it to "
                "derive the key from SECRET_KEY."
            )
            + " "
            + _generate_hint(),
            check_id=KEYS_CHECK_ID,
        )
    if not raw:
        raise GmailConfigError(
            gettext("GMAIL_SMTP['ENCRYPTION_KEYS'] is an empty list."),
            hint=gettext("Put at least one Fernet key in it, or remove it to derive the key from SECRET_KEY.")
            + " "
            + _generate_hint(),
            check_id=KEYS_CHECK_ID,
        )
    keys = []
    for position, key in enumerate(raw):
        candidate = key.encode("ascii", "replace") if isinstance(key, str) else key
        try:
            Fernet(candidate)
        except (TypeError, ValueError):
            raise GmailConfigError(
                gettext(
                    "GMAIL_SMTP['ENCRYPTION_KEYS'][%(position)d] is not a valid Fernet key (32 bytes in "
                    "URL-safe base64: 44 characters ending with '=')."
                )
                % {"position": position},
                hint=gettext("Replace it with a key made for this purpose.") + " " + _generate_hint(),
                check_id=KEYS_CHECK_ID,
            ) from None
        keys.append(candidate)
    return keys


@sensitive_variables()
def configured_keys() -> list[bytes]:
    """The keys of ``GMAIL_SMTP["ENCRYPTION_KEYS"]`` (empty when it is not set), validated.

    Error messages name the position of a bad key, never the key itself.
    """
    raw = app_setting("ENCRYPTION_KEYS")
    return [] if raw is None else validate_keys(raw)


@sensitive_variables()
def _derived_keys() -> list[bytes]:
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]
    return [derive_key(secret) for secret in secrets if secret]


def encryption_keys() -> list[bytes]:
    """Every key that decrypts, the current one (which encrypts) first; no duplicates."""
    keys: list[bytes] = []
    for key in (*configured_keys(), *_derived_keys()):
        if key not in keys:
            keys.append(key)
    if not keys:
        raise GmailConfigError(
            gettext(
                "There is no key to encrypt stored Gmail account secrets with: SECRET_KEY is empty "
                "and GMAIL_SMTP['ENCRYPTION_KEYS'] is not set."
            ),
            hint=gettext("Set SECRET_KEY, or GMAIL_SMTP['ENCRYPTION_KEYS'].") + " " + _generate_hint(),
            check_id="gmail_smtp.E025",
        )
    return keys


@functools.lru_cache(maxsize=8)
def _multi_fernet(keys: tuple[bytes, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _fernet() -> MultiFernet:
    return _multi_fernet(tuple(encryption_keys()))


@sensitive_variables()
def encrypt(plaintext: str) -> str:
    """``plaintext`` encrypted and authenticated under the current key, as an ASCII token."""
    return _fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


@sensitive_variables()
def decrypt(token: str) -> str:
    """The plaintext of ``token``; :class:`InvalidToken` when no configured key opens it."""
    return _fernet().decrypt(token.encode("ascii")).decode("utf-8")


def rotate(token: str) -> str:
    """``token`` re-encrypted under the current key; :class:`InvalidToken` if no key opens it."""
    return _fernet().rotate(token.encode("ascii")).decode("ascii")


def is_current(token: str) -> bool:
    """True when ``token`` is encrypted under the current key."""
    try:
        Fernet(encryption_keys()[0]).decrypt(token.encode("ascii"))
    except InvalidToken:
        return False
    return True


def current_key_id() -> str:
    """A short, non-secret fingerprint of the current key (for messages: "key 3f2a9c1b")."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"django-gmail-smtp key id\0" + encryption_keys()[0])
    return digest.finalize().hex()[:8]
