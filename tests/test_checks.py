"""The system checks, through Django's check framework, for both configuration styles.

``legacy``: ``EMAIL_BACKEND`` + ``EMAIL_*`` settings (every Django version).
``mailers``: ``MAILERS`` (Django 6.1+; skipped before).

On Django 6.1 the legacy settings are deprecated: Django warns when a test sets
one (and when pytest-django restores it). Legacy-style tests ignore exactly that
message; the checks themselves always run with every warning turned into an
error (see :func:`ours`), so a warning caused by our code, even that very
message, still fails the test.
"""

from __future__ import annotations

import warnings
from io import StringIO
from typing import Any

import django
import pytest
from django.apps import apps
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from django_gmail_smtp.backend import EmailBackend, QueuedEmailBackend
from django_gmail_smtp.checks import BACKEND, TAG, gmail_mailers
from django_gmail_smtp.conf import LEGACY_SETTINGS
from django_gmail_smtp.models import GmailAccount

NEEDS_MAILERS = pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is new in Django 6.1")
# Django's own warning for the test's use of EMAIL_* settings (only that message).
LEGACY_SETTINGS_USED = pytest.mark.filterwarnings("ignore:The EMAIL_\\w+ setting is deprecated")
STYLES = [
    pytest.param("legacy", id="EMAIL_BACKEND", marks=LEGACY_SETTINGS_USED),
    pytest.param("mailers", id="MAILERS", marks=NEEDS_MAILERS),
]
GOOD = {
    "host": "smtp.gmail.com",
    "port": 587,
    "use_tls": True,
    "username": "me@gmail.com",
    "password": "abcd efgh ijkl mnop",
    "timeout": 10,
}


class Mail:
    """Configures one mailer that uses our backend, in one style, through pytest-django's settings."""

    def __init__(self, settings: Any, style: str) -> None:
        self.settings = settings
        self.style = style
        self.label = "EMAIL_BACKEND" if style == "legacy" else "MAILERS['default']"

    def configure(self, backend: str = BACKEND, **options: Any) -> None:
        if self.style == "mailers":
            self.settings.MAILERS = {"default": {"BACKEND": backend, "OPTIONS": options}}
            return
        self.settings.EMAIL_BACKEND = backend
        for option, value in options.items():
            setattr(self.settings, LEGACY_SETTINGS[option], value)

    def setting(self, option: str) -> str:
        """The setting name a message should name for ``option``."""
        if self.style == "mailers":
            return f"MAILERS['default']['OPTIONS'][{option!r}]"
        return LEGACY_SETTINGS[option]


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """No email configuration from the developer's environment; senders that match GOOD."""
    for variable in ("EMAIL_URL", "GMAIL_SMTP_SSL_CAFILE", "GMAIL_SMTP_TIMEOUT"):
        monkeypatch.delenv(variable, raising=False)
    settings.DEFAULT_FROM_EMAIL = "Site <me@gmail.com>"
    settings.SERVER_EMAIL = "me@gmail.com"
    settings.ADMINS = ["admin@example.com"]


@pytest.fixture(params=STYLES)
def mail(request: pytest.FixtureRequest, settings: Any) -> Mail:
    return Mail(settings, request.param)


def ours(deploy: bool = False, **kwargs: Any) -> list[checks.CheckMessage]:
    """Our messages from Django's check framework (fails on any warning raised meanwhile)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        messages = checks.run_checks(tags=[TAG], include_deployment_checks=deploy, **kwargs)
    assert all(str(message.id).startswith("gmail_smtp.") for message in messages)
    return messages


def only(check_id: str, deploy: bool = False) -> checks.CheckMessage:
    messages = ours(deploy=deploy)
    found = [message for message in messages if message.id == check_id]
    assert len(found) == 1, [str(message) for message in messages]
    return found[0]


def test_backend_is_found_in_each_style(mail: Mail) -> None:
    mail.configure(**GOOD)
    assert [mailer.label for mailer in gmail_mailers()] == [mail.label]


def test_good_configuration_has_no_messages(mail: Mail) -> None:
    mail.configure(**GOOD)
    assert ours(deploy=True) == []
    out = StringIO()
    call_command("check", "--deploy", "--tag", TAG, stdout=out, stderr=StringIO())
    assert "System check identified no issues" in out.getvalue()


@LEGACY_SETTINGS_USED
def test_other_backends_are_not_checked(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    settings.EMAIL_PORT = 465
    settings.EMAIL_USE_TLS = True
    assert ours() == []


@NEEDS_MAILERS
def test_other_mailers_are_not_checked(settings: Any) -> None:
    settings.MAILERS = {
        "default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
        "smtp": {"OPTIONS": {"port": 465, "use_tls": True}},
    }
    assert ours() == []


def test_checks_of_other_apps_only(mail: Mail) -> None:
    mail.configure(**GOOD | {"username": ""})
    assert ours(app_configs=[apps.get_app_config("admin")]) == []
    assert [m.id for m in ours(app_configs=[apps.get_app_config("gmail_smtp")])] == ["gmail_smtp.E005"]


@pytest.mark.django_db
def test_no_database_query(mail: Mail, django_assert_num_queries: Any) -> None:
    """Our checks run no query, whatever ``databases`` holds (Django 6.1 passes every alias)."""
    mail.configure(**GOOD | {"username": "", "port": 465})
    with django_assert_num_queries(0):
        assert len(ours(deploy=True, databases=None)) == 2
        assert len(ours(deploy=True, databases=["default"])) == 2


@pytest.mark.django_db
def test_plain_check_command_runs_no_query(mail: Mail, django_assert_num_queries: Any) -> None:
    """The whole ``manage.py check --deploy``, this app's model checks included."""
    # A backend feature is probed at most once per process: forget it, so the result
    # does not depend on which test ran first.
    connection.features.__dict__.pop("supports_json_field", None)
    mail.configure(**GOOD)
    with django_assert_num_queries(0):
        call_command("check", "--deploy", stdout=StringIO(), stderr=StringIO())


def test_errors_stop_the_check_command(mail: Mail) -> None:
    mail.configure(**GOOD | {"password": ""})
    with pytest.raises(SystemCheckError, match=r"gmail_smtp\.E007"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


# -- one test per id ------------------------------------------------------------------------


def test_e001_tls_and_ssl(mail: Mail) -> None:
    mail.configure(**GOOD | {"use_ssl": True})
    message = only("gmail_smtp.E001")
    assert isinstance(message, checks.Error)
    assert message.obj == mail.label
    assert "mutually exclusive" in message.msg
    assert "Turn one off" in str(message.hint)
    if mail.style == "mailers":
        assert message.msg.startswith("MAILERS['default']: ")


def test_e002_no_tls(mail: Mail) -> None:
    mail.configure(**GOOD | {"use_tls": False})
    message = only("gmail_smtp.E002")
    assert isinstance(message, checks.Error)
    assert mail.setting("use_tls") in message.msg
    assert "'smtp.gmail.com'" in message.msg
    assert "requires TLS" in message.msg
    assert f"{mail.setting('use_tls')} = True with port 587" in str(message.hint)


def test_e003_port_465_with_starttls(mail: Mail) -> None:
    mail.configure(**GOOD | {"port": 465})
    message = only("gmail_smtp.E003")
    assert f"Port 465 (from {mail.setting('port')})" in message.msg
    assert f"STARTTLS is on ({mail.setting('use_tls')})" in message.msg
    assert f"{mail.setting('use_ssl')} = True" in str(message.hint)


def test_e003_email_url_smtps_trap(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_URL", "smtps://me%40gmail.com:abcdefghijklmnop@smtp.gmail.com:465")
    mail.configure()
    assert [m.id for m in ours()] == ["gmail_smtp.E003"]
    message = only("gmail_smtp.E003")
    assert "from EMAIL_URL" in message.msg
    assert "smtps://" in message.msg
    assert "smtp+ssl://" in str(message.hint)
    if mail.style == "mailers":
        assert "MAILERS['default']" in message.msg


def test_email_url_done_right_passes(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_URL", "smtp+ssl://me%40gmail.com:abcd%20efgh%20ijkl%20mnop@smtp.gmail.com:465")
    mail.configure()
    # Done right includes a reporter filter that does not show the URL's password (W010).
    assert [m.id for m in ours(deploy=True)] == ["gmail_smtp.W010"]
    mail.settings.DEFAULT_EXCEPTION_REPORTER_FILTER = "django_gmail_smtp.reporting.SafeExceptionReporterFilter"
    assert ours(deploy=True) == []


def test_e004_port_587_with_implicit_tls(mail: Mail) -> None:
    mail.configure(**GOOD | {"use_tls": False, "use_ssl": True})
    message = only("gmail_smtp.E004")
    assert f"Port 587 (from {mail.setting('port')})" in message.msg
    assert f"implicit TLS is on ({mail.setting('use_ssl')})" in message.msg
    assert f"{mail.setting('port')} = 465" in str(message.hint)


def test_e005_no_username(mail: Mail) -> None:
    mail.configure(**GOOD | {"username": ""})
    message = only("gmail_smtp.E005")
    assert message.msg.startswith(f"{mail.setting('username')} is not set")
    assert "530" in message.msg
    assert f"Set {mail.setting('username')} to the full address" in str(message.hint)


def test_e006_username_not_an_address(mail: Mail) -> None:
    mail.configure(**GOOD | {"username": "me"})
    message = only("gmail_smtp.E006")
    assert f"'me' (from {mail.setting('username')})" in message.msg
    assert "not an e-mail address" in message.msg
    assert "'me@gmail.com'" in str(message.hint)


def test_e007_no_password(mail: Mail) -> None:
    mail.configure(**GOOD | {"password": ""})
    message = only("gmail_smtp.E007")
    assert message.msg.startswith(f"{mail.setting('password')} is not set")
    assert "530" in message.msg
    assert "https://myaccount.google.com/apppasswords" in str(message.hint)


def test_e008_timeout_not_positive(mail: Mail) -> None:
    mail.configure(**GOOD | {"timeout": 0})
    message = only("gmail_smtp.E008")
    assert f"(from {mail.setting('timeout')})" in message.msg
    assert "not positive" in message.msg
    assert f"Set {mail.setting('timeout')}" in str(message.hint)


def test_e009_invalid_email_url(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_URL", "smtp+tls://me%40gmail.com:pw@smtp.gmail.com:port")
    mail.configure()
    message = only("gmail_smtp.E009")
    assert "EMAIL_URL" in message.msg
    assert "not a valid email URL" in message.msg
    assert "smtp+ssl://" in str(message.hint)


def test_e010_port_not_a_number(mail: Mail) -> None:
    mail.configure(**GOOD | {"port": "five-eight-seven"})
    message = only("gmail_smtp.E010")
    assert "'five-eight-seven'" in message.msg
    assert mail.setting("port") in message.msg
    assert "587" in str(message.hint)


def test_e011_unknown_key(mail: Mail, settings: Any) -> None:
    mail.configure(**GOOD)
    settings.GMAIL_SMTP = {"TRANSCIPT": True}
    message = only("gmail_smtp.E011")
    assert message.msg == "GMAIL_SMTP has an unknown key 'TRANSCIPT'; did you mean 'TRANSCRIPT'?"
    assert "Rename 'TRANSCIPT' to 'TRANSCRIPT'" in str(message.hint)


def test_e012_gmail_smtp_not_a_dict(mail: Mail, settings: Any) -> None:
    mail.configure(**GOOD)
    settings.GMAIL_SMTP = [("TRANSCRIPT", True)]
    assert [m.id for m in ours(deploy=True)] == ["gmail_smtp.E012"]
    message = only("gmail_smtp.E012")
    assert "GMAIL_SMTP is a list" in message.msg
    assert "dict" in str(message.hint)


def test_e013_from_aliases_not_a_list(mail: Mail, settings: Any) -> None:
    mail.configure(**GOOD)
    settings.GMAIL_SMTP = {"FROM_ALIASES": "news@example.com"}
    message = only("gmail_smtp.E013")
    assert "GMAIL_SMTP['FROM_ALIASES'] is a str" in message.msg
    assert "['alias@example.com'" in str(message.hint)


def test_w001_not_an_app_password(mail: Mail) -> None:
    secret = "Zq9$Xv7!Wk"
    mail.configure(**GOOD | {"password": secret})
    message = only("gmail_smtp.W001")
    assert isinstance(message, checks.Warning)
    assert mail.setting("password") in message.msg
    assert "app password" in message.msg
    assert "https://myaccount.google.com/apppasswords" in str(message.hint)
    text = f"{message} {message.hint}"
    assert not any(secret[i : i + 3] in text for i in range(len(secret) - 2))


def test_w002_not_a_gmail_host(mail: Mail) -> None:
    mail.configure(**GOOD | {"host": "mail.example.com"})
    message = only("gmail_smtp.W002")
    assert f"'mail.example.com' (from {mail.setting('host')})" in message.msg
    assert "not a Gmail server" in message.msg
    assert "SILENCED_SYSTEM_CHECKS" in str(message.hint)


def test_w002_can_be_silenced(mail: Mail, settings: Any) -> None:
    mail.configure(**GOOD | {"host": "mail.example.com"})
    settings.SILENCED_SYSTEM_CHECKS = ["gmail_smtp.W002"]
    out = StringIO()
    call_command("check", "--tag", TAG, stdout=out, stderr=out)
    assert "W002" not in out.getvalue()
    assert "1 silenced" in out.getvalue()


def test_w002_silent_for_the_sandbox(mail: Mail) -> None:
    mail.configure(host="127.0.0.1", port=2525, username="me@gmail.com", password="pw", use_tls=True)
    assert ours() == []


def test_w003_unusual_port(mail: Mail) -> None:
    mail.configure(**GOOD | {"port": 2525})
    message = only("gmail_smtp.W003")
    assert f"Port 2525 (from {mail.setting('port')})" in message.msg
    assert f"{mail.setting('port')} = 587" in str(message.hint)


def test_w004_timeout_too_long(mail: Mail) -> None:
    mail.configure(**GOOD | {"timeout": 300})
    message = only("gmail_smtp.W004")
    assert f"300 s (from {mail.setting('timeout')})" in message.msg
    assert f"Set {mail.setting('timeout')} to 10-30 seconds" in str(message.hint)


def test_w005_default_from_email(mail: Mail, settings: Any) -> None:
    mail.configure(**GOOD)
    settings.DEFAULT_FROM_EMAIL = "noreply@example.com"
    message = only("gmail_smtp.W005")
    assert "DEFAULT_FROM_EMAIL 'noreply@example.com'" in message.msg
    assert f"'me@gmail.com' (from {mail.setting('username')})" in message.msg
    assert "rewrite" in message.msg
    assert "GMAIL_SMTP['FROM_ALIASES']" in str(message.hint)
    settings.GMAIL_SMTP = {"FROM_ALIASES": ["noreply@example.com"]}
    assert ours() == []


def test_w006_server_email(mail: Mail, settings: Any) -> None:
    mail.configure(**GOOD)
    settings.SERVER_EMAIL = "root@localhost"
    message = only("gmail_smtp.W006")
    assert "SERVER_EMAIL 'root@localhost'" in message.msg
    assert "ADMINS" in message.msg
    assert "SERVER_EMAIL" in str(message.hint)
    settings.ADMINS = []
    settings.MANAGERS = []
    assert ours() == []


def test_w007_transcript_in_production(mail: Mail, settings: Any) -> None:
    mail.configure(**GOOD)
    settings.GMAIL_SMTP = {"TRANSCRIPT": True}
    assert ours() == []  # a deploy check only
    message = only("gmail_smtp.W007", deploy=True)
    assert "GMAIL_SMTP['TRANSCRIPT'] is on" in message.msg
    assert "False" in str(message.hint)


def test_w008_sandbox_in_production(mail: Mail, settings: Any) -> None:
    mail.configure(host="127.0.0.1", port=2525, username="me@gmail.com", password="pw", use_tls=True)
    settings.DEBUG = False
    assert ours() == []  # a deploy check only
    message = only("gmail_smtp.W008", deploy=True)
    assert f"'127.0.0.1' (from {mail.setting('host')})" in message.msg
    assert "DEBUG is False" in message.msg
    assert f"{mail.setting('host')} = 'smtp.gmail.com'" in str(message.hint)
    out = StringIO()
    call_command("check", "--deploy", "--tag", TAG, stdout=out, stderr=out)
    assert "gmail_smtp.W008" in out.getvalue()
    settings.DEBUG = True
    assert ours(deploy=True) == []


# -- several mailers (Django 6.1) -------------------------------------------------------------


@NEEDS_MAILERS
def test_each_message_names_its_mailer(settings: Any) -> None:
    settings.MAILERS = {
        "default": {"BACKEND": BACKEND, "OPTIONS": GOOD | {"port": 465}},
        "bulk": {"BACKEND": BACKEND, "OPTIONS": GOOD | {"password": "", "timeout": 120}},
        "broken": {"BACKEND": BACKEND, "OPTIONS": {"port": "x"}},
        "console": {"BACKEND": "django.core.mail.backends.console.EmailBackend"},
    }
    found = {(m.obj, m.id) for m in ours()}
    assert found == {
        ("MAILERS['default']", "gmail_smtp.E003"),
        ("MAILERS['bulk']", "gmail_smtp.E007"),
        ("MAILERS['bulk']", "gmail_smtp.W004"),
        ("MAILERS['broken']", "gmail_smtp.E010"),
    }
    for message in ours():
        assert str(message.obj) in str(message.msg), message.msg


@NEEDS_MAILERS
@pytest.mark.django_db
def test_mailer_with_a_stored_account_is_left_to_the_database_check(
    settings: Any, django_assert_num_queries: Any
) -> None:
    settings.MAILERS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"account": "main"}}}
    with django_assert_num_queries(0):
        assert [m for m in ours() if m.obj is not None] == []


# -- every backend of this app ----------------------------------------------------------------


class QueuedSubclass(QueuedEmailBackend):
    """A project's own subclass of the queued backend."""


@pytest.mark.parametrize(
    "backend",
    [
        "django_gmail_smtp.backend.QueuedEmailBackend",
        "django_gmail_smtp.queued.QueuedEmailBackend",
        "tests.test_checks.QueuedSubclass",
        "tests.test_checks.SMTPSubclass",
    ],
)
def test_every_backend_of_this_app_is_checked(mail: Mail, backend: str) -> None:
    """The queued backend (what the README recommends for background sending) and subclasses:
    a wrong configuration is reported, as for EmailBackend."""
    mail.configure(backend, **GOOD | {"port": 465})
    assert [mailer.label for mailer in gmail_mailers()] == [mail.label]
    message = only("gmail_smtp.E003")
    assert message.obj == mail.label


class SMTPSubclass(EmailBackend):
    """A project's own subclass of the SMTP backend."""


# -- mailers with a stored account: the database-tagged check ---------------------------------


def database_messages() -> list[checks.CheckMessage]:
    """What ``check --database default`` adds: our messages of every registered check."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        messages = checks.run_checks(databases=["default"])
    return [message for message in messages if str(message.id).startswith("gmail_smtp.")]


def configure_stored_account(mail: Mail, settings: Any) -> None:
    """The mailer sends with the stored account "main": OPTIONS["account"], or GMAIL_SMTP["ACCOUNT"]."""
    if mail.style == "mailers":
        mail.configure(account="main")
    else:
        mail.configure()
        settings.GMAIL_SMTP = {"ACCOUNT": "main"}


def stored_account(**fields: Any) -> GmailAccount:
    account = GmailAccount(name="main", username="me@gmail.com", **fields)
    account.set_password("abcd efgh ijkl mnop")
    account.save()
    return account


@pytest.mark.django_db
def test_stored_account_mailers_are_checked_with_database(
    mail: Mail, settings: Any, django_assert_num_queries: Any
) -> None:
    """Registered with Tags.database: ``check --database default`` checks the stored account's
    mailer (E022-E025 are its own ids); a plain check still runs no query."""
    configure_stored_account(mail, settings)
    with django_assert_num_queries(0):
        assert ours() == []
        assert [m for m in checks.run_checks() if str(m.id).startswith("gmail_smtp.")] == []
    [missing] = database_messages()
    assert (missing.id, missing.obj) == ("gmail_smtp.E022", mail.label)
    assert "'main'" in missing.msg
    assert "stored accounts: none" in str(missing.hint)
    with pytest.raises(SystemCheckError, match=r"gmail_smtp\.E022"):
        call_command("check", "--database", "default", stdout=StringIO(), stderr=StringIO())
    account = stored_account(enabled=False)
    assert [m.id for m in database_messages()] == ["gmail_smtp.E023"]
    account.enabled = True
    account.encrypted_secret = ""
    account.save()
    assert [m.id for m in database_messages()] == ["gmail_smtp.E024"]
    account.set_password("abcd efgh ijkl mnop")
    account.save()
    assert database_messages() == []
    account.port = 465  # changed without entering the secret again: it stays bound to 587
    account.save()
    assert [m.id for m in database_messages()] == ["gmail_smtp.E020"]
    account.set_password("abcd efgh ijkl mnop")
    account.save()  # STARTTLS on 465: the configuration's own rules apply as for settings
    [wrong_port] = database_messages()
    assert (wrong_port.id, wrong_port.obj) == ("gmail_smtp.E003", mail.label)
    assert "stored account 'main'" in wrong_port.msg
    account.port = 587
    account.set_password("abcd efgh ijkl mnop")
    account.save()
    assert database_messages() == []
    settings.SECRET_KEY = "another key: the stored secret no longer decrypts"
    assert [m.id for m in database_messages()] == ["gmail_smtp.E025"]


@pytest.mark.django_db
def test_stored_oauth2_account_without_client_is_e016(mail: Mail, settings: Any) -> None:
    """A stored OAuth2 account's missing parts are the OAuth2 rules' E016/E015, in their words."""
    configure_stored_account(mail, settings)
    GmailAccount.objects.create(name="main", username="me@gmail.com", auth_method=GmailAccount.AuthMethod.OAUTH2)
    [message] = database_messages()
    assert message.id == "gmail_smtp.E016"
    assert "The stored Gmail account 'main' signs in with OAuth2 but has no client id and client secret." in message.msg
