"""Production-only rules (``manage.py check --deploy``): what is fine while developing, not in production."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext_lazy as _

from ..conf import SmtpConfig, url_password
from ..hosts import is_loopback
from .naming import origin_of, setting_names
from .problem import WARNING, Check, Problem, quote

W007 = Check(
    "gmail_smtp.W007",
    WARNING,
    "GMAIL_SMTP['TRANSCRIPT'] is on (deploy)",
    message=_(
        "GMAIL_SMTP['TRANSCRIPT'] is on, so every SMTP command and reply, with sender and "
        "recipient addresses, is logged to the 'django_gmail_smtp.transcript' logger."
    ),
    hint=_(
        "Set GMAIL_SMTP['TRANSCRIPT'] = False in production settings and turn it on only "
        "while investigating a delivery problem."
    ),
)

W008 = Check(
    "gmail_smtp.W008",
    WARNING,
    "the host is a loopback address while DEBUG is False (deploy)",
    message=_(
        "The SMTP host %(host)s (from %(origin)s) is a loopback address, such as the "
        "Gmail sandbox's, while DEBUG is False, so mail would stay on this machine "
        "instead of going to Gmail."
    ),
    hint=_(
        "Set %(setting)s = 'smtp.gmail.com' in production settings; if a local relay "
        "forwards your mail on purpose, add 'gmail_smtp.W008' to "
        "SILENCED_SYSTEM_CHECKS."
    ),
)

W010 = Check(
    "gmail_smtp.W010",
    WARNING,
    "EMAIL_URL holds a password that the exception reporter filter would show (deploy)",
    message=_(
        "EMAIL_URL contains a password (%(places)s), and the exception reporter filter "
        "%(filter)s hides settings and environment variables by name only, so Django's error "
        "reports (the debug page, error e-mails to ADMINS) would show it."
    ),
    hint=_(
        "Set DEFAULT_EXCEPTION_REPORTER_FILTER = %(recommended)s (or a subclass of it): it "
        "also hides passwords inside URLs and this app's secrets."
    ),
)

CHECKS = (W007, W008, W010)


def check_transcript(transcript: Any) -> list[Problem]:
    """W007 (deploy): the transcript log holds every SMTP command and reply."""
    return [W007.problem()] if transcript else []


def check_email_url_reporting(
    sources: Mapping[str, str], reporter_filter: str, *, hides_url_passwords: bool, recommended: str
) -> list[Problem]:
    """W010 (deploy): an ``EMAIL_URL`` with a password, and an exception reporter filter that shows it.

    ``sources`` maps where an ``EMAIL_URL`` is set (``settings.EMAIL_URL``,
    ``os.environ['EMAIL_URL']``) to its value; ``reporter_filter`` is
    ``DEFAULT_EXCEPTION_REPORTER_FILTER``, ``hides_url_passwords`` whether it is ``recommended``
    (this app's filter) or a subclass of it.
    """
    places = [place for place, url in sources.items() if url_password(url)]
    if not places or hides_url_passwords:
        return []
    said = {"places": ", ".join(places), "filter": quote(reporter_filter)}
    return [W010.problem(said, {"recommended": quote(recommended)})]


def check_deploy_config(config: SmtpConfig, *, debug: bool) -> list[Problem]:
    """W008 (deploy): a loopback host (the sandbox) in production keeps mail on this machine."""
    if debug or not is_loopback(config.host):
        return []
    said = {"host": quote(config.host), "origin": origin_of(config, "host")}
    return [W008.problem(said, setting_names(config, setting="host"))]
