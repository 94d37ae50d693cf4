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

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_variables

from .app_settings import configured_keys, generate_hint, validate_keys  # the keys: also importable from here
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
            hint=gettext("Set SECRET_KEY, or GMAIL_SMTP['ENCRYPTION_KEYS'].") + " " + generate_hint(),
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
