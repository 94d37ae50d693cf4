"""Causes of OAuth2 (XOAUTH2) sign-in: the token endpoint's answers and the account's grant.

README.md#oauth2-xoauth2.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from .cause import OAUTH_CONSENT_URL, OAUTH_CREDENTIALS_URL, Cause

CAUSES: tuple[Cause, ...] = (
    Cause(
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
    Cause(
        "oauth_invalid_client",
        _("Google refused the OAuth2 client id or client secret (invalid_client)."),
        _(
            "Copy the client id and secret again from the Google Cloud console (APIs & Services, "
            "Credentials); a refresh token works only with the client it was issued to."
        ),
        url=OAUTH_CREDENTIALS_URL,
    ),
    Cause(
        "oauth_wrong_scope",
        _("The OAuth2 token was not granted the scope https://mail.google.com/, which SMTP needs."),
        _(
            'Authorize again and keep the Gmail permission ("Read, compose, send and permanently delete '
            "all your email from Gmail\") ticked on Google's consent page; add the scope "
            "https://mail.google.com/ to the consent screen of the app."
        ),
    ),
    Cause(
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
    Cause(
        "oauth_token_unreachable",
        _("The OAuth2 token endpoint could not be reached to get an access token."),
        _(
            "Check that this machine can reach GMAIL_SMTP['OAUTH_TOKEN_URI'] "
            "(https://oauth2.googleapis.com/token by default) over HTTPS, then retry."
        ),
        temporary=True,
    ),
    Cause(
        "oauth_token_error",
        _("The OAuth2 token endpoint answered with an error."),
        _("Read the endpoint's answer shown above; authorizing again often helps."),
    ),
    Cause(
        "oauth_extra_missing",
        _("OAuth2 sign-in needs google-auth, which is not installed."),
        _('Install it: pip install "django-gmail-smtp[oauth]".'),
    ),
    Cause(
        "xoauth2_not_offered",
        _("The server does not offer XOAUTH2 sign-in."),
        _(
            "Check the host, the port and the TLS mode: Gmail offers XOAUTH2 once TLS is in use "
            "(STARTTLS on 587, implicit TLS on 465)."
        ),
    ),
)
