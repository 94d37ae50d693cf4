"""The resolver: precedence, Gmail defaults, provenance, the environment."""

import django
import pytest

from django_gmail_smtp import conf
from django_gmail_smtp.exceptions import GmailConfigError

LEGACY = pytest.mark.filterwarnings("ignore:The EMAIL_\\w+ setting is deprecated")


def test_no_configuration_means_gmail_starttls_587():
    config = conf.resolve({})
    assert (config.host, config.port, config.security) == ("smtp.gmail.com", 587, "starttls")
    assert config.timeout == 10.0
    assert config.provenance["host"].source == "default"


@pytest.mark.parametrize(
    ("options", "port", "security"),
    [
        ({"port": 465}, 465, "ssl"),
        ({"port": 587}, 587, "starttls"),
        ({"use_ssl": True}, 465, "ssl"),
        ({"use_tls": True}, 587, "starttls"),
        ({"host": "smtp.googlemail.com", "port": 465}, 465, "ssl"),
    ],
)
def test_gmail_host_infers_port_and_mode(options, port, security):
    config = conf.resolve(options)
    assert (config.port, config.security) == (port, security)


@LEGACY
def test_other_hosts_get_djangos_defaults(settings):
    settings.EMAIL_HOST = "mail.example.com"
    config = conf.resolve({})
    assert (config.host, config.port, config.security) == ("mail.example.com", 25, "none")
    assert config.provenance["host"].origin == "EMAIL_HOST"


@LEGACY
def test_keyword_arguments_beat_settings_beat_environment(settings, monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "smtp+ssl://env%40example.com:pw@smtp.gmail.com:465")
    settings.EMAIL_HOST_USER = "settings@example.com"
    config = conf.resolve({"username": "kwarg@example.com"})
    assert config.username == "kwarg@example.com"
    assert config.provenance["username"].source == "argument"
    config = conf.resolve({})
    assert config.username == "settings@example.com"
    assert config.provenance["username"].origin == "EMAIL_HOST_USER"
    # Not set anywhere else: from the environment.
    assert (config.port, config.security, config.password) == (465, "ssl", "pw")
    assert config.provenance["port"] == conf.Value("environment", "EMAIL_URL")


def test_none_arguments_are_ignored_like_send_mail_passes_them():
    config = conf.resolve({"username": None, "password": None, "port": None})
    assert (config.username, config.password, config.port) == ("", "", 587)


def test_environment_app_password_with_spaces_is_url_decoded_and_stripped(monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "smtp+tls://me%40gmail.com:abcd%20efgh%20ijkl%20mnop@smtp.gmail.com:587")
    config = conf.resolve({})
    assert (config.username, config.password, config.security) == ("me@gmail.com", "abcdefghijklmnop", "starttls")


def test_environment_smtps_on_465_keeps_starttls_for_the_validator(monkeypatch):
    # django-environ's smtps:// means STARTTLS: the validator (E003) catches it.
    monkeypatch.setenv("EMAIL_URL", "smtps://me%40gmail.com:pw@smtp.gmail.com:465")
    config = conf.resolve({})
    assert (config.port, config.use_tls, config.use_ssl) == (465, True, False)


def test_invalid_email_url_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "gopher://nope")
    with pytest.raises(GmailConfigError, match="EMAIL_URL"):
        conf.resolve({})


def test_ssl_cafile_from_gmail_smtp_setting_and_environment(settings, monkeypatch):
    monkeypatch.setenv("GMAIL_SMTP_SSL_CAFILE", "/env/ca.pem")
    assert conf.resolve({}).ssl_cafile == "/env/ca.pem"
    settings.GMAIL_SMTP = {"SSL_CAFILE": "/settings/ca.pem"}
    config = conf.resolve({})
    assert config.ssl_cafile == "/settings/ca.pem"
    assert config.provenance["ssl_cafile"].origin == "GMAIL_SMTP['SSL_CAFILE']"
    assert conf.resolve({"ssl_cafile": "/arg.pem"}).ssl_cafile == "/arg.pem"


def test_tls_and_ssl_both_on_is_a_value_error_and_improperly_configured():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ValueError, match="mutually exclusive") as info:
        conf.resolve({"use_tls": True, "use_ssl": True})
    assert isinstance(info.value, ImproperlyConfigured)
    assert info.value.check_id == "gmail_smtp.E001"


def test_bad_port_and_timeout_name_their_origin():
    with pytest.raises(GmailConfigError, match="port= argument"):
        conf.resolve({"port": "five-eight-seven"})
    with pytest.raises(GmailConfigError, match="seconds"):
        conf.resolve({"timeout": "soon"})


def test_alias_reads_only_options_and_names_the_mailer():
    config = conf.resolve({"host": "127.0.0.1", "use_ssl": True}, alias="transactional")
    assert (config.port, config.alias) == (465, "transactional")
    assert config.provenance["host"].origin == "MAILERS['transactional']['OPTIONS']['host']"


def test_password_is_never_in_repr_or_describe():
    config = conf.resolve({"username": "me@gmail.com", "password": "supersecretpassword"})
    assert "supersecret" not in repr(config)
    assert "supersecret" not in str(config.describe())
    assert "<19 characters, hidden>" in str(config.describe())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("abcd efgh ijkl mnop", "abcdefghijklmnop"),
        (" abcd\u00a0efgh\u00a0ijkl\u00a0mnop ", "abcdefghijklmnop"),
        ("abcdefghijklmnop", "abcdefghijklmnop"),
        ("my pass word", "my pass word"),  # not an app password: untouched
        ("abcd efgh ijkl mno1", "abcd efgh ijkl mno1"),
    ],
)
def test_normalize_app_password(given, expected):
    assert conf.normalize_app_password(given) == expected


def test_spaces_are_kept_for_non_gmail_hosts():
    config = conf.resolve({"host": "mail.example.com", "password": "abcd efgh ijkl mnop"})
    assert config.password == "abcd efgh ijkl mnop"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("smtp.gmail.com", False),
        ("10.0.0.1", False),
        ("", False),
    ],
)
def test_is_loopback(host, loopback):
    assert conf.is_loopback(host) is loopback


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
def test_mailers_enabled_follows_the_setting(settings):
    assert not conf.mailers_enabled()
    settings.MAILERS = {"default": {"BACKEND": "django_gmail_smtp.backend.EmailBackend"}}
    assert conf.mailers_enabled()


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [(5, {"integer": True}, 5), ("2.5", {}, 2.5), (None, {"allow_none": True}, None), (0, {}, 0.0)],
)
def test_number_setting_accepts(settings, value, kwargs, expected):
    settings.GMAIL_SMTP = {"PIPELINE_WINDOW": value}
    assert conf.number_setting("PIPELINE_WINDOW", **kwargs) == expected


@pytest.mark.parametrize(
    ("value", "kwargs", "words"),
    [
        ("ten", {}, "must be a number of at least 0"),
        (True, {"integer": True}, "whole number"),
        (2.5, {"integer": True}, "whole number"),
        (0, {"integer": True, "minimum": 1}, "at least 1"),
        (None, {}, "PIPELINE_WINDOW"),
    ],
)
def test_number_setting_names_the_key_and_the_rule(settings, value, kwargs, words):
    settings.GMAIL_SMTP = {"PIPELINE_WINDOW": value}
    with pytest.raises(GmailConfigError, match=words) as info:
        conf.number_setting("PIPELINE_WINDOW", **kwargs)
    assert "GMAIL_SMTP['PIPELINE_WINDOW']" in str(info.value)
    assert "README.md#gmail_smtp-settings" in str(info.value)


def test_stored_accounts_come_from_the_source_the_caller_passes(settings, monkeypatch):
    """resolve() takes its stored accounts as an argument: any callable name -> options, no ORM."""
    asked: list[str] = []

    def source(name: str) -> dict[str, object] | None:
        asked.append(name)
        return {"host": "smtp.googlemail.com", "username": "shop@gmail.com", "password": "abcd efgh ijkl mnop"}

    settings.GMAIL_SMTP = {"ACCOUNT": "shop"}
    monkeypatch.setenv("GMAIL_SMTP_TIMEOUT", "3")
    config = conf.resolve({"port": 465}, accounts=source)
    assert asked == ["shop"]
    assert (config.host, config.port, config.username, config.account) == (
        "smtp.googlemail.com",
        465,
        "shop@gmail.com",
        "shop",
    )
    assert config.password == "abcdefghijklmnop"  # normalised as any app password
    assert config.provenance["host"] == conf.Value(conf.SOURCE_DATABASE, "stored account 'shop'")
    assert config.provenance["port"].source == conf.SOURCE_ARGUMENT
    assert config.timeout == 3.0  # the source gave none: the environment's


@LEGACY
def test_a_source_without_accounts_leaves_the_settings(settings):
    """None from the source (no table yet, before migrate): the settings decide."""
    settings.EMAIL_HOST_USER = "settings@gmail.com"
    config = conf.resolve({"account": "shop"}, accounts=lambda name: None)
    assert (config.username, config.account) == ("settings@gmail.com", None)


def test_naming_a_stored_account_without_a_source_is_the_callers_mistake(settings):
    settings.GMAIL_SMTP = {"ACCOUNT": "shop"}
    with pytest.raises(TypeError, match=r"accounts=django_gmail_smtp\.accounts\.account_options"):
        conf.resolve({})
