"""Causes on the receiving side: reading the mailbox over IMAP or POP3, and the round trip's findings.

``gmail_check --round-trip`` (README.md#proving-delivery-the-round-trip).
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from .cause import APP_PASSWORDS_URL, Cause

CAUSES: tuple[Cause, ...] = (
    # The mailbox servers.
    Cause(
        "imap_unreachable",
        _("The IMAP server could not be reached (no address, refused, no answer, or no TLS on that port)."),
        _(
            "Check GMAIL_SMTP['IMAP_HOST'] and ['IMAP_PORT'] (Gmail: imap.gmail.com, port 993 with "
            "implicit TLS) and that this machine may connect out to that port."
        ),
    ),
    Cause(
        "pop_unreachable",
        _("The POP3 server could not be reached (no address, refused, no answer, or no TLS on that port)."),
        _(
            "Check GMAIL_SMTP['POP_HOST'] and ['POP_PORT'] (Gmail: pop.gmail.com, port 995 with "
            "implicit TLS) and that this machine may connect out to that port."
        ),
    ),
    Cause(
        "imap_disabled",
        _("The server refused IMAP access: IMAP is turned off for this account (its NO reply says so)."),
        _(
            "Google Workspace: an administrator turns IMAP on (Admin console, Apps, Google Workspace, "
            "Gmail, End User Access, POP and IMAP access). Older personal accounts: Gmail settings, "
            "Forwarding and POP/IMAP, Enable IMAP. Or read the mailbox over POP3 instead "
            "(--round-trip-via pop3)."
        ),
        url="https://support.google.com/mail/answer/7126229",
    ),
    Cause(
        "pop_disabled",
        _("The server refused POP3 access: POP is turned off for this account."),
        _(
            "Turn POP on in Gmail (Settings, See all settings, Forwarding and POP/IMAP, POP download; "
            "on Workspace an administrator must allow POP too), or use IMAP, the default "
            "(leave out --round-trip-via pop3)."
        ),
        url="https://support.google.com/mail/answer/7104828",
    ),
    Cause(
        "imap_bad_credentials",
        _("The mailbox server (IMAP or POP3) did not accept the username and password."),
        _(
            "Use the full Gmail address and a 16-letter app password. If SMTP accepted the same "
            "credentials, the IMAP or POP3 host is probably not the same provider's: check "
            "GMAIL_SMTP['IMAP_HOST'] (or 'POP_HOST')."
        ),
        url=APP_PASSWORDS_URL,
    ),
    Cause(
        "imap_app_password_required",
        _(
            "The mailbox server asks for an app password: the account has 2-Step Verification on "
            "and was given its normal password."
        ),
        _("Create an app password and use it as the password (it works for SMTP, IMAP and POP3)."),
        url=APP_PASSWORDS_URL,
    ),
    Cause(
        "imap_web_login_required",
        _("Google's risk check blocked the mailbox sign-in from a new place (log in via your web browser)."),
        _("Sign in to the account once from a web browser, then try again; an app password or OAuth2 avoids this."),
        temporary=True,
    ),
    Cause(
        "imap_token_rejected",
        _("The mailbox server rejected the OAuth2 access token that SMTP accepted."),
        _(
            "The scope https://mail.google.com/ covers IMAP and POP3: check that the username is the "
            "authorized account, and on Workspace that IMAP/POP access is allowed for the user."
        ),
    ),
    Cause(
        "imap_unavailable",
        _("The mailbox server refused for now (too many simultaneous connections, or busy)."),
        _(
            "Close other mail clients of the account (Gmail allows 15 IMAP connections per account) "
            "and try again in a few minutes."
        ),
        temporary=True,
    ),
    Cause(
        "imap_no_folder",
        _("A mailbox folder could not be listed or opened."),
        _(
            "Check that the IMAP server is the account's own (GMAIL_SMTP['IMAP_HOST']). On Gmail, a "
            'label is visible over IMAP only with "Show in IMAP" ticked (Settings, Labels).'
        ),
    ),
    Cause(
        "imap_protocol",
        _(
            "The IMAP server broke off the conversation or answered with something this client does "
            "not accept (a protocol error, or a reply over the size limits)."
        ),
        _(
            "Check GMAIL_SMTP['IMAP_HOST'] and ['IMAP_PORT'] (Gmail: imap.gmail.com:993, implicit TLS) "
            "and run again with -v 2 to see the conversation."
        ),
    ),
    Cause(
        "pop_protocol",
        _(
            "The POP3 server broke off the conversation or answered with something this client does "
            "not accept (a protocol error, or a reply over the size limits)."
        ),
        _(
            "Check GMAIL_SMTP['POP_HOST'] and ['POP_PORT'] (Gmail: pop.gmail.com:995, implicit TLS) "
            "and run again with -v 2 to see the conversation."
        ),
    ),
    # What the round trip found.
    Cause(
        "round_trip_no_address",
        _("The username is not an e-mail address, so there is no mailbox to send the round-trip message to."),
        _("Set the username to the account's full address (for example you@gmail.com)."),
    ),
    Cause(
        "round_trip_timeout",
        _("The test message did not arrive in time: it was not found in the inbox, Spam or All Mail."),
        _(
            "Gmail usually delivers within seconds: look for the message in Gmail (search its subject, "
            "and check Spam and the filters, Settings, Filters and Blocked Addresses), or wait longer "
            "with --round-trip-timeout. Over POP3 a message in Spam is never seen."
        ),
    ),
    Cause(
        "round_trip_spam",
        _("The test message arrived in Spam, not in the inbox."),
        _(
            'Send from the account\'s address or a verified "Send mail as" alias (DEFAULT_FROM_EMAIL), '
            "make SPF, DKIM and DMARC pass for the From domain (see the authentication step), and "
            'mark the message "Not spam" in Gmail.'
        ),
        url="https://support.google.com/mail/answer/81126",
    ),
    Cause(
        "round_trip_not_in_inbox",
        _("The test message arrived but skipped the inbox (found only in All Mail or another folder)."),
        _(
            "Look for a Gmail filter that archives it (Settings, Filters and Blocked Addresses). "
            "Gmail may also file a message you send to yourself only under Sent Mail."
        ),
    ),
    Cause(
        "round_trip_from_rewritten",
        _("Gmail replaced the From address: the message was delivered from the account's address, not the one sent."),
        _(
            'Add the address as a verified "Send mail as" alias in Gmail (Settings, Accounts) and '
            "list it in GMAIL_SMTP['FROM_ALIASES'] (checks gmail_smtp.W005 and W006 then pass), or send "
            "from the account's address and put other addresses in Reply-To."
        ),
        url="https://support.google.com/mail/answer/22370",
    ),
    Cause(
        "round_trip_auth_failed",
        _("SPF, DKIM or DMARC did not pass for the test message (Authentication-Results)."),
        _(
            "For a From address on your own domain: publish SPF that includes Google "
            "(include:_spf.google.com), turn on DKIM signing for the domain (Google Admin console, "
            "Gmail, Authenticate email) and publish a DMARC record; or send from the account's "
            "address."
        ),
        url="https://support.google.com/a/answer/81126",
    ),
    Cause(
        "round_trip_no_tls",
        _("The receiving server recorded the message as received without TLS."),
        _("Send over STARTTLS (port 587, EMAIL_USE_TLS) or implicit TLS (port 465, EMAIL_USE_SSL)."),
    ),
    Cause(
        "round_trip_cleanup_failed",
        _("The test message could not be deleted from the mailbox."),
        _('Delete it by hand: its subject starts with "gmail_check round trip".'),
    ),
)
