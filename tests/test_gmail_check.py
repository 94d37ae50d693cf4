"""``manage.py gmail_check`` and :mod:`django_gmail_smtp.diagnose`, against real loopback sockets.

Every server here is on 127.0.0.1 (the Gmail sandbox, or a raw listener). No test asks a
DNS server anything: the unresolvable name is one that the resolver refuses locally.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import jsonschema  # type: ignore[import-untyped]
import pytest
import trustme
from django.core.management import call_command
from django.core.management.base import CommandError

from django_gmail_smtp import conf, diagnose
from django_gmail_smtp.causes import CATALOGUE
from django_gmail_smtp.diagnose.reach import AddrInfo, connect_all
from django_gmail_smtp.diagnose.steps import Waits
from django_gmail_smtp.exit_status import EXIT_STATUSES, exit_code
from django_gmail_smtp.management.commands.gmail_check import Command
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox

from .conftest import LEGACY_API, Outcome, gmail_check

ROOT = Path(__file__).resolve().parent.parent
WRONG_PASSWORD = "wrongpasswordxyz"  # a test value, 16 letters like an app password

# Most tests configure the legacy EMAIL_* settings on purpose: on Django 6.1 only Django's
# warnings about that use are ignored, so a warning from our own code still fails.
pytestmark = LEGACY_API


# -- helpers -------------------------------------------------------------------------------


def use_sandbox(settings: Any, sandbox: GmailSandbox, mode: str = "starttls", **overrides: Any) -> None:
    """Point the legacy EMAIL_* settings at the sandbox (its CA through GMAIL_SMTP)."""
    options = sandbox.mailer_options("ssl" if mode == "ssl" else "starttls")
    settings.EMAIL_HOST = options["host"]
    settings.EMAIL_PORT = options["port"]
    settings.EMAIL_HOST_USER = options["username"]
    settings.EMAIL_HOST_PASSWORD = options["password"]
    settings.EMAIL_USE_TLS = options["use_tls"]
    settings.EMAIL_USE_SSL = options["use_ssl"]
    settings.EMAIL_TIMEOUT = 2
    settings.GMAIL_SMTP = {"SSL_CAFILE": sandbox.ca_file}
    for name, value in overrides.items():
        setattr(settings, name, value)


def use_server(settings: Any, port: int, *, ssl: bool = False, timeout: float = 1) -> None:
    """Point the settings at a raw loopback listener."""
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_HOST_USER = SANDBOX_USER
    settings.EMAIL_HOST_PASSWORD = SANDBOX_PASSWORD
    settings.EMAIL_USE_TLS = not ssl
    settings.EMAIL_USE_SSL = ssl
    settings.EMAIL_TIMEOUT = timeout
    settings.GMAIL_SMTP = {}


def secret_forms(password: str, username: str = SANDBOX_USER) -> list[str]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [password, b64(password), b64(f"\0{username}\0{password}"), b64(f"{username}\0{username}\0{password}")]


def assert_no_secret(text: str, password: str = SANDBOX_PASSWORD) -> None:
    for form in secret_forms(password):
        assert form not in text


def assert_failed(outcome: Outcome, step: str, cause_id: str | set[str]) -> None:
    expected = {cause_id} if isinstance(cause_id, str) else cause_id
    assert outcome.code == diagnose.EXIT_CODES[step], outcome.text
    assert "FAIL" in outcome.out
    assert any(f"[{cid}]" in outcome.err for cid in expected), outcome.err
    assert any(f"Cause id: {cid}" in outcome.out for cid in expected), outcome.out
    assert_no_secret(outcome.text)


def check_json(*args: str) -> Outcome:
    outcome = gmail_check("--json", *args)
    jsonschema.validate(outcome.doc, diagnose.JSON_SCHEMA)
    assert outcome.doc["exit_code"] == outcome.code
    assert_no_secret(outcome.text)
    return outcome


def step_names(doc: dict[str, Any]) -> list[str]:
    return [step["name"] for step in doc["steps"]]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A listener that accepts connections (in its backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@contextlib.contextmanager
def loopback_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A listener on 127.0.0.1 that calls ``handle`` with each connection (in a thread); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _address = listener.accept()
            except TimeoutError:
                continue
            with connection, contextlib.suppress(OSError):
                connection.settimeout(5)
                handle(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with listener:
        yield listener.getsockname()[1]
        done.set()
        thread.join(5)


def scripted(greeting: bytes, replies: dict[bytes, bytes], *, unknown: bytes) -> Callable[[socket.socket], None]:
    """A ``loopback_server`` handler: greets, answers each command by its verb (``unknown`` for
    the others) and says goodbye to QUIT."""

    def converse(connection: socket.socket) -> None:
        connection.sendall(greeting + b"\r\n")
        for line in connection.makefile("rb"):
            command = line.split(b" ")[0].strip().upper()
            if command == b"QUIT":
                connection.sendall(b"221 2.0.0 Bye\r\n")
                return
            connection.sendall(replies.get(command, unknown) + b"\r\n")

    return converse


@pytest.fixture
def foreign_tls_server() -> Iterator[int]:
    """An implicit-TLS server whose certificate comes from a CA that is not a sandbox's (like a
    TLS-intercepting proxy's): it greets once the handshake is done, then hangs up."""
    ca = trustme.CA(organization_name="Example Corp proxy")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    def greet_over_tls(connection: socket.socket) -> None:
        with context.wrap_socket(connection, server_side=True) as tls:
            tls.sendall(b"220 proxy.example ESMTP\r\n")

    with loopback_server(greet_over_tls) as port:
        yield port


@pytest.fixture
def other_host_sandbox() -> Iterator[GmailSandbox]:
    """A sandbox whose certificate is for another host name."""
    with GmailSandbox(cert_hostnames=("other.example",)) as sandbox:
        yield sandbox


# -- success -------------------------------------------------------------------------------


def test_success_with_send_to_delivers_a_message(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox)
    outcome = gmail_check("--send-to", "friend@example.com")
    assert outcome.code == 0, outcome.text
    for title in (
        "Configuration...",
        "DNS lookup of 127.0.0.1...",
        "TCP connection to port",
        "Server greeting...",
        "EHLO (before TLS)...",
        "STARTTLS...",
        "EHLO...",
        "Sign-in as sandbox@example.com...",
        "Test message to friend@example.com...",
        "QUIT...",
    ):
        assert title in outcome.out
    assert "FAIL" not in outcome.out
    assert "TLSv1." in outcome.out
    assert "host name 127.0.0.1 verified" in outcome.out
    assert "sign-in methods (AUTH): LOGIN PLAIN" in outcome.out
    assert "server's final reply: 250 2.0.0 OK" in outcome.out
    assert "All steps passed" in outcome.out
    # where each value came from
    assert "EMAIL_HOST_PASSWORD (settings)" in outcome.out
    assert "GMAIL_SMTP['SSL_CAFILE'] (settings)" in outcome.out
    assert "<16 characters, hidden>" in outcome.out
    assert "->" not in outcome.out  # the transcript needs -v 2
    [message] = gmail_sandbox.wait_for_messages(1)
    assert message.message["Subject"] == "gmail_check test message"
    assert message.rcpt_tos == ["friend@example.com"]
    assert_no_secret(outcome.text)


def test_success_over_implicit_tls_without_sending(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox, mode="ssl")
    outcome = check_json()
    doc = outcome.doc
    assert outcome.code == 0
    assert doc["ok"]
    assert doc["outcome"] == "ok"
    assert step_names(doc) == ["config", "dns", "connect", "tls", "greeting", "ehlo", "auth", "send", "quit"]
    statuses = {step["name"]: step["status"] for step in doc["steps"]}
    assert statuses["send"] == "skipped"
    tls = doc["steps"][3]["data"]
    assert tls["protocol"].startswith("TLSv1")
    assert tls["hostname_verified"] is True
    assert tls["days_left"] > 0
    assert tls["ca_file"] == gmail_sandbox.ca_file
    ehlo = doc["steps"][5]["data"]
    assert ehlo["size"] == 35882577
    assert {"LOGIN", "PLAIN"} <= set(ehlo["auth_mechanisms"])
    assert gmail_sandbox.messages == []


def test_transcript_at_verbosity_3_hides_every_form_of_the_password(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox, mode="ssl")
    outcome = gmail_check("-v", "3", "--send-to", "friend@example.com")
    assert outcome.code == 0, outcome.text
    assert "SMTP conversation (credentials hidden):" in outcome.out
    assert "-> AUTH PLAIN <redacted>" in outcome.out
    assert "<- 235 2.7.0 Accepted" in outcome.out
    assert "data: {" in outcome.out
    assert_no_secret(outcome.text)


def test_verbosity_0_prints_nothing_on_success(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox)
    outcome = gmail_check("-v", "0")
    assert outcome.code == 0
    assert outcome.out == ""


def test_command_line_overrides_and_their_provenance(
    settings: Any, gmail_sandbox: GmailSandbox, closed_port: int
) -> None:
    use_sandbox(settings, gmail_sandbox, mode="ssl", EMAIL_PORT=closed_port, EMAIL_TIMEOUT=30)
    outcome = gmail_check("--port", str(gmail_sandbox.starttls_port), "--tls", "--timeout", "2")
    assert outcome.code == 0, outcome.text
    assert "--port (command line)" in outcome.out
    assert "--tls (command line)" in outcome.out
    assert "--timeout (command line)" in outcome.out
    assert "STARTTLS..." in outcome.out


@pytest.mark.django_db
def test_account_option_tests_a_stored_account(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    from django_gmail_smtp.models import GmailAccount

    options = gmail_sandbox.mailer_options("starttls")
    account = GmailAccount(
        name="shop", username=options["username"], host=options["host"], port=options["port"], timeout=2
    )
    account.set_password(options["password"])
    account.save()
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    outcome = gmail_check("--account", "shop", "--send-to", "to@example.com")
    assert outcome.code == 0, outcome.text
    assert "stored account 'shop'" in outcome.out
    assert gmail_sandbox.wait_for_messages(1)[0].auth_user == options["username"]
    assert_no_secret(outcome.text)
    missing = gmail_check("--account", "nope")
    assert missing.code == diagnose.EXIT_CODES["config"]
    assert "'nope'" in missing.text


# -- configuration errors: nothing goes over the network -----------------------------------


def test_missing_password_stops_before_the_network(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox, EMAIL_HOST_PASSWORD="")
    outcome = gmail_check()
    assert_failed(outcome, "config", "password_missing")
    assert "DNS lookup" not in outcome.out
    assert gmail_sandbox.connections == 0
    doc = check_json().doc
    assert doc["outcome"] == "config_error"
    assert doc["cause"]["id"] == "password_missing"
    assert step_names(doc) == ["config"]


def test_both_tls_and_ssl_is_a_configuration_error_without_traceback(settings: Any) -> None:
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_USE_TLS = True
    settings.EMAIL_USE_SSL = True
    outcome = gmail_check()
    assert_failed(outcome, "config", "tls_and_ssl")
    assert "mutually exclusive" in outcome.out
    assert "gmail_smtp.E001" in outcome.out
    doc = check_json().doc
    assert doc["config"] is None
    assert doc["problems"][0]["id"] == "gmail_smtp.E001"


def test_gmail_rule_errors_stop_before_the_network(settings: Any) -> None:
    """django-environ's smtps://...:465 trap: STARTTLS on Gmail's implicit-TLS port."""
    settings.EMAIL_HOST = "smtp.gmail.com"
    settings.EMAIL_PORT = 465
    settings.EMAIL_USE_TLS = True
    settings.EMAIL_HOST_USER = "someone@gmail.com"
    settings.EMAIL_HOST_PASSWORD = "abcdefghijklmnop"
    settings.EMAIL_TIMEOUT = 1

    def only_config(step: diagnose.Step) -> None:
        assert step.name == "config", "must not touch the network"

    result = diagnose.run_check(conf.resolve({}), on_step_start=only_config)
    assert result.failed_step == "config"
    assert result.exit_code == diagnose.EXIT_CODES["config"]
    assert result.cause is not None
    assert result.cause.id == "plain_on_tls_port"
    assert [p.id for p in result.problems if p.is_error] == ["gmail_smtp.E003"]
    jsonschema.validate(result.to_dict(), diagnose.JSON_SCHEMA)


# -- network failures ----------------------------------------------------------------------


def test_name_that_does_not_resolve(settings: Any) -> None:
    # A 64-letter label is refused by the IDNA encoder before any query leaves the machine.
    name = "a" * 64 + ".invalid"
    use_server(settings, 587)
    settings.EMAIL_HOST = name
    outcome = gmail_check()
    assert_failed(outcome, "dns", "dns_failure")
    assert f"DNS lookup of {name}... FAIL" in outcome.out


def test_connection_refused(settings: Any, closed_port: int) -> None:
    use_server(settings, closed_port)
    outcome = gmail_check()
    assert_failed(outcome, "connect", "connection_refused")
    assert "127.0.0.1 (IPv4): ConnectionRefusedError" in outcome.out
    doc = check_json().doc
    attempts = doc["steps"][-1]["data"]["attempts"]
    assert attempts == [
        {
            "family": "IPv4",
            "address": "127.0.0.1",
            "ok": False,
            "duration": attempts[0]["duration"],
            "error": attempts[0]["error"],
        }
    ]


def test_listener_that_never_greets(settings: Any, silent_server: int) -> None:
    use_server(settings, silent_server, timeout=1)
    started = time.monotonic()
    outcome = gmail_check()
    assert time.monotonic() - started < 6
    assert_failed(outcome, "greeting", "no_greeting")
    assert "No greeting within 1 s." in outcome.out
    assert "did not answer a TLS handshake either" in outcome.out


def test_command_line_timeout_bounds_a_silent_server(settings: Any, silent_server: int) -> None:
    use_server(settings, silent_server, ssl=True, timeout=60)
    started = time.monotonic()
    outcome = gmail_check("--timeout", "1")
    assert time.monotonic() - started < 6
    assert_failed(outcome, "tls", "tls_no_answer")


def test_starttls_client_on_the_implicit_tls_port(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox, EMAIL_PORT=gmail_sandbox.ssl_port, EMAIL_TIMEOUT=1)
    outcome = gmail_check()
    assert_failed(outcome, "greeting", "plain_on_tls_port")
    assert "answered a TLS handshake: it expects implicit TLS" in outcome.out


def test_starttls_client_on_port_465_is_detected_quickly(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    """On 465 (here: the sandbox's implicit-TLS port standing in for it) a STARTTLS client
    waits only briefly for the greeting, however long the configured timeout."""
    use_sandbox(settings, gmail_sandbox, EMAIL_PORT=gmail_sandbox.ssl_port, EMAIL_TIMEOUT=30)
    waits = Waits(implicit_tls_ports=frozenset({gmail_sandbox.ssl_port}), quick=0.5)
    started = time.monotonic()
    result = diagnose.run_check(conf.resolve({}), waits=waits)
    assert time.monotonic() - started < 5
    assert result.failed_step == "greeting"
    assert result.exit_code == diagnose.EXIT_CODES["greeting"]
    assert result.cause is not None
    assert result.cause.id == "plain_on_tls_port"
    failed = result.step("greeting")
    assert failed is not None
    assert failed.status == diagnose.FAILED
    assert "No greeting within 0.5 s." in failed.details
    assert_no_secret(json.dumps(result.to_dict()))


def test_library_entry_point_reports_resolver_errors(settings: Any) -> None:
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = "not-a-port"
    result = diagnose.check()
    assert result.outcome == "config_error"
    assert result.exit_code == diagnose.EXIT_CODES["config"]
    assert result.cause is not None
    assert result.cause.id == "gmail_smtp.E010"
    assert "not a number" in result.error
    jsonschema.validate(result.to_dict(), diagnose.JSON_SCHEMA)


def test_implicit_tls_on_the_starttls_port(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox, mode="ssl", EMAIL_PORT=gmail_sandbox.starttls_port)
    outcome = gmail_check()
    assert_failed(outcome, "tls", "tls_on_starttls_port")
    assert "greets in plain text" in outcome.out


def test_the_sandbox_without_its_ca_file_is_named(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    """A loopback server and no CA file: the sandbox's advice, not the TLS-proxy one."""
    use_sandbox(settings, gmail_sandbox, GMAIL_SMTP={})
    outcome = gmail_check()
    assert_failed(outcome, "tls", "sandbox_cert_untrusted")
    assert "this looks like the Gmail sandbox" in outcome.out
    assert "Set GMAIL_SMTP['SSL_CAFILE'] (or GMAIL_SMTP_SSL_CAFILE) to the ca.pem" in outcome.out
    assert "check the port" in outcome.out
    assert "certificate issued by: OU=Testing CA" in outcome.out
    assert "O=django-gmail-smtp sandbox" in outcome.out
    assert "proxy" not in outcome.out
    assert gmail_sandbox.auth_attempts == 0


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_another_sandbox_on_the_port_is_named(settings: Any, gmail_sandbox: GmailSandbox, mode: str) -> None:
    """The CA file of one sandbox, the port of another (the demo's old trap): named as such."""
    with GmailSandbox() as other:
        use_sandbox(settings, other, mode=mode, GMAIL_SMTP={"SSL_CAFILE": gmail_sandbox.ca_file})
        outcome = check_json()
    doc = outcome.doc
    assert outcome.code == diagnose.EXIT_CODES["tls"]
    assert doc["cause"]["id"] == "sandbox_cert_untrusted"
    [tls] = [step for step in doc["steps"] if step["name"] == "tls"]
    assert "O=django-gmail-smtp sandbox" in tls["data"]["issuer"]
    assert other.auth_attempts == 0


def test_an_unknown_ca_on_a_remote_looking_server_keeps_the_general_advice(
    settings: Any, gmail_sandbox: GmailSandbox, foreign_tls_server: int
) -> None:
    """A CA file is set and the certificate is not a sandbox's: the general advice (a proxy's CA)."""
    use_server(settings, foreign_tls_server, ssl=True)
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    outcome = gmail_check()
    assert_failed(outcome, "tls", "cert_untrusted")
    assert "certificate issued by: OU=Testing CA" in outcome.out
    assert "O=Example Corp proxy" in outcome.out
    assert "GMAIL_SMTP['SSL_CAFILE']" in outcome.out
    assert "Never turn verification off" in outcome.out
    assert "Gmail sandbox" not in outcome.out


@pytest.fixture
def gmail_host_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """smtp.gmail.com resolves to 127.0.0.1, as an /etc/hosts entry would make it: no DNS server
    is asked and every connection stays on loopback."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "smtp.gmail.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def corporate_relay() -> Iterator[int]:
    """A plain SMTP server that is not Gmail (no STARTTLS, its own greeting)."""

    converse = scripted(
        b"220 mx.corp.example ESMTP Postfix",
        {b"EHLO": b"250-mx.corp.example\r\n250 8BITMIME"},
        unknown=b"502 5.5.2 Error: command not recognized",
    )
    with loopback_server(converse) as port:
        yield port


@pytest.mark.usefixtures("gmail_host_on_loopback")
def test_a_gmail_host_that_does_not_greet_like_gmail_is_named(settings: Any, corporate_relay: int) -> None:
    use_server(settings, corporate_relay)
    settings.EMAIL_HOST = "smtp.gmail.com"
    outcome = gmail_check()
    # STARTTLS is missing too, but the root cause is that this is not Gmail at all.
    assert_failed(outcome, "tls", "not_gmail_server")
    assert "Server greeting... WARNING" in outcome.out
    assert "This is not Gmail's greeting (Gmail's ends with “- gsmtp”)" in outcome.out
    assert "Cause: The host is Gmail's, but the server did not greet like Gmail" in outcome.out


@pytest.mark.usefixtures("gmail_host_on_loopback")
def test_a_gmail_host_with_gmails_greeting_passes(settings: Any) -> None:
    with GmailSandbox(cert_hostnames=("smtp.gmail.com",)) as sandbox:
        use_sandbox(settings, sandbox, EMAIL_HOST="smtp.gmail.com")
        outcome = check_json()
    assert outcome.code == 0, outcome.doc
    [greeting] = [step for step in outcome.doc["steps"] if step["id"] == "greeting"]
    assert greeting["status"] == "ok"
    assert greeting["data"]["gmail"] is True


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_certificate_for_another_host_name(settings: Any, other_host_sandbox: GmailSandbox, mode: str) -> None:
    use_sandbox(settings, other_host_sandbox, mode=mode)
    outcome = gmail_check()
    assert_failed(outcome, "tls", "cert_hostname_mismatch")


def test_starttls_not_offered(settings: Any) -> None:
    with GmailSandbox(offer_starttls=False) as sandbox:
        use_sandbox(settings, sandbox)
        outcome = gmail_check()
    assert_failed(outcome, "tls", "starttls_not_offered")


def test_broken_ipv6_route_does_not_hide_a_working_ipv4_address(silent_server: int, closed_port: int) -> None:
    """Every address is tried; one that works is enough, and the report says which."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        addresses: list[AddrInfo] = [
            (socket.AF_INET6, "::1", ("::1", port, 0, 0)),  # nothing listens on IPv6: refused
            (socket.AF_INET, "127.0.0.1", ("127.0.0.1", port)),
        ]
        config = conf.resolve({"host": "127.0.0.1", "port": port})
        result = diagnose.Diagnosis(config=config)
        assert connect_all(diagnose.Run(result, None, None), config, addresses, 1.0)
    [step] = result.steps
    assert step.status == diagnose.WARNING
    assert step.data["working"] == ["127.0.0.1"]
    assert [a["ok"] for a in step.data["attempts"]] == [False, True]
    assert any("Only IPv4 works" in detail for detail in step.details)


# -- Gmail's refusals ----------------------------------------------------------------------


def test_wrong_password(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox, EMAIL_HOST_PASSWORD=WRONG_PASSWORD)
    outcome = gmail_check("-v", "3")
    assert outcome.code == diagnose.EXIT_CODES["auth"]
    assert "Cause id: bad_credentials" in outcome.out
    assert "535-5.7.8 Username and Password not accepted" in outcome.out
    assert_no_secret(outcome.text, WRONG_PASSWORD)
    doc = check_json().doc
    assert_no_secret(json.dumps(doc), WRONG_PASSWORD)
    assert doc["failed_step"] == "auth"


@pytest.mark.parametrize(
    ("kind", "cause_id"),
    [
        ("bad_credentials", "bad_credentials"),
        ("app_password_required", "app_password_required"),
        ("web_login_required", "web_login_required"),
        ("too_many_logins", "too_many_logins"),
    ],
)
def test_injected_sign_in_failures(settings: Any, gmail_sandbox: GmailSandbox, kind: str, cause_id: str) -> None:
    use_sandbox(settings, gmail_sandbox)
    gmail_sandbox.inject(kind)
    outcome = gmail_check("-v", "2")
    assert_failed(outcome, "auth", cause_id)
    assert str(CATALOGUE[cause_id].fix) in outcome.out


@pytest.mark.parametrize(
    ("kind", "cause_id"),
    [
        ("throttled", "throttled"),
        ("temporary", "temporary"),
        ("daily_quota", "daily_quota"),
        ("too_large", "message_too_large"),
        ("too_many_recipients", "too_many_recipients"),
        ("bad_recipient", "bad_recipient"),
    ],
)
def test_injected_sending_failures(settings: Any, gmail_sandbox: GmailSandbox, kind: str, cause_id: str) -> None:
    use_sandbox(settings, gmail_sandbox)
    gmail_sandbox.inject(kind)
    outcome = check_json("--send-to", "friend@example.com")
    assert outcome.code == diagnose.EXIT_CODES["send"]
    assert outcome.doc["failed_step"] == "send"
    assert outcome.doc["cause"]["id"] == cause_id
    assert gmail_sandbox.messages == []


def test_server_that_stops_greeting(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox, EMAIL_TIMEOUT=1)
    gmail_sandbox.inject("no_greeting", times=None)
    outcome = gmail_check()
    assert_failed(outcome, "greeting", "no_greeting")


# -- JSON, options, language ---------------------------------------------------------------


def test_json_is_one_document_valid_against_the_schema(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox)
    outcome = check_json("--send-to", "friend@example.com", "-v", "3")
    doc = outcome.doc
    assert doc["ok"] is True
    assert doc["cause"] is None
    assert doc["exit_code"] == 0
    assert {row["name"]: row["source"] for row in doc["config"]["values"]}["password"] == "settings"
    assert any(line["text"] == "AUTH PLAIN <redacted>" for line in doc["transcript"])
    assert all(isinstance(step["duration"], float) for step in doc["steps"])
    gmail_sandbox.wait_for_messages(1)


def test_json_values_keep_their_types_and_step_ids_are_unique(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_sandbox(settings, gmail_sandbox)  # STARTTLS: an EHLO before TLS and one after
    doc = check_json().doc
    assert doc["schema_version"] == diagnose.SCHEMA_VERSION == 2
    values = {row["name"]: row for row in doc["config"]["values"]}
    assert values["port"]["value"] == gmail_sandbox.starttls_port
    assert values["use_tls"]["value"] is True
    assert values["use_ssl"]["value"] is False
    assert values["timeout"]["value"] == 2.0
    assert values["host"] | {"origin": ""} == {
        "name": "host",
        "value": "127.0.0.1",
        "set": True,
        "secret": False,
        "display": "127.0.0.1",
        "source": "settings",
        "origin": "",
    }
    assert values["ssl_certfile"]["value"] is None
    assert values["ssl_certfile"]["set"] is False
    assert values["ssl_certfile"]["display"] == "<not set>"
    password = values["password"]
    assert (password["value"], password["set"], password["secret"]) == (None, True, True)
    assert password["display"] == "<16 characters, hidden>"
    ids = [step["id"] for step in doc["steps"]]
    assert ids == ["config", "dns", "connect", "greeting", "ehlo", "tls", "ehlo_tls", "auth", "send", "quit"]
    assert [step["name"] for step in doc["steps"]].count("ehlo") == 2
    assert (doc["failed_step"], doc["error"], doc["cause"]) == (None, None, None)
    assert all(step["error"] is None for step in doc["steps"])


def test_json_failed_step_is_the_id_of_a_step(settings: Any, closed_port: int) -> None:
    use_server(settings, closed_port)
    doc = check_json().doc
    assert doc["failed_step"] == "connect"
    [failed] = [step for step in doc["steps"] if step["status"] == "failed"]
    assert failed["id"] == doc["failed_step"]
    assert doc["cause"]["url"] is None  # no link for this cause: null, not ""
    assert isinstance(doc["error"], str)


def test_the_schema_is_a_packaged_file_that_knows_every_step() -> None:
    from importlib import resources

    path = resources.files("django_gmail_smtp") / "schemas" / "gmail_check.schema.json"
    assert json.loads(path.read_text(encoding="utf-8")) == diagnose.JSON_SCHEMA
    jsonschema.Draft202012Validator.check_schema(diagnose.JSON_SCHEMA)
    definitions = diagnose.JSON_SCHEMA["$defs"]
    assert definitions["step_name"]["enum"] == list(diagnose.STEP_NAMES)
    assert definitions["step_id"]["enum"] == list(diagnose.STEP_IDS)
    assert diagnose.JSON_SCHEMA["properties"]["schema_version"] == {"const": diagnose.SCHEMA_VERSION}


def test_help_is_wrapped_to_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = Command().create_parser("manage.py", "gmail_check").format_help()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "bounded by the timeout. The password is read only from the configuration" in " ".join(text.split())
    assert "\n   9  sign-in failed (password, app password, Google's checks)\n" in text  # the table keeps its lines


def test_the_command_line_prints_the_cause_once(closed_port: int) -> None:
    """From a shell: the Cause/Fix block, then no second `CommandError: ... [id]` line."""
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "EMAIL_URL": f"smtp+tls://{SANDBOX_USER.replace('@', '%40')}:{SANDBOX_PASSWORD}@127.0.0.1:{closed_port}",
    }
    command = [sys.executable, "-m", "django", "gmail_check"]
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert shown.returncode == diagnose.EXIT_CODES["connect"]
    assert "Cause id: connection_refused" in shown.stdout
    assert (shown.stdout + shown.stderr).count("connection_refused") == 1
    assert (shown.stdout + shown.stderr).count("nothing listens on that host and port") == 1
    assert shown.stderr == ""
    # Without the block (-v 0, or --json on stdout) the one line on stderr is the whole message.
    quiet = subprocess.run([*command, "-v", "0"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert quiet.returncode == diagnose.EXIT_CODES["connect"]
    assert quiet.stdout == ""
    assert quiet.stderr.startswith("CommandError: TCP connection to port")
    assert quiet.stderr.rstrip().endswith(
        "Fix: Check the host and port (Gmail: smtp.gmail.com, 587 or 465). [connection_refused]"
    )


@pytest.mark.parametrize(
    ("failed_step", "cause_id", "expected"),
    [
        (None, "", 0),
        ("config", "round_trip_no_address", 3),
        ("auth", "imap_protocol", 9),  # an SMTP step: the step decides, whatever the cause
        ("round_trip_send", "envelope_syntax", 10),
        ("token", "oauth_wrong_scope", 12),
        ("imap_connect", "cert_untrusted", 13),
        ("imap_auth", "imap_disabled", 14),  # a round-trip step: the cause first...
        ("pop_auth", "imap_bad_credentials", 15),  # ...then the step
        ("imap_folders", "imap_no_folder", 16),
        ("round_trip_arrival", "round_trip_timeout", 17),
        ("round_trip_folder", "round_trip_spam", 18),
        ("imap_folders", "imap_protocol", 19),
        ("round_trip_arrival", "pop_protocol", 19),
        ("round_trip_cleanup", "round_trip_cleanup_failed", 1),  # never a failure: a bug if it were
    ],
)
def test_exit_status_of_each_failure(failed_step: str | None, cause_id: str, expected: int) -> None:
    assert exit_code(failed_step, cause_id) == expected
    assert exit_code(failed_step, cause_id, unexpected=True) == (0 if failed_step is None else 1)


def test_the_exit_status_table_is_the_one_the_help_prints() -> None:
    codes = [status.code for status in EXIT_STATUSES]
    assert codes == sorted(set(codes))
    help_text = Command().create_parser("manage.py", "gmail_check").format_help()
    for status in EXIT_STATUSES:
        assert f"  {status.code:>2}  {status.meaning}" in help_text
        for step in status.steps:
            assert status.round_trip or exit_code(step) == status.code


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = [diagnose.EXIT_OK, diagnose.EXIT_UNEXPECTED, diagnose.EXIT_USAGE, *diagnose.EXIT_CODES.values()]
    assert len(codes) == len(set(codes))
    help_text = Command().create_parser("manage.py", "gmail_check").format_help()
    for code in codes:
        assert f"  {code:>2}  " in help_text
    assert "--send-to" in help_text
    assert "--json" in help_text
    assert "--password" not in help_text


def test_invalid_send_to_is_a_usage_error(settings: Any) -> None:
    outcome = gmail_check("--send-to", "not an address")
    assert outcome.code == diagnose.EXIT_USAGE


def test_lang_activates_the_language(settings: Any, closed_port: int) -> None:
    use_server(settings, closed_port)
    assert check_json("--lang", "ja").doc["language"] == "ja"
    settings.LANGUAGE_CODE = "ja"
    assert check_json().doc["language"] == "ja"
    assert gmail_check("--lang", "xx-nonexistent").code == diagnose.EXIT_USAGE


@pytest.mark.skipif(django.VERSION >= (6, 1), reason="MAILERS exists from Django 6.1")
def test_using_needs_django_6_1(settings: Any) -> None:
    outcome = gmail_check("--using", "default")
    assert outcome.code == diagnose.EXIT_CODES["config"]
    assert "Django 6.1" in outcome.err


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS exists from Django 6.1")
def test_using_an_alias(settings: Any, gmail_sandbox: GmailSandbox) -> None:  # pragma: no cover
    settings.MAILERS = {
        "default": {
            "BACKEND": "django_gmail_smtp.backend.EmailBackend",
            "OPTIONS": gmail_sandbox.mailer_options("ssl"),
        },
    }
    outcome = gmail_check("--using", "default")
    assert outcome.code == 0, outcome.text
    assert "MAILERS['default']" in outcome.out
    assert gmail_check("--using", "nope").code == diagnose.EXIT_CODES["config"]


# -- a bug is not a mail problem ---------------------------------------------------------------


@pytest.fixture
def garbled_challenge_server() -> Iterator[int]:
    """A plain server that offers only CRAM-MD5 and answers AUTH with a challenge that is not
    base64: smtplib then fails with binascii.Error, which no step expects."""

    converse = scripted(
        b"220 scripted.localhost ESMTP",
        {b"EHLO": b"250-scripted.localhost\r\n250 AUTH CRAM-MD5", b"AUTH": b"334 abcde"},
        unknown=b"502 5.5.1 Unrecognized command.",
    )
    with loopback_server(converse) as port:
        yield port


def test_an_unexpected_error_in_a_step_is_exit_status_1(settings: Any, garbled_challenge_server: int) -> None:
    """Not the sign-in step's status (9): 1, with a one-line request to report it; the
    traceback only at -v 3."""
    use_server(settings, garbled_challenge_server, timeout=5)
    settings.EMAIL_USE_TLS = False
    outcome = gmail_check()
    assert outcome.code == diagnose.EXIT_UNEXPECTED
    assert "Failed at: Sign-in as sandbox@example.com (exit status 1)" in outcome.out
    assert "This is a bug in django-gmail-smtp" in outcome.out
    assert "-v 3" in outcome.out
    assert "Cause id: unexpected_error" in outcome.out
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("gmail_check", "-v", "3", stdout=out, stderr=err, no_color=True)
    assert info.value.returncode == diagnose.EXIT_UNEXPECTED
    assert "Traceback (most recent call last)" in out.getvalue()
    assert "binascii.Error" in out.getvalue()
    assert SANDBOX_PASSWORD not in out.getvalue()
    doc = gmail_check("--json").doc
    assert (doc["exit_code"], doc["failed_step"], doc["cause"]["id"]) == (1, "auth", "unexpected_error")
    jsonschema.validate(doc, diagnose.JSON_SCHEMA)


def test_expected_failures_keep_their_step_status(settings: Any, closed_port: int) -> None:
    """Each step maps only the errors it expects: a refused connection is still 5."""
    use_server(settings, closed_port)
    assert gmail_check().code == diagnose.EXIT_CODES["connect"]
