"""Connection rules: the TLS mode, the port, the host and the timeout.

E001 and E009 come from resolving the configuration (their words are in :mod:`~django_gmail_smtp.conf`);
the others are found here in a resolved one.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from ..conf import SOURCE_DEFAULT, SmtpConfig
from ..hosts import is_gmail_relay, is_loopback, valid_host
from .naming import came_from, from_form, named, origin_of, origins, setting_names
from .problem import ERROR, WARNING, Check, Problem, quote

# What can be used at all, for the checks, gmail_check and the admin form alike.
PORT_RANGE = (1, 65535)
TIMEOUT_LIMIT = 300.0  # seconds: the admin form's cap; longer typed there (or not finite anywhere): E008
SETTINGS_TIMEOUT_LIMIT = 86400.0  # seconds: from settings, longer than a day cannot be meant (E008); over 60 s W004
MAX_TIMEOUT = 60.0  # longer: W004

E001 = Check("gmail_smtp.E001", ERROR, "STARTTLS and implicit TLS are both on")

E002 = Check(
    "gmail_smtp.E002",
    ERROR,
    "neither STARTTLS nor implicit TLS is on for a Gmail host",
    message=_(
        "STARTTLS (%(tls)s) and implicit TLS (%(ssl)s) are both off for the Gmail "
        "host %(host)s, but Gmail requires TLS before signing in and sending."
    ),
    hint=_("Set %(tls)s = True with port 587, or %(ssl)s = True with port 465."),
)

E003 = Check(
    "gmail_smtp.E003",
    ERROR,
    "port 465 with STARTTLS (django-environ's smtps:// trap)",
    message=_(
        "Port 465 (from %(port)s) expects implicit TLS, but STARTTLS is on (%(tls)s), so the connection would hang."
    ),
    hint=_("Set %(ssl)s = True and %(tls)s = False to keep port 465, or set %(port)s = 587 to keep STARTTLS."),
    form_hint=_("Choose implicit TLS in %(security)s to keep port 465, or enter 587 in %(port)s to keep STARTTLS."),
    url_message=_(
        "STARTTLS on port 465 (from %(origin)s) would hang, because django-environ's "
        "smtps:// and smtp+tls:// schemes both mean STARTTLS while port 465 expects "
        "implicit TLS."
    ),
    url_hint=_(
        "Write EMAIL_URL as smtp+ssl://USER:APP_PASSWORD@smtp.gmail.com:465 for "
        "implicit TLS, or smtp+tls://USER:APP_PASSWORD@smtp.gmail.com:587 for STARTTLS."
    ),
)

E004 = Check(
    "gmail_smtp.E004",
    ERROR,
    "port 587 with implicit TLS",
    message=_(
        "Port 587 (from %(port)s) expects STARTTLS, but implicit TLS is on (%(ssl)s), "
        "so the TLS handshake would fail (WRONG_VERSION_NUMBER)."
    ),
    hint=_("Set %(tls)s = True and %(ssl)s = False to keep port 587, or set %(port)s = 465 to keep implicit TLS."),
    form_hint=_("Choose STARTTLS in %(security)s to keep port 587, or enter 465 in %(port)s to keep implicit TLS."),
    url_message=_(
        "Implicit TLS on port 587 (from %(origin)s) would fail (WRONG_VERSION_NUMBER), "
        "because django-environ's smtp+ssl:// scheme means implicit TLS while port 587 "
        "expects STARTTLS."
    ),
    url_hint=_(
        "Write EMAIL_URL as smtp+tls://USER:APP_PASSWORD@smtp.gmail.com:587 for "
        "STARTTLS, or smtp+ssl://USER:APP_PASSWORD@smtp.gmail.com:465 for implicit TLS."
    ),
)

E008 = Check(
    "gmail_smtp.E008",
    ERROR,
    "the timeout is zero or negative, or longer than 300 seconds",
    message=_(
        "The SMTP timeout %(timeout)s s (from %(origin)s) is longer than %(limit)s seconds: a "
        "blocked port or a stalled server would hold the request that long."
    ),
    hint=_("Set %(setting)s to a number of seconds such as 10."),
    option="timeout",
)
E008_NOT_POSITIVE = _(
    "The SMTP timeout %(timeout)s s (from %(origin)s) is not positive, so no connection could be made."
)

E009 = Check("gmail_smtp.E009", ERROR, "EMAIL_URL is not a valid email URL")

E010 = Check(
    "gmail_smtp.E010",
    ERROR,
    "the port or the timeout is not a number, or the port is not between 1 and 65535",
    message=_("The SMTP port %(port)s (from %(origin)s) is not between %(low)s and %(high)s."),
    hint=_("Set %(setting)s to 587 (STARTTLS) or 465 (implicit TLS)."),
    option="port",
)

W002 = Check(
    "gmail_smtp.W002",
    WARNING,
    "the host is not a Gmail server (silent for loopback hosts)",
    message=_(
        "The SMTP host %(host)s (from %(origin)s) is not a Gmail server, so this "
        "backend's Gmail defaults and checks do not fit it."
    ),
    hint=_(
        "Set %(setting)s = 'smtp.gmail.com'; if you use this backend with another "
        "server on purpose, add 'gmail_smtp.W002' to SILENCED_SYSTEM_CHECKS."
    ),
    form_hint=_(
        "Enter smtp.gmail.com in %(setting)s; if you use another server on purpose, add "
        "'gmail_smtp.W002' to SILENCED_SYSTEM_CHECKS in the settings to stop this warning."
    ),
)

W003 = Check(
    "gmail_smtp.W003",
    WARNING,
    "the port is not one of Gmail's",
    message=_(
        "Port %(port)s (from %(origin)s) is not one of Gmail's submission ports, 587 (STARTTLS) and 465 (implicit TLS)."
    ),
    hint=_("Set %(port)s = 587 with %(tls)s = True, or %(port)s = 465 with %(ssl)s = True."),
    form_hint=_("Enter 587 in %(port)s with STARTTLS, or 465 with implicit TLS (%(tls)s)."),
)

W004 = Check(
    "gmail_smtp.W004",
    WARNING,
    "the timeout is longer than 60 seconds",
    message=_(
        "The SMTP timeout %(timeout)s s (from %(origin)s) is longer than 60 seconds, "
        "so a blocked port or a stalled server would hang the request that long."
    ),
    hint=_("Set %(setting)s to 10-30 seconds."),
)
W004_NO_TIMEOUT = _(
    "No SMTP timeout is set (%(origin)s), so a blocked port or a stalled server would hang the request forever."
)

W020 = Check(
    "gmail_smtp.W020",
    WARNING,
    "the host is not a valid host name or IP address",
    message=_(
        "The SMTP host %(host)s (from %(origin)s) is not a host name or an IP address, so no DNS lookup can find it."
    ),
    hint=_(
        "Set %(setting)s to the server's name alone, in letters, digits, hyphens and dots, "
        "for example 'smtp.gmail.com'."
    ),
    option="host",
)

CHECKS = (E001, E002, E003, E004, E008, E009, E010, W002, W003, W004, W020)


def check_tls_on(config: SmtpConfig) -> list[Problem]:
    """E002: Gmail accepts no sign-in and no mail without TLS."""
    if not config.is_gmail or config.use_tls or config.use_ssl:
        return []
    said = {"tls": named(config, "use_tls"), "ssl": named(config, "use_ssl"), "host": quote(config.host)}
    return [E002.problem(said, setting_names(config, tls="use_tls", ssl="use_ssl"))]


def check_tls_before_sign_in(config: SmtpConfig) -> list[Problem]:
    """E002 when there are credentials to send: the form of it the backend refuses to start with."""
    return check_tls_on(config) if config.has_credentials else []


def _mode_on_wrong_port(config: SmtpConfig, check: Check, mode: str) -> Problem:
    """E003/E004: ``mode`` (``use_tls`` or ``use_ssl``) is on, on the port that expects the other.

    The words say where the mistake was made: ``EMAIL_URL`` (django-environ's schemes), the admin's
    form (its fields) or settings.
    """
    said = {"origin": origin_of(config, mode)} | origins(config, port="port", tls="use_tls", ssl="use_ssl")
    fix = setting_names(config, security=mode, port="port", tls="use_tls", ssl="use_ssl")
    from_url = came_from(config, "use_tls", "EMAIL_URL") or came_from(config, "use_ssl", "EMAIL_URL")
    return check.problem(said, fix, form=from_form(config, mode), url=from_url)


def check_port_matches_mode(config: SmtpConfig) -> list[Problem]:
    """E003/E004: Gmail's 465 speaks TLS from the first byte, 587 expects STARTTLS."""
    if not config.is_gmail:
        return []
    if config.port == 465 and config.use_tls:
        return [_mode_on_wrong_port(config, E003, "use_tls")]
    if config.port == 587 and config.use_ssl:
        return [_mode_on_wrong_port(config, E004, "use_ssl")]
    return []


def check_host(config: SmtpConfig) -> list[Problem]:
    """W002: this backend is for Gmail; loopback hosts (the sandbox) are fine."""
    if config.is_gmail or is_loopback(config.host) or not valid_host(config.host):
        return []  # an invalid host name is W020's to report
    said = {"host": quote(config.host), "origin": origin_of(config, "host")}
    return [W002.problem(said, setting_names(config, setting="host"), form=from_form(config, "host"))]


def check_host_syntax(config: SmtpConfig) -> list[Problem]:
    """W020: a host that no DNS lookup can find (a typo, a URL, a space): said before connecting."""
    if valid_host(config.host):
        return []
    said = {"host": quote(config.host), "origin": origin_of(config, "host")}
    return [W020.problem(said, setting_names(config, setting="host"))]


def check_port_range(config: SmtpConfig) -> list[Problem]:
    """E010: a TCP port is a number from 1 to 65535; anything else cannot be connected to."""
    low, high = PORT_RANGE
    if low <= config.port <= high:
        return []
    said = {"port": config.port, "origin": origin_of(config, "port"), "low": low, "high": high}
    return [E010.problem(said, setting_names(config, setting="port"))]


def check_port(config: SmtpConfig) -> list[Problem]:
    """W003: Gmail listens on 587 (STARTTLS) and 465 (implicit TLS); the relay also on 25.

    A port left to the default is not reported: it follows the TLS mode, and E002
    already reports a Gmail host without TLS (whose default port is 25).
    """
    port = config.provenance.get("port")
    if not config.is_gmail or port is None or port.source == SOURCE_DEFAULT or check_port_range(config):
        return []
    relay = is_gmail_relay(config.host)
    if config.port in ((25, 465, 587) if relay else (465, 587)):
        return []
    said = {"port": config.port, "origin": origin_of(config, "port")}
    fix = setting_names(config, port="port", tls="use_tls", ssl="use_ssl")
    return [W003.problem(said, fix, form=from_form(config, "port"))]


def check_timeout(config: SmtpConfig) -> list[Problem]:
    """E008 (zero or negative: no connection possible; not finite, or over the limit) / W004 (none, or over 60 s).

    The limit is 300 s for a value typed in the admin form and a day for settings: Django itself
    accepts any timeout, so a long one in settings is only a warning (W004), not a refusal to start.
    """
    timeout = config.timeout
    fix = setting_names(config, setting="timeout")
    limit = TIMEOUT_LIMIT if from_form(config, "timeout") else SETTINGS_TIMEOUT_LIMIT
    said = {"timeout": "" if timeout is None else f"{timeout:g}", "origin": origin_of(config, "timeout")}
    if timeout is not None and not (0 < timeout <= limit):
        if timeout > 0:  # too long, or not finite
            return [E008.problem(said | {"limit": f"{limit:g}"}, fix)]
        return [E008.problem(said, fix, message=E008_NOT_POSITIVE)]
    if timeout is None:
        return [W004.problem(said, fix, message=W004_NO_TIMEOUT)]
    if timeout > MAX_TIMEOUT:
        return [W004.problem(said, fix)]
    return []
