"""System checks: thin wrappers that turn :mod:`rules` findings into Django check messages.

Registered in :meth:`GmailSmtpConfig.ready() <django_gmail_smtp.apps.GmailSmtpConfig.ready>`
with the tags ``gmail_smtp`` and ``mail`` (``manage.py check --tag gmail_smtp``);
the deploy checks also with ``security`` (``manage.py check --deploy``).

Which configurations are checked: every mailer that uses one of this app's backends
(:data:`BACKENDS`: ``EmailBackend``, ``QueuedEmailBackend``, or a subclass of either) --
``EMAIL_BACKEND`` with the ``EMAIL_*`` settings, or on Django 6.1 with ``MAILERS``
each such alias.

:func:`check_mailers` and :func:`check_deploy` never touch the database. Mailers that
use an account stored in the database are left to :func:`check_stored_accounts`,
registered with the tag ``checks.Tags.database`` alone: it runs only with ``manage.py
check --database ALIAS`` (and ``migrate``, which passes its database), queries only when
the accounts' database is among those aliases, and reports the same problems, plus the
stored account's own (E022-E025, E015/E016).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from . import conf, rules
from .app_settings import (
    APP_SETTINGS,
    app_setting,
    configured_gmail_smtp,
    email_url_sources,
    gmail_smtp,
    legacy_setting,
    mailers_enabled,
)
from .exceptions import GmailConfigError
from .rules import Problem

__all__ = [
    "BACKEND",
    "TAG",
    "Mailer",
    "check_deploy",
    "check_gmail_smtp_setting",
    "check_mailers",
    "check_stored_accounts",
    "config_problems",
    "gmail_mailers",
    "register_checks",
    "to_check_messages",
]

TAG = "gmail_smtp"
MAIL_TAG = "mail"  # checks.Tags.mail on Django 6.1; a plain string works on 5.2 too
BACKEND = "django_gmail_smtp.backend.EmailBackend"
QUEUED_BACKEND = "django_gmail_smtp.backend.QueuedEmailBackend"
BACKENDS = (BACKEND, QUEUED_BACKEND, "django_gmail_smtp.queued.QueuedEmailBackend")
"""This app's backends by their dotted paths; subclasses of them count too."""
APP_NAME = "django_gmail_smtp"


@dataclass(frozen=True)
class Mailer:
    """One configured mailer that uses this app's backend."""

    label: str  # "EMAIL_BACKEND", or "MAILERS['default']" on Django 6.1
    alias: str | None = None  # the MAILERS alias; None for EMAIL_BACKEND + EMAIL_* settings
    options: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self) -> conf.SmtpConfig:
        """The resolved configuration; raises :class:`GmailConfigError` like the backend would."""
        from .accounts import account_options  # the models: only for a mailer with a stored account

        return conf.resolve(self.options, alias=self.alias, accounts=account_options)


def _is_ours(backend: Any) -> bool:
    if backend in BACKENDS:
        return True
    if not isinstance(backend, str):
        return False
    try:
        backend_class = import_string(backend)
    except Exception:  # a check must not crash; Django reports a broken BACKEND when it is used
        return False
    from .backend import EmailBackend, QueuedEmailBackend

    return isinstance(backend_class, type) and issubclass(backend_class, (EmailBackend, QueuedEmailBackend))


def gmail_mailers() -> list[Mailer]:
    """The mailers that send through this app's backend, in settings order.

    Reads ``EMAIL_BACKEND`` without Django 6.1's deprecation warning, and never
    reads it at all when ``MAILERS`` is defined.
    """
    if mailers_enabled():
        mailers = getattr(settings, "MAILERS", None) or {}
        return [
            Mailer(f"MAILERS[{alias!r}]", alias, dict(config.get("OPTIONS") or {}))
            for alias, config in mailers.items()
            if isinstance(config, Mapping) and _is_ours(config.get("BACKEND"))
        ]
    is_set, backend = legacy_setting("EMAIL_BACKEND")
    return [Mailer("EMAIL_BACKEND")] if is_set and _is_ours(backend) else []


def config_problems(config: conf.SmtpConfig) -> list[Problem]:
    """Every problem of one resolved configuration, with the project's sender settings."""
    return rules.check_config(config) + rules.check_senders(
        config,
        default_from_email=settings.DEFAULT_FROM_EMAIL,
        server_email=settings.SERVER_EMAIL,
        from_aliases=_app_setting("FROM_ALIASES"),
        admin_mail=bool(settings.ADMINS or settings.MANAGERS),
    )


def to_check_messages(problems: Iterable[Problem], obj: Any = None) -> list[checks.CheckMessage]:
    """Problems as ``checks.Error`` / ``checks.Warning``.

    Message and hint stay lazy, so they are translated when printed.
    """
    return [
        (checks.Error if problem.is_error else checks.Warning)(
            cast(str, problem.message), hint=cast(str, problem.hint), obj=obj, id=problem.id
        )
        for problem in problems
    ]


def _app_setting(name: str) -> Any:
    """A GMAIL_SMTP knob, or its default while GMAIL_SMTP is not a dict (E012 reports that)."""
    try:
        return app_setting(name)
    except GmailConfigError:
        return APP_SETTINGS[name]


def _wanted(app_configs: Sequence[AppConfig] | None) -> bool:
    """Run unless ``manage.py check <app_label> ...`` names other apps only."""
    return app_configs is None or any(config.name == APP_NAME for config in app_configs)


def _uses_stored_account(mailer: Mailer) -> bool:
    return bool(mailer.options.get("account") or _app_setting("ACCOUNT"))


def _checkable_mailers(*, stored: bool) -> list[Mailer]:
    """The mailers whose configuration comes from settings and the environment alone
    (``stored=False``), or those that name a stored account (``stored=True``), which need the
    database to resolve. Nothing is resolved while ``GMAIL_SMTP`` is not a dict (E012 says so).
    """
    try:
        gmail_smtp()
    except GmailConfigError:
        return []
    return [mailer for mailer in gmail_mailers() if _uses_stored_account(mailer) == stored]


def _settings_mailers() -> list[Mailer]:
    """The mailers a plain ``check`` resolves: no stored account, so no query."""
    return _checkable_mailers(stored=False)


def _resolved(mailer: Mailer) -> tuple[conf.SmtpConfig | None, list[Problem]]:
    try:
        return mailer.resolve(), []
    except GmailConfigError as exc:  # E001, E009, E010, E017; a stored account's E022-E025
        config_name = mailer.label if mailer.alias is not None else ""
        return None, [rules.problem_from_error(exc, config_name)]


def _mailer_messages(mailers: Iterable[Mailer]) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for mailer in mailers:
        config, problems = _resolved(mailer)
        if config is not None:
            problems = config_problems(config)
        messages += to_check_messages(problems, obj=mailer.label)
    return messages


def check_gmail_smtp_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E011-E013, E018, E019: the ``GMAIL_SMTP`` setting itself (no database, nothing decrypted)."""
    if not _wanted(app_configs):
        return []
    return to_check_messages(rules.check_app_settings(configured_gmail_smtp()))


def check_mailers(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001-E010, W001-W006 for every mailer that uses this app's backend."""
    if not _wanted(app_configs):
        return []
    return _mailer_messages(_settings_mailers())


def check_stored_accounts(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """The mailers that send with a stored account: E001-E010, W001-W006 as for the others,
    plus the account's own problems (E022-E025; E015/E016 for OAuth2).

    Registered with ``checks.Tags.database`` alone: only ``check --database ALIAS`` (or a
    command that passes its database, such as ``migrate``) runs it, and it queries only when
    the accounts' database is among ``databases``.
    """
    if not _wanted(app_configs) or not databases:
        return []
    from django.db import router

    from .models import GmailAccount

    if router.db_for_read(GmailAccount) not in databases:
        return []
    return _mailer_messages(_checkable_mailers(stored=True))


def _reporter_filter() -> tuple[str, bool]:
    """``DEFAULT_EXCEPTION_REPORTER_FILTER``, and whether it hides passwords inside URLs (ours, or a subclass)."""
    from .reporting import SafeExceptionReporterFilter

    path = str(settings.DEFAULT_EXCEPTION_REPORTER_FILTER)
    try:
        configured = import_string(path)
    except Exception:  # Django reports a broken setting when it needs it
        return path, False
    return path, isinstance(configured, type) and issubclass(configured, SafeExceptionReporterFilter)


def check_deploy(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W007, W008, W010: only with ``manage.py check --deploy``."""
    if not _wanted(app_configs):
        return []
    from .reporting import PATH

    messages = to_check_messages(rules.check_transcript(_app_setting("TRANSCRIPT")))
    reporter_filter, hides = _reporter_filter()
    messages += to_check_messages(
        rules.check_email_url_reporting(
            email_url_sources(), reporter_filter, hides_url_passwords=hides, recommended=PATH
        )
    )
    for mailer in _settings_mailers():
        config, _problems = _resolved(mailer)  # check_mailers reports a failure to resolve
        if config is not None:
            problems = rules.check_deploy_config(config, debug=settings.DEBUG)
            messages += to_check_messages(problems, obj=mailer.label)
    return messages


def register_checks() -> None:
    """Register the checks (called once, from ``AppConfig.ready()``)."""
    checks.register(check_gmail_smtp_setting, TAG, MAIL_TAG)
    checks.register(check_mailers, TAG, MAIL_TAG)
    # Tagged "database" only: a plain check, and check --tag gmail_smtp (which on Django 6.1
    # would pass every database alias to a check carrying that tag), run no query.
    checks.register(check_stored_accounts, checks.Tags.database)
    checks.register(check_deploy, TAG, MAIL_TAG, checks.Tags.security, deploy=True)
