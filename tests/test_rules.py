"""The validation rules as pure functions over a resolved configuration."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from django.utils.functional import Promise

from django_gmail_smtp import conf, rules
from django_gmail_smtp.conf import LEGACY_SETTINGS, SmtpConfig, Value
from django_gmail_smtp.exceptions import GmailConfigError
from django_gmail_smtp.rules import connection
from django_gmail_smtp.rules import ids as ids_module

APP_PASSWORD = "abcdefghijklmnop"
DOCS = Path(__file__).resolve().parent.parent / "README.md"  # the table of every check id


def make(alias: str | None = None, origins: dict[str, Value] | None = None, **values: Any) -> SmtpConfig:
    """A configuration as if every value came from settings (or from MAILERS OPTIONS)."""
    fields: dict[str, Any] = {
        "host": "smtp.gmail.com",
        "port": 587,
        "username": "me@gmail.com",
        "password": APP_PASSWORD,
        "use_tls": True,
        "use_ssl": False,
        "timeout": 10.0,
    }
    fields.update(values)
    provenance = {}
    for option in fields:
        if alias is None:
            setting = LEGACY_SETTINGS.get(option, f"GMAIL_SMTP[{option.upper()!r}]")
            provenance[option] = Value(conf.SOURCE_SETTINGS, setting)
        else:
            provenance[option] = Value(conf.SOURCE_OPTIONS, f"MAILERS[{alias!r}]['OPTIONS'][{option!r}]")
    provenance.update(origins or {})
    return SmtpConfig(alias=alias, provenance=provenance, **fields)


def only(problems: list[rules.Problem], check_id: str) -> rules.Problem:
    found = [problem for problem in problems if problem.id == check_id]
    assert len(found) == 1, [(p.id, str(p.message)) for p in problems]
    return found[0]


def ids(problems: list[rules.Problem]) -> list[str]:
    return [problem.id for problem in problems]


DEFAULT = Value(conf.SOURCE_DEFAULT, "Gmail default")
FROM_URL = Value(conf.SOURCE_ENVIRONMENT, "EMAIL_URL")


def test_good_configuration_has_no_problems() -> None:
    assert rules.check_config(make()) == []
    assert rules.check_config(make(port=465, use_tls=False, use_ssl=True)) == []
    assert rules.check_config(make(password="abcd efgh ijkl mnop")) == []


def test_messages_are_lazy_translatable_text() -> None:
    problem = only(rules.check_config(make(username="")), "gmail_smtp.E005")
    assert isinstance(problem.message, Promise)
    assert isinstance(problem.hint, Promise)


def test_e002_not_for_other_hosts() -> None:
    assert "gmail_smtp.E002" not in ids(rules.check_config(make(host="127.0.0.1", use_tls=False)))


def test_e002_blocks_sending_only_with_credentials() -> None:
    with pytest.raises(GmailConfigError) as caught:
        rules.raise_for_blocking(make(use_tls=False))
    assert caught.value.check_id == "gmail_smtp.E002"
    rules.raise_for_blocking(make(use_tls=False, username="", password=""))


@pytest.mark.parametrize(
    ("values", "check_id", "said", "fix"),
    [
        (
            {"use_tls": False},
            "gmail_smtp.E002",
            ["EMAIL_USE_TLS", "EMAIL_USE_SSL", "'smtp.gmail.com'"],
            ["EMAIL_USE_TLS = True with port 587", "EMAIL_USE_SSL = True with port 465"],
        ),
        (
            {"port": 465},
            "gmail_smtp.E003",
            ["Port 465 (from EMAIL_PORT)", "STARTTLS is on (EMAIL_USE_TLS)"],
            ["EMAIL_USE_SSL = True", "EMAIL_PORT = 587"],
        ),
        (  # django-environ's smtps:// trap
            {"port": 465, "origins": {"port": FROM_URL, "use_tls": FROM_URL, "use_ssl": FROM_URL}},
            "gmail_smtp.E003",
            ["from EMAIL_URL", "smtps://"],
            ["smtp+ssl://"],
        ),
        (
            {"use_tls": False, "use_ssl": True},
            "gmail_smtp.E004",
            ["Port 587 (from EMAIL_PORT)", "implicit TLS is on (EMAIL_USE_SSL)"],
            ["EMAIL_USE_TLS = True", "EMAIL_PORT = 465"],
        ),
        (
            {"use_tls": False, "use_ssl": True, "origins": {"use_tls": FROM_URL, "use_ssl": FROM_URL}},
            "gmail_smtp.E004",
            ["smtp+ssl://"],
            ["smtp+tls://"],
        ),
        (
            {"username": ""},
            "gmail_smtp.E005",
            ["EMAIL_HOST_USER is not set", "530"],
            ["Set EMAIL_HOST_USER to the full address"],
        ),
        (
            {"username": "john"},
            "gmail_smtp.E006",
            ["'john' (from EMAIL_HOST_USER)", "not an e-mail address"],
            ["'john@gmail.com'"],
        ),
        (
            {"password": ""},
            "gmail_smtp.E007",
            ["EMAIL_HOST_PASSWORD is not set", "530"],
            ["https://myaccount.google.com/apppasswords", "EMAIL_HOST_PASSWORD"],
        ),
        ({"password": "hunter2", "origins": {"password": FROM_URL}}, "gmail_smtp.W001", ["EMAIL_URL"], ["%20"]),
        (
            {"host": "mail.example.com"},
            "gmail_smtp.W002",
            ["'mail.example.com' (from EMAIL_HOST)"],
            ["EMAIL_HOST = 'smtp.gmail.com'", "SILENCED_SYSTEM_CHECKS"],
        ),
        ({"port": 2525}, "gmail_smtp.W003", ["Port 2525 (from EMAIL_PORT)"], ["EMAIL_PORT = 587"]),
    ],
)
def test_a_problem_names_the_setting_and_the_fix(
    values: dict[str, Any], check_id: str, said: list[str], fix: list[str]
) -> None:
    problem = only(rules.check_config(make(**values)), check_id)
    assert problem.is_error is check_id.startswith("gmail_smtp.E")
    assert [words for words in said if words not in str(problem.message)] == [], str(problem.message)
    assert [words for words in fix if words not in str(problem.hint)] == [], str(problem.hint)


def test_e003_blocks_sending() -> None:
    with pytest.raises(GmailConfigError) as caught:
        rules.raise_for_blocking(make(port=465))
    assert caught.value.check_id == "gmail_smtp.E003"


OAUTH2 = {
    "auth_method": conf.AUTH_OAUTH2,
    "oauth_client_id": "1234-abc.apps.googleusercontent.com",
    "oauth_client_secret": "GOCSPX-not-a-real-secret",
    "oauth_refresh_token": "1//not-a-real-token",
}


def test_oauth2_needs_no_password() -> None:
    """A configuration that signs in with OAuth2: no E007 (no password) and no W001 (not an
    app password); a password set anyway is W009 (ignored)."""
    assert ids(rules.check_config(make(password="", **OAUTH2))) == []
    assert ids(rules.check_config(make(password="hunter2", **OAUTH2))) == ["gmail_smtp.W009"]
    assert ids(rules.check_config(make(password=""))) == ["gmail_smtp.E007"]
    assert ids(rules.check_config(make(password="hunter2"))) == ["gmail_smtp.W001"]


def test_workspace_relay_may_use_an_ip_allowlist() -> None:
    relay = "smtp-relay.gmail.com"
    assert ids(rules.check_config(make(host=relay, username="", password=""))) == []
    assert ids(rules.check_config(make(host=relay, password=""))) == ["gmail_smtp.E007"]
    assert ids(rules.check_config(make(host=relay, port=25))) == []


def test_credentials_not_checked_for_other_hosts() -> None:
    assert ids(rules.check_config(make(host="localhost", port=2525, username="", password=""))) == []


def test_w001_not_an_app_password_and_never_shown() -> None:
    secret = "Xq7#Zr9!wK"
    problem = only(rules.check_config(make(password=secret)), "gmail_smtp.W001")
    assert not problem.is_error
    text = f"{problem.message} {problem.hint}"
    assert "EMAIL_HOST_PASSWORD" in str(problem.message)
    assert "app password" in str(problem.message)
    assert "https://myaccount.google.com/apppasswords" in str(problem.hint)
    assert not any(secret[i : i + 3] in text for i in range(len(secret) - 2))


def test_w001_accepts_app_password_with_spaces() -> None:
    for password in ("abcd efgh ijkl mnop", "abcd\u00a0efgh\u00a0ijkl\u00a0mnop", "ABCDEFGHIJKLMNOP"):
        assert rules.check_config(make(password=password)) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "sandbox.localhost"])
def test_w002_silent_for_loopback(host: str) -> None:
    assert rules.check_config(make(host=host, port=2525, use_tls=False)) == []


def test_w003_not_for_a_default_port() -> None:
    config = make(use_tls=False, port=25, origins={"port": DEFAULT})
    assert ids(rules.check_config(config)) == ["gmail_smtp.E002"]


def test_e008_timeout_not_positive() -> None:
    for timeout in (0.0, -1.0):
        problem = only(rules.check_config(make(timeout=timeout)), "gmail_smtp.E008")
        assert "(from EMAIL_TIMEOUT)" in str(problem.message)
        assert "not positive" in str(problem.message)
        assert "Set EMAIL_TIMEOUT" in str(problem.hint)


def test_w004_timeout_too_long() -> None:
    problem = only(rules.check_config(make(timeout=120.0)), "gmail_smtp.W004")
    assert "120 s (from EMAIL_TIMEOUT)" in str(problem.message)
    assert "60 seconds" in str(problem.message)
    assert "EMAIL_TIMEOUT to 10-30 seconds" in str(problem.hint)
    assert only(rules.check_config(make(timeout=None)), "gmail_smtp.W004")
    assert rules.check_config(make(timeout=60.0)) == []


def test_mailers_alias_is_named_in_every_message() -> None:
    config = make(
        alias="bulk",
        username="",
        password="",
        port=2525,
        timeout=120.0,
        origins={"timeout": Value(conf.SOURCE_ENVIRONMENT, "GMAIL_SMTP_TIMEOUT")},
    )
    problems = rules.check_config(config)
    assert ids(problems) == ["gmail_smtp.E005", "gmail_smtp.E007", "gmail_smtp.W003", "gmail_smtp.W004"]
    for problem in problems:
        assert "MAILERS['bulk']" in str(problem.message)
        assert "MAILERS['bulk']['OPTIONS']" in str(problem.hint)
    assert "GMAIL_SMTP_TIMEOUT, for MAILERS['bulk']" in str(problems[-1].message)


def test_e001_from_resolve() -> None:
    error = GmailConfigError("both on", hint="turn one off", check_id="gmail_smtp.E001")
    problem = rules.problem_from_error(error, "MAILERS['bulk']")
    assert (problem.id, problem.level, str(problem.hint)) == ("gmail_smtp.E001", rules.ERROR, "turn one off")
    assert str(problem.message) == "MAILERS['bulk']: both on"


def test_e009_invalid_email_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_URL", "gmail://me:pw@smtp.gmail.com:587")
    with pytest.raises(GmailConfigError) as caught:
        conf.resolve()
    problem = rules.problem_from_error(caught.value)
    assert problem.id == "gmail_smtp.E009"
    assert "EMAIL_URL" in str(problem.message)
    assert "smtp+tls://" in str(problem.hint)


def test_e010_port_not_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMAIL_URL", raising=False)
    with pytest.raises(GmailConfigError) as caught:
        conf.resolve({"port": "abc"})
    problem = rules.problem_from_error(caught.value)
    assert problem.id == "gmail_smtp.E010"
    assert "not a number" in str(problem.message)


def test_w005_default_from_email_is_not_the_account() -> None:
    problems = rules.check_senders(make(), default_from_email="webmaster@localhost", server_email="me@gmail.com")
    problem = only(problems, "gmail_smtp.W005")
    assert "DEFAULT_FROM_EMAIL 'webmaster@localhost'" in str(problem.message)
    assert "'me@gmail.com' (from EMAIL_HOST_USER)" in str(problem.message)
    assert "rewrite" in str(problem.message)
    assert "GMAIL_SMTP['FROM_ALIASES']" in str(problem.hint)
    assert "Send mail as" in str(problem.hint)
    assert "Reply-To" in str(problem.hint)


def test_w005_accepts_the_account_and_declared_aliases() -> None:
    config = make()
    for sender, aliases in (
        ("Site <ME@gmail.com>", ()),
        ("news@example.com", ["News <news@example.com>"]),
        ("news@example.com", ("NEWS@example.com",)),
    ):
        assert rules.check_default_from_email(config, sender, aliases) == []


def test_w006_server_email_only_with_admins() -> None:
    problem = only(
        rules.check_senders(make(), default_from_email="me@gmail.com", server_email="root@localhost"),
        "gmail_smtp.W006",
    )
    assert "SERVER_EMAIL 'root@localhost'" in str(problem.message)
    assert "ADMINS" in str(problem.message)
    assert "SERVER_EMAIL" in str(problem.hint)
    assert (
        rules.check_senders(make(), default_from_email="me@gmail.com", server_email="root@localhost", admin_mail=False)
        == []
    )


def test_senders_not_checked_without_a_usable_account() -> None:
    for config in (make(username=""), make(username="john"), make(host="localhost")):
        assert rules.check_senders(config, default_from_email="x@y.com", server_email="x@y.com") == []


def test_e011_unknown_key_suggests_the_known_one() -> None:
    problem = only(rules.check_app_settings({"TRANSCIPT": True}), "gmail_smtp.E011")
    assert str(problem.message) == "GMAIL_SMTP has an unknown key 'TRANSCIPT'; did you mean 'TRANSCRIPT'?"
    assert "'TRANSCRIPT'" in str(problem.hint)
    problem = only(rules.check_app_settings({"from_aliases": []}), "gmail_smtp.E011")
    assert "did you mean 'FROM_ALIASES'?" in str(problem.message)
    problem = only(rules.check_app_settings({"COLOUR": "red"}), "gmail_smtp.E011")
    assert "did you mean" not in str(problem.message)
    assert "TRANSCRIPT" in str(problem.hint)


def test_known_app_settings_pass() -> None:
    assert rules.check_app_settings(None) == []
    assert rules.check_app_settings({key: value for key, value in conf.APP_SETTINGS.items()}) == []


def test_e012_gmail_smtp_not_a_dict() -> None:
    problem = only(rules.check_app_settings(["TRANSCRIPT"]), "gmail_smtp.E012")
    assert "GMAIL_SMTP is a list" in str(problem.message)
    assert "GMAIL_SMTP = {" in str(problem.hint)


def test_e013_from_aliases_must_be_a_list_of_addresses() -> None:
    problem = only(rules.check_app_settings({"FROM_ALIASES": "news@example.com"}), "gmail_smtp.E013")
    assert "GMAIL_SMTP['FROM_ALIASES'] is a str" in str(problem.message)
    assert "['alias@example.com'" in str(problem.hint)
    problem = only(rules.check_app_settings({"FROM_ALIASES": ["news@example.com", "news"]}), "gmail_smtp.E013")
    assert "contains 'news'" in str(problem.message)


def test_w007_transcript() -> None:
    assert rules.check_transcript(False) == []
    problem = only(rules.check_transcript(True), "gmail_smtp.W007")
    assert "GMAIL_SMTP['TRANSCRIPT'] is on" in str(problem.message)
    assert "GMAIL_SMTP['TRANSCRIPT'] = False" in str(problem.hint)


def test_w008_loopback_host_in_production() -> None:
    sandbox = make(host="127.0.0.1", port=2525, use_tls=False)
    problem = only(rules.check_deploy_config(sandbox, debug=False), "gmail_smtp.W008")
    assert "'127.0.0.1' (from EMAIL_HOST)" in str(problem.message)
    assert "DEBUG is False" in str(problem.message)
    assert "EMAIL_HOST = 'smtp.gmail.com'" in str(problem.hint)
    assert rules.check_deploy_config(sandbox, debug=True) == []
    assert rules.check_deploy_config(make(), debug=False) == []


def test_every_id_is_catalogued_and_documented() -> None:
    assert all(re.fullmatch(r"gmail_smtp\.[EW]0\d\d", check_id) for check_id in rules.CHECK_IDS)
    docs = DOCS.read_text(encoding="utf-8")
    for check_id in rules.CHECK_IDS:
        assert f"`{check_id}`" in docs, check_id
    documented = set(re.findall(r"gmail_smtp\.[EW]\d{3}", docs))
    assert documented == set(rules.CHECK_IDS)


# -- limits shared by the checks, gmail_check and the admin form (#14) -----------------------


@pytest.mark.parametrize("port", [0, 65536, 99999999999999999999])
def test_e010_port_out_of_range(port: int) -> None:
    problem = only(rules.check_config(make(port=port)), "gmail_smtp.E010")
    assert problem.is_error
    assert "between 1 and 65535" in str(problem.message)
    assert problem.option == "port"
    assert "gmail_smtp.W003" not in ids(rules.check_config(make(port=port)))  # said once


@pytest.mark.parametrize("timeout", [86400.5, 1e300, float("inf"), float("nan")])
def test_e008_timeout_too_long_or_not_finite(timeout: float) -> None:
    problem = only(rules.check_config(make(timeout=timeout)), "gmail_smtp.E008")
    assert problem.option == "timeout"
    assert "gmail_smtp.E008" not in ids(rules.check_config(make(timeout=86400.0)))


def test_a_long_timeout_in_settings_is_a_warning_not_an_error() -> None:
    # Django accepts any timeout: 600 s in settings must not stop runserver, only warn (W004).
    problems = rules.check_config(make(timeout=600.0))
    assert "gmail_smtp.E008" not in ids(problems)
    assert "gmail_smtp.W004" in ids(problems)


def test_the_admin_form_caps_the_timeout_at_300_seconds() -> None:
    form = {"timeout": Value(conf.SOURCE_FORM, "timeout")}
    assert rules.TIMEOUT_LIMIT == 300.0
    only(rules.check_config(make(origins=form, timeout=300.5)), "gmail_smtp.E008")
    assert "gmail_smtp.E008" not in ids(rules.check_config(make(origins=form, timeout=300.0)))


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        ("smtp.gmail.com", True),
        ("smtp.gmail.com.", True),
        ("127.0.0.1", True),
        ("[::1]", True),
        ("メール.example.jp", True),
        ("https://smtp.gmail.com", False),
        ("smtp.gmail.com:587", False),
        ("smtp gmail.com", False),
        ("-smtp.gmail.com", False),
        ("", False),
        ("a" * 64 + ".com", False),
    ],
)
def test_w020_host_syntax(host: str, valid: bool) -> None:
    assert rules.valid_host(host) is valid
    found = ids(rules.check_config(make(host=host)))
    assert ("gmail_smtp.W020" in found) is not valid
    if not valid:
        assert "gmail_smtp.W002" not in found  # the host is reported once


def test_messages_name_the_form_fields_for_a_configuration_typed_in_the_admin() -> None:
    form = {
        option: Value(conf.SOURCE_FORM, f"the “{label}” field")
        for option, label in (("port", "Port"), ("use_tls", "Security"), ("use_ssl", "Security"), ("host", "Host"))
    }
    texts = [
        f"{p.message} {p.hint}"
        for config in (make(port=465, origins=form), make(host="mail.example.com", port=2525, origins=form))
        for p in rules.check_config(config)
    ]
    assert texts
    for text in texts:
        assert "EMAIL_" not in text
        assert "= True" not in text
        assert "“Port”" in text or "“Host”" in text
    assert rules.setting_name(make(origins=form), "port") == "the “Port” field"
    assert rules.setting_name(make(), "port") == "EMAIL_PORT"


def test_silenced_ids_are_left_out_for_gmail_check_and_the_admin(settings: Any) -> None:
    problems = rules.check_config(make(host="mail.example.com"))
    assert "gmail_smtp.W002" in ids(problems)
    settings.SILENCED_SYSTEM_CHECKS = ["gmail_smtp.W002"]
    assert "gmail_smtp.W002" not in ids(rules.unsilenced(problems))


# -- the rules package: every check declared once, next to its words (#17) --------------------


def _rule_modules() -> list[Any]:
    package = Path(rules.__file__).parent
    return [importlib.import_module(f"{rules.__name__}.{path.stem}") for path in sorted(package.glob("[!_]*.py"))]


def test_every_check_is_declared_once_and_catalogued() -> None:
    declaring = []
    for module in _rule_modules():
        declared = {value.id for value in vars(module).values() if isinstance(value, rules.Check)}
        listed = [check.id for check in getattr(module, "CHECKS", ())]
        assert sorted(declared) == sorted(listed), f"{module.__name__}: list every Check it declares in CHECKS"
        if listed:
            declaring.append(module)
    assert sorted(declaring, key=lambda m: m.__name__) == sorted(ids_module.MODULES, key=lambda m: m.__name__)
    every = [check.id for module in ids_module.MODULES for check in module.CHECKS]
    assert len(every) == len(set(every)), "an id is declared twice"
    assert list(rules.CHECK_IDS) == sorted(every)
    for check in ids_module.ALL_CHECKS:
        assert check.level == (rules.ERROR if check.id.startswith("gmail_smtp.E") else rules.WARNING), check.id


@pytest.mark.parametrize(
    ("values", "check_id", "variant"),
    [
        ({"port": 465}, "gmail_smtp.E003", "settings"),
        ({"port": 465, "origins": {"use_tls": FROM_URL}}, "gmail_smtp.E003", "url"),
        (
            {"port": 465, "origins": {"use_tls": Value(conf.SOURCE_FORM, "the “Security” field")}},
            "gmail_smtp.E003",
            "form",
        ),
        ({"use_tls": False, "use_ssl": True}, "gmail_smtp.E004", "settings"),
        ({"use_tls": False, "use_ssl": True, "origins": {"use_ssl": FROM_URL}}, "gmail_smtp.E004", "url"),
        (
            {
                "use_tls": False,
                "use_ssl": True,
                "origins": {"use_ssl": Value(conf.SOURCE_FORM, "the “Security” field")},
            },
            "gmail_smtp.E004",
            "form",
        ),
    ],
)
def test_e003_e004_word_where_the_mistake_was_made(values: dict[str, Any], check_id: str, variant: str) -> None:
    """One logic for both ids; each keeps its own sentences (whole, for the translators)."""
    problem = only(rules.check_config(make(**values)), check_id)
    check = {"gmail_smtp.E003": connection.E003, "gmail_smtp.E004": connection.E004}[check_id]
    message = check.url_message if variant == "url" else check.message
    hint = {"url": check.url_hint, "form": check.form_hint, "settings": check.hint}[variant]
    assert str(problem.message).startswith(str(message).split("%(", 1)[0])
    assert str(problem.hint).startswith(str(hint).split("%(", 1)[0])
    assert "%(" not in f"{problem.message} {problem.hint}"
    if variant == "form":
        assert "the “Security” field" in str(problem.hint)


def test_e014_when_the_oauth_extra_is_missing() -> None:
    config = make(password="", **OAUTH2)
    assert rules.check_oauth_library(config) == []  # installed here (the dev extra)
    problem = only(rules.check_oauth_library(config, available=lambda: False), "gmail_smtp.E014")
    assert "(GMAIL_SMTP['AUTH_METHOD'])" in str(problem.message)
    assert 'pip install "django-gmail-smtp[oauth]"' in str(problem.hint)
    assert "configured" not in str(rules.oauth_library_problem().message)  # no configuration involved
