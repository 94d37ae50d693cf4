"""The settings layer: one reader for GMAIL_SMTP, one place that reads the environment."""

from __future__ import annotations

from typing import Any

import pytest

from django_gmail_smtp import app_settings, rules
from django_gmail_smtp.delivery import DeliveryOptions
from django_gmail_smtp.exceptions import GmailConfigError


def test_defaults_and_values(settings: Any) -> None:
    settings.GMAIL_SMTP = {"TRANSCRIPT": 1, "QUEUE_NAME": "mail"}
    assert app_settings.app_setting("QUEUE_NAME") == "mail"
    assert app_settings.app_setting("QUEUE_TASK_BACKEND") == "default"
    assert app_settings.flag_setting("TRANSCRIPT") is True
    assert app_settings.flag_setting("QUOTA_SYNC") is False
    del settings.GMAIL_SMTP
    assert app_settings.gmail_smtp() == {}
    assert app_settings.app_setting("PIPELINE_WINDOW") == 20


def test_a_gmail_smtp_that_is_not_a_dict_is_named_with_the_checks_words(settings: Any) -> None:
    """Every reader says E012, in the system check's words, instead of an AttributeError."""
    settings.GMAIL_SMTP = ["TRANSCRIPT"]
    [problem] = rules.check_app_settings(app_settings.configured_gmail_smtp())
    for read in (
        lambda: app_settings.app_setting("TRANSCRIPT"),
        lambda: app_settings.number_setting("PIPELINE_WINDOW", integer=True),
        DeliveryOptions.from_settings,
    ):
        with pytest.raises(GmailConfigError) as info:
            read()
        assert info.value.check_id == problem.id == "gmail_smtp.E012"
        assert info.value.message == str(problem.message) == "GMAIL_SMTP is a list, not a dict."
        assert info.value.hint == str(problem.hint)


def test_only_the_apps_own_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMAIL_SMTP_TIMEOUT", "7")
    monkeypatch.setenv("EMAIL_URL", "")
    assert app_settings.environment_variable("GMAIL_SMTP_TIMEOUT") == "7"
    assert app_settings.environment_variable("EMAIL_URL") is None  # empty counts as unset
    monkeypatch.setenv("HOME", "/root")
    with pytest.raises(KeyError, match="HOME is not one of this app's environment variables"):
        app_settings.environment_variable("HOME")
    assert set(app_settings.ENVIRONMENT) == {"EMAIL_URL", *app_settings.ENV_OPTIONS}


def test_encryption_keys_are_checked_where_they_are_read(settings: Any) -> None:
    settings.GMAIL_SMTP = {"ENCRYPTION_KEYS": "one-key-not-a-list"}
    with pytest.raises(GmailConfigError, match=r"must be a list of Fernet keys") as info:
        app_settings.configured_keys()
    assert info.value.check_id == "gmail_smtp.E019"
    assert [p.id for p in rules.check_app_settings(settings.GMAIL_SMTP)] == ["gmail_smtp.E019"]


def test_the_option_classes_default_to_the_documented_values() -> None:
    """``DeliveryOptions()`` (and the ``RetryPolicy`` of the leaves, which cannot read the settings
    layer) start from APP_SETTINGS, as ``from_settings()`` does with an empty GMAIL_SMTP."""
    assert DeliveryOptions() == DeliveryOptions.from_settings()
