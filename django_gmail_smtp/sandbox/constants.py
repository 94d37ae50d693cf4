"""Constants of the Gmail sandbox (no third-party imports, safe to import anywhere)."""

from __future__ import annotations

SANDBOX_USER = "sandbox@example.com"
"""The account the sandbox accepts by default."""

SANDBOX_PASSWORD = "sandboxapppasswd"  # noqa: S105 - a public, sandbox-only password
"""Its password: 16 lowercase letters, shaped like a Gmail app password."""

GMAIL_SIZE_LIMIT = 35882577
"""Gmail's advertised ``SIZE``: the largest encoded message it accepts, in bytes."""

GMAIL_MAX_RECIPIENTS = 100
"""Gmail's limit of recipients per message over SMTP."""

DEFAULT_SERVER_NAME = "gmail-sandbox.localhost"
"""The name the sandbox gives itself where Gmail says ``smtp.gmail.com``."""

DEFAULT_IDLE_SECONDS = 300.0
"""Idle time after which the sandbox says ``451 4.4.2 Timeout`` (Gmail's is undocumented)."""

MAIL_SCOPE = "https://mail.google.com/"
"""The one OAuth2 scope Gmail accepts for SMTP, IMAP and POP: the sandbox's tokens carry it."""

SANDBOX_CA_ORGANIZATION = "django-gmail-smtp sandbox"
"""The organization (O=) of every sandbox CA: how ``gmail_check`` recognises a sandbox's certificate."""
