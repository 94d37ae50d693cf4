"""Causes on the SMTP conversation: signing in, and Gmail's replies while sending.

:data:`REPLIES` says which reply means which cause: Gmail's reply code, its enhanced status code and
its words, never the session id at the end of the reply.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from .cause import APP_PASSWORDS_URL, CHOOSE_STARTTLS, Cause, Reply

CAUSES: tuple[Cause, ...] = (
    # Signing in.
    Cause(
        "bad_credentials",
        _("Gmail did not accept the username and password (535 5.7.8)."),
        _(
            "Use the full Gmail address as the username and a 16-letter app password "
            "(or OAuth2), not the account password. Changing the account password "
            "revokes all app passwords: create a new one."
        ),
        url=APP_PASSWORDS_URL,
    ),
    Cause(
        "app_password_required",
        _("The account has 2-Step Verification on and was given its normal password (534 5.7.9)."),
        _("Create an app password and use it as the password."),
        url=APP_PASSWORDS_URL,
    ),
    Cause(
        "web_login_required",
        _("Google's risk check blocked this sign-in from a new place (534 5.7.14)."),
        _(
            "Sign in to the account once from a web browser, then try again; "
            "an app password or OAuth2 avoids this check."
        ),
        temporary=True,
    ),
    Cause(
        "too_many_logins",
        _("Gmail refused the sign-in: too many login attempts (454 4.7.0)."),
        _("Reuse one connection for many messages instead of signing in for each, and wait a few minutes."),
        temporary=True,
    ),
    Cause(
        "auth_required",
        _("Gmail requires signing in before sending (530 5.7.0)."),
        _("Set both the username and the password: when either is empty the backend does not sign in at all."),
    ),
    Cause(
        "starttls_required",
        _("Gmail refused a command because STARTTLS was not used first (530 5.7.0)."),
        _("On port 587 turn STARTTLS on (EMAIL_USE_TLS = True, or 'use_tls': True in MAILERS OPTIONS)."),
        form_fix=CHOOSE_STARTTLS,
    ),
    Cause(
        "auth_not_offered",
        _("The server did not offer sign-in (no AUTH in its EHLO reply): TLS is not in use."),
        _("On port 587 turn STARTTLS on (EMAIL_USE_TLS = True); on port 465 use implicit TLS (EMAIL_USE_SSL = True)."),
        form_fix=CHOOSE_STARTTLS,
    ),
    Cause(
        "starttls_not_offered",
        _("STARTTLS is configured but the server does not offer it."),
        _(
            "Check the host and port: Gmail offers STARTTLS on smtp.gmail.com:587. "
            "On port 465 use implicit TLS (EMAIL_USE_SSL = True) instead."
        ),
        form_fix=_(
            "Check the host and port: Gmail offers STARTTLS on smtp.gmail.com:587. On port 465 choose "
            "implicit TLS in the “Security” field instead."
        ),
    ),
    Cause(
        "tls_required",
        _("Refused to send the password over an unencrypted connection."),
        _("Use STARTTLS on port 587 or implicit TLS on port 465; only a loopback server may be used without TLS."),
    ),
    Cause(
        "auth_line_too_long",
        _("Gmail rejected an over-long AUTH command line (555 5.5.2)."),
        _("Send 'AUTH XOAUTH2' alone and the token after the 334 reply; upgrade django-gmail-smtp if you see this."),
    ),
    Cause(
        "no_auth_mechanism",
        _("The server offers no sign-in method that Python's smtplib supports (PLAIN, LOGIN, CRAM-MD5)."),
        _("Check the host and port: Gmail offers PLAIN and LOGIN after TLS is in use."),
    ),
    # Sending.
    Cause(
        "throttled",
        _("Gmail is throttling this account or connection (421 4.7.0)."),
        _("Retry later with backoff, on a new connection; send fewer messages per minute."),
        temporary=True,
    ),
    Cause(
        "temporary",
        _("Gmail reported a temporary problem (4xx)."),
        _("Retry later with backoff."),
        temporary=True,
    ),
    Cause(
        "daily_quota",
        _("The account's daily sending limit is used up (550 5.4.5)."),
        _(
            "Wait: the limit is counted over a rolling 24 hours (about 500 messages for personal "
            "accounts, 2,000 for Workspace). Retrying now makes it worse."
        ),
        url="https://support.google.com/a/answer/166852",
    ),
    Cause(
        "message_too_large",
        _("The message is larger than Gmail accepts (552 5.2.3)."),
        _("Keep the encoded message under 35,882,577 bytes (about 25 MB of attachments); link large files instead."),
    ),
    Cause(
        "too_many_recipients",
        _("Too many recipients for one message (452 4.5.3)."),
        _("Send to at most 100 recipients per message; split larger lists."),
    ),
    Cause(
        "bad_recipient",
        _("Gmail rejected a recipient address as invalid (553 5.1.3)."),
        _("Check the recipient addresses for typos and stray characters."),
    ),
    Cause(
        "envelope_syntax",
        _("Gmail could not parse a command (555 5.5.2): a malformed sender or recipient address."),
        _("Check the From and recipient addresses."),
    ),
    Cause(
        "bad_ehlo",
        _("Gmail rejected the EHLO name this machine introduced itself with (501 5.5.4)."),
        _("Give the machine an ASCII host name (the EHLO name comes from socket.getfqdn())."),
    ),
    Cause(
        "idle_timeout",
        _("Gmail closed the connection after it was idle too long (451 4.4.2)."),
        _("Open a new connection; keep connections only while sending."),
        temporary=True,
    ),
    Cause(
        "disconnected",
        _("The server closed the connection unexpectedly."),
        _("Open a new connection and retry; if it keeps happening, check the port and TLS mode."),
        temporary=True,
    ),
    Cause(
        "smtputf8_required",
        _("An address has non-ASCII characters before the @, which needs SMTPUTF8."),
        _("Use a server that offers SMTPUTF8 (Gmail does) or an ASCII address."),
    ),
    Cause(
        "unexpected_reply",
        _("The server answered with an error that django-gmail-smtp does not recognise."),
        _("Read the server's reply shown above; run again with -v 2 to see the whole conversation."),
        form_fix=_("Read the server's reply shown above; the SMTP transcript below shows the whole conversation."),
    ),
)

REPLIES: tuple[Reply, ...] = (
    Reply("bad_credentials", codes=(535,)),
    Reply("web_login_required", codes=(534,), statuses=("5.7.14",), words=("weblogin", "log in via your web browser")),
    Reply("app_password_required", codes=(534,)),
    Reply("too_many_logins", codes=(454,), words=("login",)),
    Reply("starttls_required", codes=(530,), words=("starttls",)),
    Reply("auth_required", codes=(530,)),
    Reply("daily_quota", codes=(550,), statuses=("5.4.5",)),
    Reply("message_too_large", codes=(552,)),
    Reply("message_too_large", statuses=("5.2.3",)),
    Reply("too_many_recipients", codes=(452,), statuses=("4.5.3",), words=("too many recipients",)),
    Reply("bad_recipient", codes=(553,)),
    Reply("bad_recipient", statuses=("5.1.3",)),
    Reply("auth_line_too_long", codes=(555,), words=("too long",)),
    Reply("envelope_syntax", codes=(555,)),
    Reply("bad_ehlo", codes=(501,), statuses=("5.5.4",)),
    Reply("idle_timeout", codes=(451,), statuses=("4.4.2",)),
    Reply("throttled", codes=(421,)),
    Reply("temporary", codes=range(400, 500)),
)
"""Which reply means which cause, the first that matches: the specific before the general."""
