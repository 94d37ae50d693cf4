"""How a session signs in: the password mechanisms and XOAUTH2, plugged into the session.

A sign-in (:class:`SignIn`) is a callable run by :meth:`SMTPSession.login
<django_gmail_smtp.session.SMTPSession.login>` on a connected client, after EHLO and over TLS:

* **password** (:data:`PASSWORD`, :func:`sign_in_with_password`): ``CRAM-MD5``, ``PLAIN`` or
  ``LOGIN``, in smtplib's order of preference, among the mechanisms the server offers.
  smtplib's ``login()`` keeps the password on the client object and in the local variables of its
  frames, where error reports read it: these functions speak the same SASL exchanges under
  Django's ``sensitive_variables``, and the session raises their failures without frames.
* **XOAUTH2** (:class:`XOAuth2`): Google's mechanism with an access token from a token source
  (:mod:`.oauth`: cached, refreshed). The initial response goes on the ``AUTH XOAUTH2`` line only
  when that line stays within 512 octets (Gmail rejects longer command lines with ``555 5.5.2``);
  otherwise it follows the ``334`` continuation. A rejected token gets a ``334`` challenge holding
  base64 JSON, answered with an empty line; the final ``535`` follows. A cached token Gmail
  rejects is refreshed once and the sign-in retried on the same connection.

:func:`sign_in_for` picks the one a configuration needs; whoever builds a session may pass
another (a test, a fake token source).
"""

from __future__ import annotations

import base64
import hmac
import json
import smtplib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from .causes import CATALOGUE, Cause, explain_reply
from .conf import SmtpConfig
from .deadline import Deadline
from .exceptions import with_cause
from .redaction import Redactor
from .transcript import INFO
from .xoauth2 import MAX_INLINE_AUTH, parse_challenge, xoauth2_response

__all__ = [
    "AUTH_MECHANISMS",
    "PASSWORD",
    "SignIn",
    "TokenSource",
    "XOAuth2",
    "sign_in_for",
    "sign_in_with_password",
    "xoauth2_sign_in",
]


class SignIn(Protocol):
    """Signs in on ``client`` (connected, after EHLO) as ``config`` says; returns the final reply.

    ``deadline`` is what is left of the session's step: work of the mechanism's own (a token
    request) must end by it. Raises the failure (an ``SMTPException``, an ``OSError``, a
    ``GmailConfigError``); the session explains it and drops its frames.
    """

    def __call__(self, client: smtplib.SMTP, config: SmtpConfig, deadline: Deadline) -> tuple[int, bytes]: ...


# -- passwords ---------------------------------------------------------------------------------

AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")
"""Mechanisms tried, in smtplib's order of preference, among those the server offers."""

_MAX_CHALLENGES = 5  # smtplib's limit of 334 continuations in one exchange


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@sensitive_variables()
def _sasl(
    client: smtplib.SMTP, mechanism: str, initial: str | None, answer: Callable[[bytes], str]
) -> tuple[int, bytes]:
    """``AUTH mechanism [initial]``, then ``answer(challenge)`` to each ``334``; the final reply."""
    code, text = client.docmd("AUTH", f"{mechanism} {initial}" if initial is not None else mechanism)
    challenges = 0
    while code == 334:
        challenges += 1
        if challenges > _MAX_CHALLENGES:
            raise smtplib.SMTPException(f"The server kept asking for more during AUTH {mechanism}; last reply {code}.")
        code, text = client.docmd(answer(text))
    return code, text


@sensitive_variables()
def _cram_md5(username: str, password: str, challenge: bytes) -> str:
    digest = hmac.HMAC(password.encode("utf-8"), base64.decodebytes(challenge), "md5").hexdigest()
    return _b64(f"{username} {digest}")


@sensitive_variables()
def _authenticate(client: smtplib.SMTP, mechanism: str, username: str, password: str) -> tuple[int, bytes]:
    """One SASL exchange with an initial response where smtplib sends one (PLAIN, LOGIN)."""
    if mechanism == "PLAIN":
        blob = _b64(f"\0{username}\0{password}")
        return _sasl(client, mechanism, blob, lambda _challenge: blob)
    if mechanism == "LOGIN":
        encoded = _b64(password)
        return _sasl(client, mechanism, _b64(username), lambda _challenge: encoded)
    return _sasl(client, mechanism, None, lambda challenge: _cram_md5(username, password, challenge))


@sensitive_variables()
def sign_in_with_password(client: smtplib.SMTP, username: str, password: str) -> tuple[int, bytes]:
    """What ``client.login(username, password)`` does (same mechanisms, order and errors),
    without leaving the password on the client or in frames outside this module.

    Returns the ``235`` (or ``503`` "already signed in") reply; raises
    ``SMTPNotSupportedError`` (no AUTH), ``SMTPException`` (no common mechanism) or the last
    mechanism's ``SMTPAuthenticationError``. Credentials are sent as UTF-8 (RFC 4616).
    """
    client.ehlo_or_helo_if_needed()
    if not client.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = client.esmtp_features["auth"].upper().split()
    mechanisms = [m for m in AUTH_MECHANISMS if m in offered]
    if not mechanisms:
        raise smtplib.SMTPException("No suitable authentication method found.")
    refused: smtplib.SMTPAuthenticationError | None = None
    for mechanism in mechanisms:
        code, text = _authenticate(client, mechanism, username, password)
        if code in (235, 503):
            return code, text
        refused = smtplib.SMTPAuthenticationError(code, text)
    assert refused is not None
    raise refused


@sensitive_variables()
def _password(client: smtplib.SMTP, config: SmtpConfig, deadline: Deadline) -> tuple[int, bytes]:
    return sign_in_with_password(client, config.username, config.password)


PASSWORD: SignIn = _password
"""Sign in with the configuration's username and password (an app password for Gmail)."""


# -- XOAUTH2 -----------------------------------------------------------------------------------


class Token(Protocol):
    """An access token as a token source hands it out (:class:`~django_gmail_smtp.oauth.AccessToken`)."""

    @property
    def token(self) -> str: ...

    @property
    def cached(self) -> bool: ...

    @property
    def has_mail_scope(self) -> bool | None: ...


class TokenSource(Protocol):
    """Where XOAUTH2 gets access tokens (the :mod:`.oauth` module: Django's cache, then the endpoint)."""

    def access_token(self, config: SmtpConfig, *, force: bool = False) -> Token: ...

    def forget_token(self, config: SmtpConfig) -> None: ...


def _note(client: smtplib.SMTP, text: str) -> None:
    """A line in the session's transcript, when the client keeps one."""
    transcript = getattr(client, "transcript", None)
    if transcript is not None:
        transcript.add(INFO, text)


def _hide(client: smtplib.SMTP, token: Token) -> None:
    """Tell the session's redactor (when the client has one) to hide this access token in replies."""
    redactor = getattr(client, "redactor", None)
    if isinstance(redactor, Redactor):
        redactor.add(token.token)


@sensitive_variables()
def _exchange(client: smtplib.SMTP, username: str, token: str) -> tuple[int, bytes, dict[str, Any] | None]:
    """One XOAUTH2 exchange: (final code, final text, the error challenge's JSON if there was one)."""
    initial = xoauth2_response(username, token)
    if len(f"AUTH XOAUTH2 {initial}\r\n") <= MAX_INLINE_AUTH:
        code, text = client.docmd("AUTH", f"XOAUTH2 {initial}")
    else:
        code, text = client.docmd("AUTH", "XOAUTH2")
        if code == 334 and not text.strip():  # the empty continuation: the response goes now
            code, text = client.docmd(initial)
    challenge = None
    if code == 334:
        # Gmail's error challenge (base64 JSON). The client answers with an empty line and
        # gets the final reply (535 5.7.8).
        challenge = parse_challenge(text) or {}
        code, text = client.docmd("")
    return code, text, challenge


def _rejection(code: int, text: bytes, token: Token) -> Cause | None:
    if code != 535:
        return explain_reply(code, text)
    if token.has_mail_scope is False:
        return CATALOGUE["oauth_wrong_scope"]
    return CATALOGUE["oauth_token_rejected"]


@sensitive_variables()
def xoauth2_sign_in(client: smtplib.SMTP, config: SmtpConfig, tokens: TokenSource) -> tuple[int, bytes]:
    """Sign in with XOAUTH2 on a connected client (after EHLO, over TLS); returns the 235 reply.

    A cached access token that Gmail rejects is refreshed once and the sign-in retried.
    Raises ``SMTPAuthenticationError`` (with a cause: wrong scope, wrong account...),
    :class:`~django_gmail_smtp.exceptions.OAuthError` (token endpoint), ``SMTPNotSupportedError``
    (no XOAUTH2 offered) or :class:`GmailConfigError`; ``smtplib``/``OSError`` failures of the
    connection pass through.
    """
    mechanisms = client.esmtp_features.get("auth", "").upper().split()
    if "XOAUTH2" not in mechanisms:
        not_offered = smtplib.SMTPNotSupportedError(
            _("The server does not offer XOAUTH2 sign-in (AUTH %(mechanisms)s).")
            % {"mechanisms": " ".join(mechanisms) or "-"}
        )
        raise with_cause(not_offered, CATALOGUE["xoauth2_not_offered"], "auth")
    token = tokens.access_token(config)
    _hide(client, token)
    _note(client, _("Access token from the cache.") if token.cached else _("Access token refreshed."))
    code, text, challenge = _exchange(client, config.username, token.token)
    if code in (235, 503) and challenge is None:
        return code, text
    if code == 535 and token.cached:
        _note(client, _("Gmail rejected the cached access token: refreshing it and signing in again."))
        tokens.forget_token(config)
        token = tokens.access_token(config, force=True)
        _hide(client, token)
        code, text, challenge = _exchange(client, config.username, token.token)
        if code in (235, 503) and challenge is None:
            return code, text
    if challenge:
        _note(client, _("XOAUTH2 error challenge: %(json)s") % {"json": json.dumps(challenge, sort_keys=True)})
    refused = smtplib.SMTPAuthenticationError(code, text)
    raise with_cause(refused, _rejection(code, text, token), "auth")


@dataclass(frozen=True)
class XOAuth2:
    """Sign in with XOAUTH2, the access token from ``tokens``; a token request ends by the step's deadline."""

    tokens: TokenSource

    @sensitive_variables()
    def __call__(self, client: smtplib.SMTP, config: SmtpConfig, deadline: Deadline) -> tuple[int, bytes]:
        return xoauth2_sign_in(client, replace(config, timeout=deadline.left()), self.tokens)


def sign_in_for(config: SmtpConfig) -> SignIn:
    """The sign-in ``config`` asks for: XOAUTH2 with :mod:`.oauth`'s tokens, else the password."""
    if config.uses_oauth2:
        from . import oauth  # imported when needed: most sites sign in with a password

        return XOAuth2(oauth)
    return PASSWORD
