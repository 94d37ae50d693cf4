"""The catalogue of Gmail failure causes: what happened and what to change.

Written once and used by the backend (exception messages), ``gmail_check`` and
the admin. Diagnosis goes by reply code, enhanced status code and the ``?p=``
slug of Google's help link, never by the session id at the end of the reply
(:func:`explain_reply`; what an exception means is
:func:`~django_gmail_smtp.exceptions.explain_exception`, next to the exception classes).
A leaf: it imports nothing of this package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

__all__ = ["CATALOGUE", "Cause", "cause", "explain_reply"]

APP_PASSWORDS_URL = "https://myaccount.google.com/apppasswords"
OAUTH_CONSENT_URL = "https://console.cloud.google.com/apis/credentials/consent"
OAUTH_CREDENTIALS_URL = "https://console.cloud.google.com/apis/credentials"


@dataclass(frozen=True)
class Cause:
    """One known failure: a stable id, what it means, and the fix.

    ``form_fix`` is the fix worded for the admin's account form (its fields rather than settings),
    where ``fix`` names settings; :meth:`fix_for` picks one.
    """

    id: str
    summary: str | Promise
    fix: str | Promise
    temporary: bool = False
    url: str = ""
    form_fix: str | Promise = ""

    def fix_for(self, *, form: bool) -> str | Promise:
        """The fix for someone editing settings, or (``form=True``) the admin's account form."""
        return self.form_fix or self.fix if form else self.fix

    def explain(self) -> str:
        text = _("Cause: %(summary)s Fix: %(fix)s") % {"summary": self.summary, "fix": self.fix}
        return f"{text} {self.url}".rstrip() + f" [{self.id}]"

    def lines(self) -> list[str]:
        """The cause as the commands print it, one fact a line: cause, fix, link, whether it is
        temporary, and its id."""
        lines = [_("Cause: %(summary)s") % {"summary": self.summary}, _("Fix: %(fix)s") % {"fix": self.fix}]
        if self.url:
            lines.append(_("More: %(url)s") % {"url": self.url})
        if self.temporary:
            lines.append(str(_("This is usually temporary: retrying later may work.")))
        lines.append(_("Cause id: %(id)s") % {"id": self.id})
        return lines


def _c(
    id: str, summary: Promise, fix: Promise, *, temporary: bool = False, url: str = "", form_fix: Promise | str = ""
) -> Cause:
    return Cause(id, summary, fix, temporary, url, form_fix)


_CHOOSE_STARTTLS = _("Choose STARTTLS (port 587) or implicit TLS (port 465) in the “Security” field.")


CATALOGUE: dict[str, Cause] = {
    c.id: c
    for c in (
        # Sign-in.
        _c(
            "bad_credentials",
            _("Gmail did not accept the username and password (535 5.7.8)."),
            _(
                "Use the full Gmail address as the username and a 16-letter app password "
                "(or OAuth2), not the account password. Changing the account password "
                "revokes all app passwords: create a new one."
            ),
            url=APP_PASSWORDS_URL,
        ),
        _c(
            "app_password_required",
            _("The account has 2-Step Verification on and was given its normal password (534 5.7.9)."),
            _("Create an app password and use it as the password."),
            url=APP_PASSWORDS_URL,
        ),
        _c(
            "web_login_required",
            _("Google's risk check blocked this sign-in from a new place (534 5.7.14)."),
            _(
                "Sign in to the account once from a web browser, then try again; "
                "an app password or OAuth2 avoids this check."
            ),
            temporary=True,
        ),
        _c(
            "too_many_logins",
            _("Gmail refused the sign-in: too many login attempts (454 4.7.0)."),
            _("Reuse one connection for many messages instead of signing in for each, and wait a few minutes."),
            temporary=True,
        ),
        _c(
            "auth_required",
            _("Gmail requires signing in before sending (530 5.7.0)."),
            _("Set both the username and the password: when either is empty the backend does not sign in at all."),
        ),
        _c(
            "starttls_required",
            _("Gmail refused a command because STARTTLS was not used first (530 5.7.0)."),
            _("On port 587 turn STARTTLS on (EMAIL_USE_TLS = True, or 'use_tls': True in MAILERS OPTIONS)."),
            form_fix=_CHOOSE_STARTTLS,
        ),
        _c(
            "auth_not_offered",
            _("The server did not offer sign-in (no AUTH in its EHLO reply): TLS is not in use."),
            _(
                "On port 587 turn STARTTLS on (EMAIL_USE_TLS = True); on port 465 use implicit TLS (EMAIL_USE_SSL = True)."
            ),
            form_fix=_CHOOSE_STARTTLS,
        ),
        _c(
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
        _c(
            "tls_required",
            _("Refused to send the password over an unencrypted connection."),
            _("Use STARTTLS on port 587 or implicit TLS on port 465; only a loopback server may be used without TLS."),
        ),
        _c(
            "auth_line_too_long",
            _("Gmail rejected an over-long AUTH command line (555 5.5.2)."),
            _(
                "Send 'AUTH XOAUTH2' alone and the token after the 334 reply; upgrade django-gmail-smtp if you see this."
            ),
        ),
        # OAuth2 (XOAUTH2) sign-in; README.md#oauth2-xoauth2.
        _c(
            "oauth_invalid_grant",
            _(
                "Google refused the OAuth2 refresh token (invalid_grant): it expired or was revoked. "
                'Refresh tokens of apps left in "Testing" expire after 7 days; revoking the app\'s '
                "access, changing the account password or long disuse also end them."
            ),
            _(
                "Authorize again: 'manage.py gmail_authorize' (or the account's \"Authorize with Google\" "
                "button in the admin) and store the new refresh token. To stop the 7-day expiry, publish "
                "the app (Google Cloud console, OAuth consent screen, Publishing status: In production)."
            ),
            url=OAUTH_CONSENT_URL,
        ),
        _c(
            "oauth_invalid_client",
            _("Google refused the OAuth2 client id or client secret (invalid_client)."),
            _(
                "Copy the client id and secret again from the Google Cloud console (APIs & Services, "
                "Credentials); a refresh token works only with the client it was issued to."
            ),
            url=OAUTH_CREDENTIALS_URL,
        ),
        _c(
            "oauth_wrong_scope",
            _("The OAuth2 token was not granted the scope https://mail.google.com/, which SMTP needs."),
            _(
                'Authorize again and keep the Gmail permission ("Read, compose, send and permanently delete '
                "all your email from Gmail\") ticked on Google's consent page; add the scope "
                "https://mail.google.com/ to the consent screen of the app."
            ),
        ),
        _c(
            "oauth_token_rejected",
            _(
                "Gmail rejected a freshly issued OAuth2 access token (535 5.7.8 after the XOAUTH2 "
                "error challenge): the refresh token belongs to another Google account than the "
                "username, or the account may not use SMTP."
            ),
            _(
                "Set the username to the address of the account that was authorized, or authorize "
                "again while signed in as that account. On Workspace, an administrator may have "
                "turned IMAP/SMTP or third-party access off for the user."
            ),
        ),
        _c(
            "oauth_token_unreachable",
            _("The OAuth2 token endpoint could not be reached to get an access token."),
            _(
                "Check that this machine can reach GMAIL_SMTP['OAUTH_TOKEN_URI'] "
                "(https://oauth2.googleapis.com/token by default) over HTTPS, then retry."
            ),
            temporary=True,
        ),
        _c(
            "oauth_token_error",
            _("The OAuth2 token endpoint answered with an error."),
            _("Read the endpoint's answer shown above; authorizing again often helps."),
        ),
        _c(
            "oauth_extra_missing",
            _("OAuth2 sign-in needs google-auth, which is not installed."),
            _('Install it: pip install "django-gmail-smtp[oauth]".'),
        ),
        _c(
            "xoauth2_not_offered",
            _("The server does not offer XOAUTH2 sign-in."),
            _(
                "Check the host, the port and the TLS mode: Gmail offers XOAUTH2 once TLS is in use "
                "(STARTTLS on 587, implicit TLS on 465)."
            ),
        ),
        # Sending.
        _c(
            "throttled",
            _("Gmail is throttling this account or connection (421 4.7.0)."),
            _("Retry later with backoff, on a new connection; send fewer messages per minute."),
            temporary=True,
        ),
        _c(
            "temporary",
            _("Gmail reported a temporary problem (4xx)."),
            _("Retry later with backoff."),
            temporary=True,
        ),
        # The queued backend's worker (README.md#background-sending).
        _c(
            "config",
            _("The worker could not send the message with the configuration it found (settings or stored account)."),
            _(
                "Read the error under the last reply, correct the settings or the stored account (the "
                "account's “Test connection” button or 'manage.py gmail_check' shows what is wrong), then "
                "retry the message."
            ),
        ),
        _c(
            "daily_quota",
            _("The account's daily sending limit is used up (550 5.4.5)."),
            _(
                "Wait: the limit is counted over a rolling 24 hours (about 500 messages for personal "
                "accounts, 2,000 for Workspace). Retrying now makes it worse."
            ),
            url="https://support.google.com/a/answer/166852",
        ),
        _c(
            "message_too_large",
            _("The message is larger than Gmail accepts (552 5.2.3)."),
            _(
                "Keep the encoded message under 35,882,577 bytes (about 25 MB of attachments); link large files instead."
            ),
        ),
        _c(
            "too_many_recipients",
            _("Too many recipients for one message (452 4.5.3)."),
            _("Send to at most 100 recipients per message; split larger lists."),
        ),
        _c(
            "bad_recipient",
            _("Gmail rejected a recipient address as invalid (553 5.1.3)."),
            _("Check the recipient addresses for typos and stray characters."),
        ),
        _c(
            "envelope_syntax",
            _("Gmail could not parse a command (555 5.5.2): a malformed sender or recipient address."),
            _("Check the From and recipient addresses."),
        ),
        _c(
            "bad_ehlo",
            _("Gmail rejected the EHLO name this machine introduced itself with (501 5.5.4)."),
            _("Give the machine an ASCII host name (the EHLO name comes from socket.getfqdn())."),
        ),
        _c(
            "idle_timeout",
            _("Gmail closed the connection after it was idle too long (451 4.4.2)."),
            _("Open a new connection; keep connections only while sending."),
            temporary=True,
        ),
        _c(
            "disconnected",
            _("The server closed the connection unexpectedly."),
            _("Open a new connection and retry; if it keeps happening, check the port and TLS mode."),
            temporary=True,
        ),
        _c(
            "smtputf8_required",
            _("An address has non-ASCII characters before the @, which needs SMTPUTF8."),
            _("Use a server that offers SMTPUTF8 (Gmail does) or an ASCII address."),
        ),
        # Network and TLS, seen by the client.
        _c(
            "tls_on_starttls_port",
            _("Implicit TLS was used on a port that expects STARTTLS (wrong version number)."),
            _(
                "Use port 587 with STARTTLS (EMAIL_USE_TLS = True) or port 465 with implicit TLS (EMAIL_USE_SSL = True)."
            ),
            form_fix=_CHOOSE_STARTTLS,
        ),
        _c(
            "plain_on_tls_port",
            _("The server did not greet: this port expects implicit TLS from the first byte."),
            _(
                "Use implicit TLS on port 465 (EMAIL_USE_SSL = True, django-environ 'smtp+ssl://'), "
                "or STARTTLS on port 587. django-environ's 'smtps://' means STARTTLS."
            ),
            form_fix=_CHOOSE_STARTTLS,
        ),
        _c(
            "no_greeting",
            _("The connection opened but the server never greeted."),
            _(
                "Something between you and the server swallows SMTP: check the port, the TLS mode "
                "(465 needs implicit TLS) and any firewall or proxy."
            ),
        ),
        _c(
            "port_blocked",
            _("The connection attempt timed out: outbound SMTP looks blocked."),
            _(
                "Many hosts block outbound ports 25/465/587 (e.g. Google Cloud, AWS EC2 and Azure by default "
                "for 25; some PaaS and corporate networks for all). Try the other port (465/587), ask "
                "the host to open it, or use an HTTP mail API."
            ),
        ),
        _c(
            "connection_refused",
            _("The server refused the connection: nothing listens on that host and port."),
            _("Check the host and port (Gmail: smtp.gmail.com, 587 or 465)."),
        ),
        _c(
            "network_unreachable",
            _("The network is unreachable (often a broken IPv6 route)."),
            _("Check the machine's routes; if only IPv6 is broken, prefer IPv4 for the mail host."),
        ),
        _c(
            "dns_failure",
            _("The mail server's host name could not be resolved."),
            _("Check the host name for typos (Gmail: smtp.gmail.com) and the machine's DNS settings."),
        ),
        _c(
            "cert_untrusted",
            _("The server's certificate is not signed by a trusted authority."),
            _(
                "Install the system CA bundle (e.g. ca-certificates, or certifi), or point "
                "GMAIL_SMTP['SSL_CAFILE'] at your proxy's CA file. Never turn verification off."
            ),
        ),
        _c(
            "cert_hostname_mismatch",
            _("The server's certificate is for a different host name."),
            _("Connect using the host name on the certificate (smtp.gmail.com), not an IP address or alias."),
        ),
        _c(
            "cert_expired",
            _("The server's certificate has expired or is not yet valid."),
            _("Check the machine's clock; otherwise the server's certificate must be renewed."),
        ),
        _c(
            "tls_failed",
            _("The TLS handshake failed."),
            _("Check the port and TLS mode; a proxy may be intercepting the connection."),
        ),
        _c(
            "timeout",
            _("The server stopped answering within the timeout."),
            _("Retry; if it persists, check the network or raise the timeout a little (10-30 s)."),
            temporary=True,
        ),
        # A hostile or broken server (README.md#hostile-or-broken-servers).
        _c(
            "reply_too_long",
            _(
                "The server sent a reply far longer than any real server sends (too many lines or "
                "bytes), so the connection was closed before it could use up memory."
            ),
            _(
                "Check the host and port: Gmail's longest reply is a few lines. Something between this "
                "machine and the server (a proxy, or an attacker before STARTTLS) may be interfering."
            ),
        ),
        _c(
            "deadline_exceeded",
            _(
                "The server answered, but too slowly: the step did not finish within its overall "
                "time limit, which is derived from the timeout."
            ),
            _(
                "Retry; if it persists, check the network and the host (something may be slowing the "
                "connection down). A slow but honest server needs a larger timeout (10-30 s)."
            ),
            temporary=True,
        ),
        # Added for gmail_check's staged diagnosis.
        _c(
            "dns_timeout",
            _("The DNS lookup of the mail server's host name did not finish within the timeout."),
            _(
                "Check the machine's DNS resolver (/etc/resolv.conf, or the container's DNS "
                "settings); a working resolver answers in well under a second."
            ),
            temporary=True,
        ),
        _c(
            "tls_no_answer",
            _("The port accepted the connection but never answered the TLS handshake."),
            _(
                "Check the port and the TLS mode: Gmail speaks implicit TLS on 465 "
                "(EMAIL_USE_SSL = True) and STARTTLS on 587 (EMAIL_USE_TLS = True). A firewall "
                "or proxy that swallows the traffic looks the same."
            ),
            form_fix=_(
                "Check the port and the “Security” field: Gmail speaks implicit TLS on 465 and STARTTLS on "
                "587. A firewall or proxy that swallows the traffic looks the same."
            ),
        ),
        _c(
            "no_auth_mechanism",
            _("The server offers no sign-in method that Python's smtplib supports (PLAIN, LOGIN, CRAM-MD5)."),
            _("Check the host and port: Gmail offers PLAIN and LOGIN after TLS is in use."),
        ),
        _c(
            "unexpected_reply",
            _("The server answered with an error that django-gmail-smtp does not recognise."),
            _("Read the server's reply shown above; run again with -v 2 to see the whole conversation."),
            form_fix=_("Read the server's reply shown above; the SMTP transcript below shows the whole conversation."),
        ),
        _c(
            "unexpected_error",
            _("An unexpected error happened while talking to the server."),
            _("Read the error shown above; run again with -v 3 for the details."),
            form_fix=_(
                "Read the error shown above and the SMTP transcript below; if it looks like a bug, please report it."
            ),
        ),
        _c(
            "username_missing",
            _("No username is configured, so the backend would not sign in."),
            _("Set EMAIL_HOST_USER (or 'username' in MAILERS OPTIONS) to the full Gmail address of the account."),
            form_fix=_("Enter the full Gmail address of the account in the “Gmail address” field."),
        ),
        _c(
            "credentials_missing",
            _("Neither a username nor a password is configured, so the backend would not sign in."),
            _(
                "Set EMAIL_HOST_USER to the full Gmail address and EMAIL_HOST_PASSWORD to a "
                "16-letter app password (or 'username' and 'password' in MAILERS OPTIONS)."
            ),
            url=APP_PASSWORDS_URL,
            form_fix=_(
                "Enter the full Gmail address in the “Gmail address” field and a 16-letter app password in the “App password” field."
            ),
        ),
        # Added for the first ten minutes (issue #13): the local sandbox, and impostors of Gmail.
        _c(
            "sandbox_cert_untrusted",
            _(
                "The server's certificate is not signed by the configured CA, and this looks like the "
                "Gmail sandbox (a server on this machine, or a certificate from a sandbox's own CA)."
            ),
            _(
                "Set GMAIL_SMTP['SSL_CAFILE'] (or GMAIL_SMTP_SSL_CAFILE) to the ca.pem in the folder of "
                "the sandbox you started (.sandbox/ca.pem by default; gmail_sandbox prints the path), and "
                "check the port: it must be the one that sandbox listens on. Each sandbox makes a new CA "
                "when it starts, so the ca.pem of an earlier run or of another sandbox does not fit."
            ),
        ),
        _c(
            "not_gmail_server",
            _(
                "The host is Gmail's, but the server did not greet like Gmail: something between this "
                "machine and Gmail answers in its place."
            ),
            _(
                "Look for an antivirus, firewall or corporate proxy that intercepts outbound mail "
                "(ports 25/465/587), and for an /etc/hosts entry or DNS record that sends smtp.gmail.com "
                "elsewhere; try the other port (465/587) or another network."
            ),
        ),
        _c(
            "invalid_setting",
            _("A mail setting has an invalid value."),
            _("Correct the setting named in the message."),
            form_fix=_("Correct the field named in the message."),
        ),
        # Configuration.
        _c(
            "password_missing",
            _("No password is configured, so the backend would not sign in."),
            _("Set EMAIL_HOST_PASSWORD (or 'password' in MAILERS OPTIONS) to a 16-letter app password."),
            url=APP_PASSWORDS_URL,
            form_fix=_("Enter a 16-letter app password in the “App password” field."),
        ),
        _c(
            "tls_and_ssl",
            _("STARTTLS and implicit TLS are both turned on."),
            _("Turn one off: port 587 uses STARTTLS (use_tls), port 465 implicit TLS (use_ssl)."),
        ),
        # The receiving side: gmail_check --round-trip reads the account's mailbox over IMAP or POP3
        # (README.md#proving-delivery-the-round-trip).
        _c(
            "imap_unreachable",
            _("The IMAP server could not be reached (no address, refused, no answer, or no TLS on that port)."),
            _(
                "Check GMAIL_SMTP['IMAP_HOST'] and ['IMAP_PORT'] (Gmail: imap.gmail.com, port 993 with "
                "implicit TLS) and that this machine may connect out to that port."
            ),
        ),
        _c(
            "pop_unreachable",
            _("The POP3 server could not be reached (no address, refused, no answer, or no TLS on that port)."),
            _(
                "Check GMAIL_SMTP['POP_HOST'] and ['POP_PORT'] (Gmail: pop.gmail.com, port 995 with "
                "implicit TLS) and that this machine may connect out to that port."
            ),
        ),
        _c(
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
        _c(
            "pop_disabled",
            _("The server refused POP3 access: POP is turned off for this account."),
            _(
                "Turn POP on in Gmail (Settings, See all settings, Forwarding and POP/IMAP, POP download; "
                "on Workspace an administrator must allow POP too), or use IMAP, the default "
                "(leave out --round-trip-via pop3)."
            ),
            url="https://support.google.com/mail/answer/7104828",
        ),
        _c(
            "imap_bad_credentials",
            _("The mailbox server (IMAP or POP3) did not accept the username and password."),
            _(
                "Use the full Gmail address and a 16-letter app password. If SMTP accepted the same "
                "credentials, the IMAP or POP3 host is probably not the same provider's: check "
                "GMAIL_SMTP['IMAP_HOST'] (or 'POP_HOST')."
            ),
            url=APP_PASSWORDS_URL,
        ),
        _c(
            "imap_app_password_required",
            _(
                "The mailbox server asks for an app password: the account has 2-Step Verification on "
                "and was given its normal password."
            ),
            _("Create an app password and use it as the password (it works for SMTP, IMAP and POP3)."),
            url=APP_PASSWORDS_URL,
        ),
        _c(
            "imap_web_login_required",
            _("Google's risk check blocked the mailbox sign-in from a new place (log in via your web browser)."),
            _("Sign in to the account once from a web browser, then try again; an app password or OAuth2 avoids this."),
            temporary=True,
        ),
        _c(
            "imap_token_rejected",
            _("The mailbox server rejected the OAuth2 access token that SMTP accepted."),
            _(
                "The scope https://mail.google.com/ covers IMAP and POP3: check that the username is the "
                "authorized account, and on Workspace that IMAP/POP access is allowed for the user."
            ),
        ),
        _c(
            "imap_unavailable",
            _("The mailbox server refused for now (too many simultaneous connections, or busy)."),
            _(
                "Close other mail clients of the account (Gmail allows 15 IMAP connections per account) "
                "and try again in a few minutes."
            ),
            temporary=True,
        ),
        _c(
            "imap_no_folder",
            _("A mailbox folder could not be listed or opened."),
            _(
                "Check that the IMAP server is the account's own (GMAIL_SMTP['IMAP_HOST']). On Gmail, a "
                'label is visible over IMAP only with "Show in IMAP" ticked (Settings, Labels).'
            ),
        ),
        _c(
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
        _c(
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
        _c(
            "round_trip_no_address",
            _("The username is not an e-mail address, so there is no mailbox to send the round-trip message to."),
            _("Set the username to the account's full address (for example you@gmail.com)."),
        ),
        _c(
            "round_trip_timeout",
            _("The test message did not arrive in time: it was not found in the inbox, Spam or All Mail."),
            _(
                "Gmail usually delivers within seconds: look for the message in Gmail (search its subject, "
                "and check Spam and the filters, Settings, Filters and Blocked Addresses), or wait longer "
                "with --round-trip-timeout. Over POP3 a message in Spam is never seen."
            ),
        ),
        _c(
            "round_trip_spam",
            _("The test message arrived in Spam, not in the inbox."),
            _(
                'Send from the account\'s address or a verified "Send mail as" alias (DEFAULT_FROM_EMAIL), '
                "make SPF, DKIM and DMARC pass for the From domain (see the authentication step), and "
                'mark the message "Not spam" in Gmail.'
            ),
            url="https://support.google.com/mail/answer/81126",
        ),
        _c(
            "round_trip_not_in_inbox",
            _("The test message arrived but skipped the inbox (found only in All Mail or another folder)."),
            _(
                "Look for a Gmail filter that archives it (Settings, Filters and Blocked Addresses). "
                "Gmail may also file a message you send to yourself only under Sent Mail."
            ),
        ),
        _c(
            "round_trip_from_rewritten",
            _(
                "Gmail replaced the From address: the message was delivered from the account's address, not the one sent."
            ),
            _(
                'Add the address as a verified "Send mail as" alias in Gmail (Settings, Accounts) and '
                "list it in GMAIL_SMTP['FROM_ALIASES'] (checks gmail_smtp.W005 and W006 then pass), or send "
                "from the account's address and put other addresses in Reply-To."
            ),
            url="https://support.google.com/mail/answer/22370",
        ),
        _c(
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
        _c(
            "round_trip_no_tls",
            _("The receiving server recorded the message as received without TLS."),
            _("Send over STARTTLS (port 587, EMAIL_USE_TLS) or implicit TLS (port 465, EMAIL_USE_SSL)."),
        ),
        _c(
            "round_trip_cleanup_failed",
            _("The test message could not be deleted from the mailbox."),
            _('Delete it by hand: its subject starts with "gmail_check round trip".'),
        ),
    )
}


def cause(cause_id: str) -> Cause:
    """Return the catalogue entry ``cause_id`` (``KeyError`` if unknown)."""
    return CATALOGUE[cause_id]


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def explain_reply(code: int, text: str | bytes) -> Cause | None:
    """Map an SMTP reply (code and text, possibly multi-line) to a known cause."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    low = text.lower()
    m = _ENHANCED.search(text)
    status = m.group(0) if m else ""
    if code == 535:
        return CATALOGUE["bad_credentials"]
    if code == 534:
        if status == "5.7.14" or "weblogin" in low or "log in via your web browser" in low:
            return CATALOGUE["web_login_required"]
        return CATALOGUE["app_password_required"]
    if code == 454 and "login" in low:
        return CATALOGUE["too_many_logins"]
    if code == 530:
        return CATALOGUE["starttls_required" if "starttls" in low else "auth_required"]
    if code == 550 and status == "5.4.5":
        return CATALOGUE["daily_quota"]
    if code == 552 or status == "5.2.3":
        return CATALOGUE["message_too_large"]
    if code == 452 and (status == "4.5.3" or "too many recipients" in low):
        return CATALOGUE["too_many_recipients"]
    if code == 553 or status == "5.1.3":
        return CATALOGUE["bad_recipient"]
    if code == 555:
        return CATALOGUE["auth_line_too_long" if "too long" in low else "envelope_syntax"]
    if code == 501 and status == "5.5.4":
        return CATALOGUE["bad_ehlo"]
    if code == 451 and status == "4.4.2":
        return CATALOGUE["idle_timeout"]
    if code == 421:
        return CATALOGUE["throttled"]
    if 400 <= code < 500:
        return CATALOGUE["temporary"]
    return None
