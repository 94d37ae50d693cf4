"""The round trip against a real IMAP/POP3 server nobody here wrote: Debian's Dovecot.

The sandbox takes the message over SMTP and, as a delivery agent would, writes it into the
Dovecot account's Maildir (the inbox, or the Japanese-named Junk folder for the spam test);
``gmail_check --round-trip`` then finds it over Dovecot's IMAP or POP3 (implicit TLS), reads
its headers and deletes it. Skipped, with the reason, when the Dovecot binary is missing;
``.ci/run`` installs it, so CI never skips.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from django_gmail_smtp import diagnose
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox, ReceivedMessage
from django_gmail_smtp.sandbox.inbox import delivered_copy

from . import dovecot
from .conftest import LEGACY_API, Outcome, gmail_check

# CI sets REQUIRE_DOVECOT (.ci/run installs Dovecot): there a missing binary fails instead of skipping.
REQUIRED = bool(os.environ.get("REQUIRE_DOVECOT"))
pytestmark = [*LEGACY_API, pytest.mark.skipif(dovecot.DOVECOT is None and not REQUIRED, reason=dovecot.MISSING)]


@dataclass
class Delivery:
    """Where the sandbox files what it receives in Dovecot's Maildir, and after how long."""

    folder: str = "INBOX"
    delay: float = 0.0


@pytest.fixture(scope="module")
def dovecot_server() -> Iterator[dovecot.Dovecot]:
    if dovecot.DOVECOT is None:
        pytest.fail(dovecot.MISSING, pytrace=False)
    server = dovecot.start_dovecot(SANDBOX_USER, SANDBOX_PASSWORD)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def delivery() -> Delivery:
    return Delivery()


def _file_into(server: dovecot.Dovecot, delivery: Delivery, sandbox_name: str) -> Any:
    def on_message(message: ReceivedMessage) -> None:
        data = delivered_copy(message, SANDBOX_USER, server_name=sandbox_name)
        if delivery.delay:
            threading.Timer(delivery.delay, server.deliver, args=(data, delivery.folder)).start()
        else:
            server.deliver(data, delivery.folder)

    return on_message


@pytest.fixture(scope="module")
def smtp_sandbox(dovecot_server: dovecot.Dovecot, delivery: Delivery) -> Iterator[GmailSandbox]:
    """A sandbox SMTP server that delivers into Dovecot's Maildir."""
    with GmailSandbox(on_message=_file_into(dovecot_server, delivery, "gmail-sandbox.localhost")) as sandbox:
        yield sandbox


@pytest.fixture
def dovecot_settings(
    settings: Any, tmp_path: Path, dovecot_server: dovecot.Dovecot, smtp_sandbox: GmailSandbox, delivery: Delivery
) -> Iterator[dovecot.Dovecot]:
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(Path(smtp_sandbox.ca_file).read_bytes() + dovecot_server.ca_pem)
    options = smtp_sandbox.mailer_options("starttls")
    settings.EMAIL_HOST, settings.EMAIL_PORT = options["host"], options["port"]
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = SANDBOX_USER, SANDBOX_PASSWORD
    settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = True, 5
    settings.DEFAULT_FROM_EMAIL = SANDBOX_USER
    settings.GMAIL_SMTP = {
        "SSL_CAFILE": str(bundle),
        "IMAP_HOST": "127.0.0.1",
        "IMAP_PORT": dovecot_server.imap_port,
        "POP_HOST": "127.0.0.1",
        "POP_PORT": dovecot_server.pop_port,
    }
    delivery.folder, delivery.delay = "INBOX", 0.0
    yield dovecot_server
    for folder in ("INBOX", dovecot.JUNK, "Trash", "All Mail"):  # nothing carries over to the next test
        for path in dovecot_server.files(folder):
            path.unlink()


def run(*args: str) -> Outcome:
    outcome = gmail_check("--json", "--round-trip", *args)
    jsonschema.validate(outcome.doc, diagnose.JSON_SCHEMA)
    assert SANDBOX_PASSWORD not in outcome.text
    return outcome


def test_dovecot_version_is_known() -> None:
    assert dovecot.version().startswith("2.")


def test_round_trip_over_dovecot_imap_deletes_the_message_for_good(dovecot_settings: dovecot.Dovecot) -> None:
    outcome = run()
    doc = outcome.doc
    assert outcome.code == 0, (doc["cause"], doc["error"], dovecot_settings.log()[-2000:])
    trip = doc["round_trip"]
    assert (trip["folder"], trip["folder_role"], trip["deleted"]) == ("INBOX", "inbox", True)
    # Dovecot's own special-use flags, its Japanese Junk name decoded from modified UTF-7.
    assert trip["folders"] == {"inbox": "INBOX", "junk": dovecot.JUNK, "trash": "Trash", "all": "All Mail"}
    assert trip["tls"]["tls"] is True
    greeting = next(s for s in doc["steps"] if s["name"] == "imap_connect")["data"]["greeting"]
    assert "Dovecot" in greeting
    # Moved to Trash and expunged there (UID EXPUNGE): no file left anywhere.
    for folder in ("INBOX", "Trash", dovecot.JUNK):
        assert dovecot_settings.files(folder) == [], folder


def test_keep_leaves_the_file_in_the_maildir(dovecot_settings: dovecot.Dovecot) -> None:
    outcome = run("--keep")
    assert outcome.code == 0, outcome.doc["cause"]
    [kept] = dovecot_settings.files("INBOX")
    assert outcome.doc["round_trip"]["message_id"].encode() in kept.read_bytes()


def test_spam_in_dovecots_japanese_junk_folder(dovecot_settings: dovecot.Dovecot, delivery: Delivery) -> None:
    delivery.folder = dovecot.JUNK
    outcome = run()
    assert outcome.code == diagnose.ROUND_TRIP_EXIT_CODES["spam"], outcome.doc["error"]
    assert outcome.doc["round_trip"]["folder"] == dovecot.JUNK
    assert outcome.doc["cause"]["id"] == "round_trip_spam"
    assert dovecot_settings.files(dovecot.JUNK) == []


def test_idle_notices_a_late_delivery(dovecot_settings: dovecot.Dovecot, delivery: Delivery) -> None:
    delivery.delay = 1.5
    outcome = run("--round-trip-timeout", "30")
    doc = outcome.doc
    assert outcome.code == 0, doc["cause"]
    arrival = next(s for s in doc["steps"] if s["name"] == "round_trip_arrival")["data"]
    assert arrival["idle"] is True  # Dovecot offers IDLE after sign-in
    assert doc["round_trip"]["seconds"] >= 1.5
    assert any(line["text"].endswith(" IDLE") for line in doc["mailbox_transcript"])


def test_round_trip_over_dovecot_pop3(dovecot_settings: dovecot.Dovecot) -> None:
    outcome = run("--round-trip-via", "pop3")
    assert outcome.code == 0, outcome.doc["cause"]
    assert outcome.doc["round_trip"]["via"] == "pop3"
    assert outcome.doc["round_trip"]["deleted"] is True
    assert dovecot_settings.files("INBOX") == []  # DELE, then QUIT: Dovecot removed the file


def test_dovecot_refuses_a_wrong_password(
    settings: Any, dovecot_settings: dovecot.Dovecot, delivery: Delivery, tmp_path: Path
) -> None:
    # SMTP accepts another password than the mailbox does: the sign-in failure is the mailbox's.
    other = "anotherappwordxy"
    on_message = _file_into(dovecot_settings, delivery, "gmail-sandbox.localhost")
    with GmailSandbox(users={SANDBOX_USER: other}, on_message=on_message) as sandbox:
        bundle = tmp_path / "bundle2.pem"
        bundle.write_bytes(Path(sandbox.ca_file).read_bytes() + dovecot_settings.ca_pem)
        settings.EMAIL_PORT = sandbox.starttls_port
        settings.EMAIL_HOST_PASSWORD = other
        settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "SSL_CAFILE": str(bundle)}
        for via, step in (("imap", "imap_auth"), ("pop3", "pop_auth")):
            outcome = run("--round-trip-via", via)
            assert outcome.code == diagnose.ROUND_TRIP_EXIT_CODES["mailbox_sign_in"], outcome.doc["error"]
            assert outcome.doc["failed_step"] == step
            assert outcome.doc["cause"]["id"] == "imap_bad_credentials"
            assert other not in outcome.text
