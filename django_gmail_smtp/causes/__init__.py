"""The catalogue of Gmail failure causes: what happened and what to change.

Written once and used by the backend (exception messages), ``gmail_check`` and
the admin. Diagnosis goes by reply code, enhanced status code and the ``?p=``
slug of Google's help link, never by the session id at the end of the reply
(:func:`explain_reply`; what an exception means is
:func:`~django_gmail_smtp.exceptions.explain_exception`, next to the exception classes).
A leaf: it imports nothing of this package outside it.

The catalogue is data, in tables by topic: ``smtp`` (signing in, Gmail's replies, and which
reply means which cause), ``network`` (DNS, TCP, TLS, misbehaving servers), ``oauth2``,
``configuration`` and ``mailbox`` (IMAP, POP3, the round trip); ``cause`` holds the shape of an
entry and its words, ``lookup`` the catalogue gathered and the lookups. A new cause is one entry
in one table (and a :class:`~.cause.Reply` in ``smtp.REPLIES`` when a reply means it).
"""

from __future__ import annotations

from .cause import APP_PASSWORDS_URL, OAUTH_CONSENT_URL, OAUTH_CREDENTIALS_URL, Cause, Reply
from .lookup import CATALOGUE, cause, explain_reply

__all__ = [
    "APP_PASSWORDS_URL",
    "CATALOGUE",
    "OAUTH_CONSENT_URL",
    "OAUTH_CREDENTIALS_URL",
    "Cause",
    "Reply",
    "cause",
    "explain_reply",
]
