"""Validation rules over a resolved configuration, written once.

Each rule is a plain function over a resolved :class:`~django_gmail_smtp.conf.SmtpConfig`
(and, for project-level rules, plain setting values) returning :class:`Problem`\\ s.
The system checks, the admin form and ``gmail_check`` all call them, so a
mistake reads the same everywhere: one sentence naming the setting and where its
value came from, and a hint that says what to change. Ids are stable and never
reused (see :data:`CHECK_IDS`).

What callers use (all importable from here):

- :func:`check_config` -- every problem of one resolved configuration;
- :func:`check_senders` -- ``DEFAULT_FROM_EMAIL`` / ``SERVER_EMAIL`` against the account;
- :func:`check_app_settings` -- the ``GMAIL_SMTP`` dict itself;
- :func:`check_deploy_config`, :func:`check_transcript` and :func:`check_email_url_reporting` --
  production-only findings;
- :func:`problem_from_error` -- a :class:`GmailConfigError` raised by ``conf.resolve()``;
- :func:`raise_for_blocking` -- what the backend refuses to start with.

The modules, one topic each, every check declared as a :class:`Check` next to its words:
``problem`` (a finding and its words), ``naming`` (how a setting and a value's origin are named),
``connection`` (TLS, port, host, timeout), ``credentials`` (username, password), ``oauth2``,
``senders`` (From addresses and aliases), ``gmail_smtp_setting`` (the ``GMAIL_SMTP`` dict),
``stored_accounts`` (their ids, the encryption keys), ``deploy`` (production only), ``apply``
(the rules together) and ``ids`` (every id).
"""

from __future__ import annotations

from ..hosts import valid_host
from .apply import BLOCKING_RULES, CONFIG_RULES, check_config, raise_first_error, raise_for_blocking, unsilenced
from .connection import (
    MAX_TIMEOUT,
    PORT_RANGE,
    SETTINGS_TIMEOUT_LIMIT,
    TIMEOUT_LIMIT,
    check_host,
    check_host_syntax,
    check_port,
    check_port_matches_mode,
    check_port_range,
    check_timeout,
    check_tls_before_sign_in,
    check_tls_on,
)
from .credentials import APP_PASSWORDS_PAGE, check_app_password, check_credentials, signs_in_with_password
from .deploy import check_deploy_config, check_email_url_reporting, check_transcript
from .gmail_smtp_setting import check_app_settings
from .ids import CHECK_IDS
from .naming import from_form, setting_name
from .oauth2 import (
    OAUTH_INSTALL_COMMAND,
    check_oauth_credentials,
    check_oauth_library,
    oauth_endpoint_problem,
    oauth_library_available,
    oauth_library_problem,
)
from .problem import ERROR, WARNING, Check, Problem, Rule, problem_from_error, to_error
from .senders import check_default_from_email, check_senders, check_server_email

__all__ = [
    "APP_PASSWORDS_PAGE",
    "BLOCKING_RULES",
    "CHECK_IDS",
    "CONFIG_RULES",
    "ERROR",
    "MAX_TIMEOUT",
    "OAUTH_INSTALL_COMMAND",
    "PORT_RANGE",
    "SETTINGS_TIMEOUT_LIMIT",
    "TIMEOUT_LIMIT",
    "WARNING",
    "Check",
    "Problem",
    "Rule",
    "check_app_password",
    "check_app_settings",
    "check_config",
    "check_credentials",
    "check_default_from_email",
    "check_deploy_config",
    "check_email_url_reporting",
    "check_host",
    "check_host_syntax",
    "check_oauth_credentials",
    "check_oauth_library",
    "check_port",
    "check_port_matches_mode",
    "check_port_range",
    "check_senders",
    "check_server_email",
    "check_timeout",
    "check_tls_before_sign_in",
    "check_tls_on",
    "check_transcript",
    "from_form",
    "oauth_endpoint_problem",
    "oauth_library_available",
    "oauth_library_problem",
    "problem_from_error",
    "raise_first_error",
    "raise_for_blocking",
    "setting_name",
    "signs_in_with_password",
    "to_error",
    "unsilenced",
    "valid_host",
]
