"""Keeping secrets out of texts and tracebacks: one redactor for the session, diagnose and OAuth2.

:class:`Redactor` removes secrets (an app password, an OAuth2 client secret, a refresh or access
token) from any text that may carry them back to us: server replies that echo what we sent, the
transcript and its log, exception messages, ``gmail_check`` output. It knows the forms a secret
travels in:

* the secret itself, and percent-encoded (a token endpoint that echoes its form body);
* base64, as ``AUTH LOGIN`` sends a password;
* inside any base64 blob: every base64-looking word of the text is decoded and hidden when the
  decoded bytes hold a secret. That covers ``AUTH PLAIN`` (``\\0user\\0password``), the XOAUTH2
  initial response (``user=...\\x01auth=Bearer <token>\\x01\\x01``) and any other framing,
  whatever the alignment of the secret inside the blob.

:func:`detach` strips an exception of its traceback and of the exceptions it was raised from,
so that frames whose local variables hold a secret (ours, smtplib's, google-auth's) are not
carried along into error reports (Django's, Sentry's) that show frame locals.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Protocol, TypeVar
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "Redactor", "detach"]

REDACTED = "<redacted>"
MIN_SECRET_LENGTH = 4
"""Shorter values are not treated as secrets: hiding every ``abc`` in a text would hide nothing useful."""

_BASE64_ALPHABET = "[A-Za-z0-9+/_-]"  # standard and URL-safe


def _base64_words(shortest: int) -> re.Pattern[str]:
    """Words that may be base64 holding a secret of ``shortest`` bytes (which takes 4/3 as many characters)."""
    return re.compile(f"{_BASE64_ALPHABET}{{{max(6, shortest * 4 // 3)},}}={{0,2}}")


E = TypeVar("E", bound=BaseException)


class HasSecrets(Protocol):
    """What :meth:`Redactor.for_config` reads: a configuration's secrets (an ``SmtpConfig``)."""

    @property
    def password(self) -> str: ...

    @property
    def oauth_client_secret(self) -> str: ...

    @property
    def oauth_refresh_token(self) -> str: ...


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _decoded(word: str) -> bytes | None:
    """The bytes a base64 word stands for (either alphabet, padding optional); None if it is not base64."""
    body = word.rstrip("=")
    if len(body) % 4 == 1:
        body = body[:-1]  # a stray character glued to the blob: decode the rest
    try:
        if "-" in body or "_" in body:
            return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return base64.b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None


class Redactor:
    """Replaces every known secret, in every form it travels in, with ``<redacted>``.

    ``Redactor(secret, ...)``; :meth:`for_config` takes the secrets of a configuration;
    :meth:`add` learns one more (an access token fetched during sign-in). Calling it on a
    ``str`` returns the redacted ``str``; :meth:`redact_bytes` does the same for bytes.
    ``substitute`` replaces ``<redacted>`` (Django's reporter filter uses its stars). Its
    ``repr`` never shows a secret.
    """

    def __init__(self, *secrets: str, substitute: str = REDACTED) -> None:
        self.substitute = substitute
        self._secrets: set[str] = set()
        self._needles: list[bytes] = []
        self._forms: list[str] = []
        self._words = _base64_words(MIN_SECRET_LENGTH)
        for secret in secrets:
            self.add(secret)

    @classmethod
    def for_config(cls, config: HasSecrets | None) -> Redactor:
        """The password, OAuth2 client secret and refresh token of ``config`` (none for None)."""
        if config is None:
            return cls()
        return cls(config.password, config.oauth_client_secret, config.oauth_refresh_token)

    def add(self, *secrets: str | None) -> None:
        """Hide these too (values shorter than :data:`MIN_SECRET_LENGTH` are ignored)."""
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_LENGTH or secret in self._secrets:
                continue
            self._secrets.add(secret)
            self._needles.append(secret.encode("utf-8", "surrogatepass"))
            forms = set(self._forms) | {secret, _b64(secret), quote(secret, safe=""), quote_plus(secret)}
            self._forms = sorted(forms, key=len, reverse=True)  # longest first: no half-replaced form
            # Shorter words cannot hold any secret: skip decoding them (replies are read on the hot path).
            self._words = _base64_words(min(len(needle) for needle in self._needles))

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._secrets)} secret(s)>"

    def __call__(self, text: str) -> str:
        if not self._secrets or not text:
            return text
        for form in self._forms:
            if form in text:
                text = text.replace(form, self.substitute)
        return self._words.sub(self._hide_blob, text)

    def _hide_blob(self, match: re.Match[str]) -> str:
        word = match.group(0)
        # Each of the four alignments: the blob may be glued to other base64-alphabet characters
        # ("AUTH+PLAIN+AHVz..." when a server echoes a form-encoded line).
        for start in range(4):
            decoded = _decoded(word[start:])
            if decoded is not None and any(needle in decoded for needle in self._needles):
                return self.substitute
        return word

    def redact_bytes(self, data: bytes) -> bytes:
        """``data`` redacted; bytes that are not UTF-8 pass through unchanged."""
        if not self._secrets or not data:
            return data
        text = data.decode("utf-8", "surrogateescape")
        redacted = self(text)
        return data if redacted == text else redacted.encode("utf-8", "surrogateescape")


def detach(exc: E) -> E:
    """``exc`` without its traceback, cause and context: raise it outside any ``except`` block.

    Python sets ``__context__`` again when an exception is raised while another is handled, so
    callers keep the failure in a variable and raise it after the ``except`` clause ends.
    """
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = False
    return exc.with_traceback(None)
