"""Sign-in rules: the username, the password, and whether it is an app password.

E017 (an unknown authentication method) comes from resolving the configuration; its words are in
:mod:`~django_gmail_smtp.conf`. OAuth2's own rules are in :mod:`.oauth2`.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext_lazy as _

from ..conf import SmtpConfig
from ..hosts import is_gmail_relay
from .naming import came_from, origin_of, setting_names
from .problem import ERROR, WARNING, Check, Problem, quote

APP_PASSWORDS_PAGE = "https://myaccount.google.com/apppasswords"

NOT_SIGNED_IN = _(
    "%(setting)s is not set, so mail for the Gmail host %(host)s would be sent "
    "without signing in and Gmail would refuse it (530 Authentication Required)."
)
"""E005 and E007 say the same: the one setting that is missing."""

E005 = Check(
    "gmail_smtp.E005",
    ERROR,
    "no username for a Gmail host",
    message=NOT_SIGNED_IN,
    hint=_("Set %(setting)s to the full address of the Gmail account that sends, for example 'you@gmail.com'."),
)

E006 = Check(
    "gmail_smtp.E006",
    ERROR,
    "the username is not an e-mail address",
    message=_(
        "The Gmail username %(username)s (from %(origin)s) is not an e-mail address, "
        "but Gmail signs in only with the account's full address."
    ),
    hint=_("Set %(setting)s to the full address, for example %(example)s."),
)

E007 = Check(
    "gmail_smtp.E007",
    ERROR,
    "no password for a Gmail host",
    message=NOT_SIGNED_IN,
    hint=_(
        "Create an app password at %(url)s (it needs 2-Step Verification) and set "
        "%(setting)s to it, read from an environment variable rather than written "
        "in settings.py."
    ),
)

E017 = Check("gmail_smtp.E017", ERROR, "the authentication method is not 'app_password' or 'oauth2'")

W001 = Check(
    "gmail_smtp.W001",
    WARNING,
    "the password does not look like a 16-letter app password",
    message=_(
        "The password from %(origin)s is not 16 letters, so it does not look like a "
        "Gmail app password, and Gmail rejects the account's own password "
        "(535 BadCredentials or 534 InvalidSecondFactor)."
    ),
    hint=_(
        "Create an app password at %(url)s and set %(setting)s to its 16 letters (the "
        "spaces may stay); changing the account password revokes old app passwords."
    ),
    url_hint=_(
        "Create an app password at %(url)s and put its 16 letters in EMAIL_URL, writing "
        "'@' in the username as %%40 and any spaces as %%20; changing the account password "
        "revokes old app passwords."
    ),
)

CHECKS = (E005, E006, E007, E017, W001)


def is_email(address: str) -> bool:
    """True for an e-mail address as Django's ``EmailField`` accepts it."""
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


def signs_in_with_password(config: SmtpConfig) -> bool:
    """True when this configuration signs in with a password, False with OAuth2 (XOAUTH2).

    False waives E007 (no password) and W001 (not an app password); the OAuth2
    rules (E014-E016, W009) apply instead.
    """
    return not config.uses_oauth2


def _needs_credentials(config: SmtpConfig) -> bool:
    """Gmail hosts need a sign-in; the Workspace relay may allow the server's IP instead."""
    if not config.is_gmail:
        return False
    relay = is_gmail_relay(config.host)
    return not (relay and not config.username and not config.password)


def check_credentials(config: SmtpConfig) -> list[Problem]:
    """E005/E006/E007: Django signs in only when both are set; Gmail needs the full address."""
    if not _needs_credentials(config):
        return []
    problems = []
    host = {"host": quote(config.host)}
    username = setting_names(config, setting="username")
    if not config.username:
        problems.append(E005.problem(username | host, username))
    elif not is_email(config.username):
        example = f"{config.username}@gmail.com" if "@" not in config.username else "you@gmail.com"
        said = {"username": quote(config.username), "origin": origin_of(config, "username")}
        problems.append(E006.problem(said, username | {"example": quote(example)}))
    if signs_in_with_password(config) and not config.password:
        password = setting_names(config, setting="password")
        problems.append(E007.problem(password | host, password | {"url": APP_PASSWORDS_PAGE}))
    return problems


def _looks_like_app_password(password: str) -> bool:
    letters = "".join(password.split())  # spaces as Google shows them, incl. non-breaking ones
    return len(letters) == 16 and letters.isascii() and letters.isalpha()


def check_app_password(config: SmtpConfig) -> list[Problem]:
    """W001: Gmail takes only app passwords (16 letters) over SMTP, never the account's own.

    The message never contains the password or any part of it.
    """
    if not config.is_gmail or not config.password or not signs_in_with_password(config):
        return []
    if _looks_like_app_password(config.password):
        return []
    fix = setting_names(config, setting="password") | {"url": APP_PASSWORDS_PAGE}
    return [
        W001.problem({"origin": origin_of(config, "password")}, fix, url=came_from(config, "password", "EMAIL_URL"))
    ]
