"""The destination a stored secret is sealed with (pure functions: no database, no key)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from django_gmail_smtp import binding
from django_gmail_smtp.binding import Destination

GMAIL = {"host": "smtp.gmail.com", "port": 587, "security": "starttls", "username": "shop@gmail.com"}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("smtp.gmail.com", "smtp.gmail.com"),
        ("SMTP.Gmail.COM", "smtp.gmail.com"),
        ("smtp.gmail.com.", "smtp.gmail.com"),
        ("  smtp.gmail.com  ", "smtp.gmail.com"),
        ("[::1]", "::1"),
    ],
)
def test_hosts_are_compared_without_case_spaces_or_trailing_dot(host: str, expected: str) -> None:
    assert binding.normalize_host(host) == expected


def test_spelling_alone_is_no_change_of_destination() -> None:
    sealed = Destination.of(**GMAIL)
    same = Destination.of(host="SMTP.GMAIL.COM.", port="587", security="STARTTLS", username=" Shop@Gmail.com ")
    assert sealed.changes(same) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"host": "smtp.evil.example"}, "host"),
        ({"host": "smtp.gmail.com.evil.example"}, "host"),
        ({"port": 465}, "port"),
        ({"security": "ssl"}, "security"),
        ({"username": "other@gmail.com"}, "username"),
    ],
)
def test_every_bound_field_counts(change: dict[str, Any], field: str) -> None:
    assert Destination.of(**GMAIL).changes(Destination.of(**(GMAIL | change))) == [field]


def test_the_token_endpoint_counts_and_is_compared_by_scheme_host_and_path() -> None:
    google = Destination.of(**GMAIL, token_uri="https://oauth2.googleapis.com/token")
    assert google.changes(Destination.of(**GMAIL, token_uri="HTTPS://OAuth2.GoogleAPIs.com./token")) == []
    assert google.changes(Destination.of(**GMAIL, token_uri="https://oauth2.evil.example/token")) == ["token_uri"]
    assert google.changes(Destination.of(**GMAIL, token_uri="https://oauth2.googleapis.com/other")) == ["token_uri"]
    assert google.changes(Destination.of(**GMAIL, token_uri="https://oauth2.googleapis.com:8443/token")) == [
        "token_uri"
    ]
    assert google.changes(Destination.of(**GMAIL, token_uri="https://oauth2.googleapis.com:x/token")) == ["token_uri"]


def test_seal_and_unseal_round_trip() -> None:
    destination = Destination.of(**GMAIL)
    sealed = binding.unseal(binding.seal({"password": "abcdefghijklmnop"}, destination))
    assert sealed.secret == {"password": "abcdefghijklmnop"}
    assert sealed.destination == destination
    assert "abcdefghijklmnop" not in repr(sealed)


def test_a_secret_stored_before_the_binding_is_unbound() -> None:
    sealed = binding.unseal(json.dumps({"password": "abcdefghijklmnop"}))
    assert sealed.destination is None
    assert sealed.secret == {"password": "abcdefghijklmnop"}


@pytest.mark.parametrize(
    "plaintext",
    [
        "[]",
        "not json",
        json.dumps({"v": 3, "secret": {}, "destination": {}}),
        json.dumps({"v": 2, "secret": {"password": "x"}, "destination": {"host": "h"}}),
        json.dumps({"v": 2, "secret": "x", "destination": {}}),
    ],
)
def test_anything_else_is_not_a_payload(plaintext: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json's and ours: both mean "not a payload"
        binding.unseal(plaintext)


def test_only_oauth_parts_bind_the_token_endpoint(settings: Any) -> None:
    settings.GMAIL_SMTP = {"OAUTH_TOKEN_URI": "https://token.example/token"}
    assert binding.destination_for({"password": "x"}, **GMAIL).token_uri == ""
    assert binding.destination_for({"client_secret": "x"}, **GMAIL).token_uri == "https://token.example/token"
