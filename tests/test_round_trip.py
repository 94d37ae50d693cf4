"""``gmail_check --round-trip`` against the sandbox (SMTP in, IMAP/POP3 out) and scripted servers.

Every server is on 127.0.0.1 over real TLS: the Gmail sandbox (its SMTP side takes the message,
its mailbox serves it back over IMAP and POP3), and, for what no friendly server does, small
scripted servers (``tests/mailbox_servers.py``).
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import django
import jsonschema  # type: ignore[import-untyped]
import pytest

from django_gmail_smtp import diagnose, roundtrip
from django_gmail_smtp.management.commands.gmail_check import Command
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox

from .conftest import LEGACY_API, Outcome, gmail_check
from .mailbox_servers import Conn, ScriptedServer, serve_until

pytestmark = LEGACY_API

CODES = diagnose.ROUND_TRIP_EXIT_CODES


# -- helpers -------------------------------------------------------------------------------


def use_round_trip(
    settings: Any,
    sandbox: GmailSandbox,
    *,
    from_email: str = SANDBOX_USER,
    ca_file: str | None = None,
    **gmail_smtp: Any,
) -> None:
    """The EMAIL_* settings at the sandbox's SMTP side, its IMAP and POP3 servers in GMAIL_SMTP."""
    options = sandbox.mailer_options("starttls")
    settings.EMAIL_HOST, settings.EMAIL_PORT = options["host"], options["port"]
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = options["username"], options["password"]
    settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = True, 3
    settings.DEFAULT_FROM_EMAIL = from_email
    settings.GMAIL_SMTP = {
        "SSL_CAFILE": ca_file or sandbox.ca_file,
        "IMAP_HOST": sandbox.host,
        "IMAP_PORT": sandbox.imap_port,
        "POP_HOST": sandbox.host,
        "POP_PORT": sandbox.pop_port,
        **gmail_smtp,
    }


def check_json(*args: str) -> Outcome:
    outcome = gmail_check("--json", "--round-trip", *args)
    jsonschema.validate(outcome.doc, diagnose.JSON_SCHEMA)
    assert outcome.doc["exit_code"] == outcome.code
    assert_no_secret(outcome.text)
    return outcome


def assert_no_secret(text: str) -> None:
    for form in (
        SANDBOX_PASSWORD,
        base64.b64encode(SANDBOX_PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{SANDBOX_USER}\0{SANDBOX_PASSWORD}".encode()).decode(),
    ):
        assert form not in text


def step(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in doc["steps"] if s["name"] == name]
    assert found, f"no step {name}: {[s['name'] for s in doc['steps']]}"
    return found[-1]


def combined_ca(tmp_path: Path, *files: str) -> str:
    """One CA bundle trusting several servers (SMTP: the sandbox; IMAP: a scripted server)."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("".join(Path(f).read_text() for f in files))
    return str(bundle)


# -- success -------------------------------------------------------------------------------


def test_round_trip_proves_delivery_and_deletes_the_message(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    outcome = gmail_check("--round-trip")
    assert outcome.code == 0, outcome.text
    for title in (
        "Round-trip message to sandbox@example.com... OK",
        f"IMAP connection to 127.0.0.1:{gmail_sandbox.imap_port} (implicit TLS)... OK",
        "Mailbox sign-in as sandbox@example.com... OK",
        "Mailbox folders... OK",
        "Waiting for the test message (up to 60 s)... OK",
        "Folder it arrived in... OK",
        "From address as delivered... OK",
        "SPF, DKIM and DMARC... OK",
        "TLS of the receiving hop... OK",
        "Deleting the test message... OK",
        "IMAP LOGOUT... OK",
    ):
        assert title in outcome.out, title
    assert "    Spam (\\Junk): [Gmail]/Spam" in outcome.out
    assert "    spf=pass, dkim=pass, dmarc=pass" in outcome.out
    assert "received over TLS (TLS1_3, TLS_AES_256_GCM_SHA384)" in outcome.out
    assert "moved to [Gmail]/Trash and expunged there" in outcome.out
    assert "Delivery proven: the test message arrived in INBOX after" in outcome.out
    # The SMTP side took one message for the account; the mailbox is empty again (Gmail's way:
    # moved to Trash, expunged there; not merely unlabelled and left in All Mail).
    [sent] = gmail_sandbox.messages
    assert sent.rcpt_tos == [SANDBOX_USER]
    assert sent.message["Subject"].startswith("gmail_check round trip ")
    assert gmail_sandbox.mailbox.all_messages(SANDBOX_USER) == []
    assert_no_secret(outcome.text)


def test_json_document_has_the_round_trip_fields(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    outcome = check_json()
    doc = outcome.doc
    assert outcome.code == 0
    trip = doc["round_trip"]
    assert trip["via"] == "imap"
    assert trip["arrived"] is True
    assert trip["folder"] == "INBOX"
    assert trip["folder_role"] == "inbox"
    assert isinstance(trip["seconds"], float)
    assert trip["from_sent"] == trip["from_delivered"] == SANDBOX_USER
    assert trip["from_rewritten"] is False
    assert trip["authentication_results"] == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert trip["tls"]["tls"] is True
    assert trip["tls"]["tls_version"] == "TLS1_3"
    assert trip["deleted"] is True
    assert trip["folders"]["junk"] == "[Gmail]/Spam"
    assert trip["message_id"] == step(doc, "round_trip_send")["data"]["message_id"]
    assert step(doc, "round_trip_arrival")["data"]["folder"] == "INBOX"
    transcript = [line["text"] for line in doc["mailbox_transcript"]]
    assert any(text.endswith(" LOGIN <redacted>") for text in transcript)
    assert not any(SANDBOX_PASSWORD in text for text in transcript)
    names = [s["name"] for s in doc["steps"]]
    assert names.index("quit") < names.index("imap_connect") < names.index("round_trip_cleanup")


def test_keep_leaves_the_message_in_the_inbox(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    doc = check_json("--keep").doc
    assert doc["ok"]
    assert doc["round_trip"]["deleted"] is False
    assert step(doc, "round_trip_cleanup")["status"] == "skipped"
    [kept] = gmail_sandbox.mailbox.messages(SANDBOX_USER, "INBOX")
    assert doc["round_trip"]["message_id"] in kept.header("Message-ID")


def test_verbose_output_shows_the_imap_conversation_without_the_password(
    settings: Any, gmail_sandbox: GmailSandbox
) -> None:
    use_round_trip(settings, gmail_sandbox)
    outcome = gmail_check("--round-trip", "-v", "2")
    assert outcome.code == 0
    assert "IMAP conversation (credentials hidden):" in outcome.out
    assert " LOGIN <redacted>" in outcome.out
    assert "UID SEARCH HEADER Message-ID" in outcome.out
    assert_no_secret(outcome.text)


def test_imap_without_idle_move_or_uidplus_still_works(settings: Any) -> None:
    with GmailSandbox(imap_extensions=()) as sandbox:
        use_round_trip(settings, sandbox)
        outcome = check_json("--keep")
        assert outcome.code == 0, outcome.text
        assert step(outcome.doc, "round_trip_arrival")["data"]["idle"] is False
        outcome = check_json()
        assert outcome.code == 0, outcome.text
        # Without MOVE: COPY to Trash, flag and expunge; without UIDPLUS: EXPUNGE only when no
        # other message of the folder is marked deleted. The kept message is the only one left.
        assert len(sandbox.mailbox.all_messages(SANDBOX_USER)) == 1


def test_a_message_arriving_late_is_waited_for(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("slow_arrival", seconds=1.5)
    doc = check_json("--round-trip-timeout", "20").doc
    assert doc["ok"], doc["cause"]
    assert doc["round_trip"]["seconds"] >= 1.5
    assert step(doc, "round_trip_arrival")["data"]["searches"] >= 1


# -- what arrived, and how -----------------------------------------------------------------


def test_spam_fails_with_its_own_exit_status_and_still_reports_the_rest(
    settings: Any, gmail_sandbox: GmailSandbox
) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("spam")
    outcome = check_json()
    doc = outcome.doc
    assert outcome.code == CODES["spam"] == 18
    assert doc["failed_step"] == "round_trip_folder"
    assert doc["cause"]["id"] == "round_trip_spam"
    assert doc["round_trip"]["folder"] == "[Gmail]/Spam"
    assert doc["round_trip"]["folder_role"] == "junk"
    # The steps after the folder still ran: what Gmail saw, and the cleanup.
    assert step(doc, "round_trip_authentication")["status"] == "ok"
    assert doc["round_trip"]["deleted"] is True
    assert gmail_sandbox.mailbox.all_messages(SANDBOX_USER) == []


def test_japanese_folder_names_are_found_by_their_special_use_flags(settings: Any) -> None:
    with GmailSandbox(mailbox_language="ja") as sandbox:
        use_round_trip(settings, sandbox)
        sandbox.inject("spam")
        outcome = gmail_check("--round-trip", "--lang", "ja")
        assert outcome.code == CODES["spam"]
        assert "[Gmail]/迷惑メール" in outcome.out
        assert "[round_trip_spam]" in outcome.err
        assert sandbox.mailbox.all_messages(SANDBOX_USER) == []  # moved to [Gmail]/ゴミ箱 and expunged


def test_a_from_that_is_not_an_alias_is_rewritten_by_gmail(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox, from_email="noreply@shop.example")
    outcome = check_json()
    doc = outcome.doc
    assert outcome.code == 0  # delivered; the rewrite is a warning with its cause and fix
    trip = doc["round_trip"]
    assert (trip["from_sent"], trip["from_delivered"], trip["from_rewritten"]) == (
        "noreply@shop.example",
        SANDBOX_USER,
        True,
    )
    found = step(doc, "round_trip_from")
    assert found["status"] == "warning"
    assert found["cause_id"] == "round_trip_from_rewritten"
    assert found["data"]["original_from"] == "noreply@shop.example"
    text = gmail_check("--round-trip").out
    assert "Cause: Gmail replaced the From address" in text
    assert "GMAIL_SMTP['FROM_ALIASES']" in text
    assert "But look at: From address as delivered." in text


def test_a_verified_alias_on_another_domain_keeps_its_from_but_fails_dmarc(settings: Any) -> None:
    with GmailSandbox(aliases={SANDBOX_USER: ["news@shop.example"]}) as sandbox:
        use_round_trip(settings, sandbox, from_email="Shop <news@shop.example>")
        doc = check_json().doc
        assert doc["ok"]
        assert doc["round_trip"]["from_rewritten"] is False
        assert doc["round_trip"]["authentication_results"]["dmarc"] == "fail"
        found = step(doc, "round_trip_authentication")
        assert (found["status"], found["cause_id"]) == ("warning", "round_trip_auth_failed")


def test_authentication_results_as_the_server_wrote_them(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("auth_results", spf="softfail", dkim="none")
    doc = check_json().doc
    assert doc["round_trip"]["authentication_results"] == {"spf": "softfail", "dkim": "none", "dmarc": "pass"}
    assert step(doc, "round_trip_authentication")["cause_id"] == "round_trip_auth_failed"


# -- failures, each with its cause and exit status -----------------------------------------


def test_not_arrived_in_time(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("slow_arrival", seconds=30)
    outcome = check_json("--round-trip-timeout", "1")
    assert outcome.code == CODES["not_arrived"] == 17
    assert outcome.doc["cause"]["id"] == "round_trip_timeout"
    assert outcome.doc["round_trip"]["arrived"] is False
    assert step(outcome.doc, "round_trip_arrival")["data"]["searched"] == [
        "INBOX",
        "[Gmail]/Spam",
        "[Gmail]/All Mail",
    ]


def test_imap_disabled_is_recognised_from_gmails_no_reply(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("imap_disabled")
    outcome = gmail_check("--round-trip")
    assert outcome.code == CODES["mailbox_disabled"] == 14
    assert "Your account is not enabled for IMAP use" in outcome.out
    assert "Cause id: imap_disabled" in outcome.out
    assert "--round-trip-via pop3" in outcome.out  # the fix names the fallback


def test_mailbox_sign_in_refused(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("mailbox_bad_credentials")
    outcome = check_json()
    assert outcome.code == CODES["mailbox_sign_in"] == 15
    assert outcome.doc["failed_step"] == "imap_auth"
    assert outcome.doc["cause"]["id"] == "imap_bad_credentials"
    assert "[AUTHENTICATIONFAILED] Invalid credentials (Failure)" in outcome.doc["error"]


def test_imap_server_unreachable(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "IMAP_PORT": gmail_sandbox.starttls_port}  # SMTP, not TLS
    outcome = check_json()
    assert outcome.code == CODES["mailbox_connect"] == 13
    assert outcome.doc["failed_step"] == "imap_connect"


def test_untrusted_imap_certificate(settings: Any, gmail_sandbox: GmailSandbox, tmp_path: Path) -> None:
    with ScriptedServer(lambda conn: serve_until(conn, "LOGOUT"), tmp_path) as server:
        use_round_trip(settings, gmail_sandbox, IMAP_PORT=server.port)  # its CA is not trusted
        outcome = check_json()
    assert outcome.code == CODES["mailbox_connect"]
    assert outcome.doc["cause"]["id"] == "cert_untrusted"


def test_round_trip_options_need_round_trip(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    for args in (["--keep"], ["--round-trip-via", "pop3"], ["--round-trip-timeout", "5"]):
        outcome = gmail_check(*args)
        assert outcome.code == diagnose.EXIT_USAGE
        assert "needs --round-trip" in outcome.err
    assert gmail_check("--round-trip", "--round-trip-timeout", "0").code == diagnose.EXIT_USAGE
    assert gmail_check("--round-trip", "--from", "not an address").code == diagnose.EXIT_USAGE
    assert gmail_sandbox.connections == 0


def test_a_username_that_is_not_an_address_stops_at_the_configuration(
    settings: Any, gmail_sandbox: GmailSandbox
) -> None:
    use_round_trip(settings, gmail_sandbox)
    settings.EMAIL_HOST_USER = "sandbox"
    outcome = check_json()
    assert outcome.code == diagnose.EXIT_CODES["config"]
    assert outcome.doc["cause"]["id"] == "round_trip_no_address"
    assert gmail_sandbox.connections == 0


def test_exit_statuses_of_the_round_trip_are_distinct_and_documented() -> None:
    codes = [*diagnose.EXIT_CODES.values(), *CODES.values(), diagnose.EXIT_OK, diagnose.EXIT_UNEXPECTED]
    assert len(set(codes)) == len(codes)
    assert sorted(CODES.values()) == list(range(13, 20))
    help_text = Command().create_parser("manage.py", "gmail_check").format_help()
    for code in CODES.values():
        assert f"  {code:>2}  --round-trip" in help_text
    for option in ("--round-trip", "--round-trip-timeout", "--round-trip-via", "--keep", "--from"):
        assert option in help_text


# -- POP3, the fallback --------------------------------------------------------------------


def test_round_trip_over_pop3(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    outcome = check_json("--round-trip-via", "pop3")
    doc = outcome.doc
    assert outcome.code == 0, doc["cause"]
    assert doc["round_trip"]["via"] == "pop3"
    assert doc["round_trip"]["folder"] == "INBOX"
    assert [s["name"] for s in doc["steps"] if s["name"].startswith("pop")] == ["pop_connect", "pop_auth", "pop_quit"]
    assert "imap_connect" not in [s["name"] for s in doc["steps"]]
    assert any(line["text"] == "PASS <redacted>" for line in doc["mailbox_transcript"])
    # DELE, committed at QUIT: the sandbox (like Gmail with "delete Gmail's copy") moved it to Trash.
    assert gmail_sandbox.mailbox.messages(SANDBOX_USER, "INBOX") == []
    assert len(gmail_sandbox.mailbox.messages(SANDBOX_USER, "trash")) == 1


def test_pop3_disabled(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("pop_disabled")
    outcome = check_json("--round-trip-via", "pop3")
    assert outcome.code == CODES["mailbox_disabled"]
    assert outcome.doc["cause"]["id"] == "pop_disabled"
    assert "not enabled for POP access" in outcome.doc["error"]


def test_pop3_cannot_see_spam(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("spam")
    outcome = check_json("--round-trip-via", "pop3", "--round-trip-timeout", "1")
    assert outcome.code == CODES["not_arrived"]
    assert "Over POP3 a message in Spam is never seen." in outcome.doc["cause"]["fix"]


def test_pop3_waits_for_a_late_message_in_a_new_session(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    use_round_trip(settings, gmail_sandbox)
    gmail_sandbox.inject("slow_arrival", seconds=1)
    doc = check_json("--round-trip-via", "pop3", "--round-trip-timeout", "20").doc
    assert doc["ok"], doc["cause"]
    assert step(doc, "round_trip_arrival")["data"]["sessions"] >= 2


# -- OAuth2: AUTHENTICATE XOAUTH2 with the token SMTP used ---------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("via", ["imap", "pop3"])
def test_round_trip_with_oauth2(
    settings: Any, monkeypatch: pytest.MonkeyPatch, gmail_sandbox: GmailSandbox, gmail_oauth: Any, via: str
) -> None:
    use_round_trip(settings, gmail_sandbox, **gmail_oauth.settings())
    settings.EMAIL_HOST_PASSWORD = ""
    refresh_token = gmail_oauth.issue_refresh_token()
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_ID", gmail_oauth.client_id)
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_SECRET", gmail_oauth.client_secret)
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_REFRESH_TOKEN", refresh_token)
    outcome = check_json("--round-trip-via", via)
    assert outcome.code == 0, outcome.doc["cause"]
    auth = step(outcome.doc, f"{'imap' if via == 'imap' else 'pop'}_auth")
    assert auth["data"]["mechanism"] == "XOAUTH2"
    for secret in [gmail_oauth.client_secret, refresh_token, *gmail_oauth.issued_tokens()]:
        assert secret not in outcome.text
    assert any("<redacted>" in line["text"] for line in outcome.doc["mailbox_transcript"])


# -- servers that misbehave: caps and deadlines --------------------------------------------


def _scripted(settings: Any, sandbox: GmailSandbox, tmp_path: Path, server: ScriptedServer) -> None:
    use_round_trip(settings, sandbox, ca_file=combined_ca(tmp_path, sandbox.ca_file, server.ca_file))
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "IMAP_PORT": server.port}


def test_a_mailbox_server_echoing_the_password_cannot_show_it(
    settings: Any, gmail_sandbox: GmailSandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def script(conn: Conn) -> None:
        tag, arguments = serve_until(conn, "LOGIN")  # the arguments hold the password
        conn.line(f"* OK you said {arguments}")
        blob = base64.b64encode(arguments.encode()).decode()
        conn.line(f"{tag} NO [AUTHENTICATIONFAILED] not accepted: {arguments} {blob}")
        serve_until(conn, "LOGOUT", greeting="")

    with ScriptedServer(script, tmp_path) as server, caplog.at_level("DEBUG", "django_gmail_smtp.transcript"):
        _scripted(settings, gmail_sandbox, tmp_path, server)
        settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "TRANSCRIPT": True}  # the transcript's log too
        outcome = check_json("-v", "2")
        text = gmail_check("--round-trip", "-v", "2").text
    assert "you said" in caplog.text
    assert_no_secret(caplog.text)
    assert outcome.code == CODES["mailbox_sign_in"]
    assert "<redacted>" in outcome.doc["error"]
    assert any(
        "you said" in line["text"] and "<redacted>" in line["text"] for line in outcome.doc["mailbox_transcript"]
    )
    assert_no_secret(text)  # check_json already checked the JSON


def test_a_list_refused_is_a_folder_failure(settings: Any, gmail_sandbox: GmailSandbox, tmp_path: Path) -> None:
    def script(conn: Conn) -> None:
        tag, _rest = serve_until(conn, "LIST")
        conn.line(f"{tag} NO [UNAVAILABLE] LIST is not possible now")
        serve_until(conn, "LOGOUT", greeting="")

    with ScriptedServer(script, tmp_path) as server:
        _scripted(settings, gmail_sandbox, tmp_path, server)
        outcome = check_json()
    assert outcome.code == CODES["mailbox_folder"] == 16
    assert outcome.doc["cause"]["id"] == "imap_no_folder"


def test_an_announced_huge_literal_is_refused_before_it_is_read(
    settings: Any, gmail_sandbox: GmailSandbox, tmp_path: Path
) -> None:
    def script(conn: Conn) -> None:
        _tag, _rest = serve_until(conn, "LIST")
        conn.line('* LIST (\\HasNoChildren) "/" {4000000000}')
        time.sleep(2)  # never sends it

    with ScriptedServer(script, tmp_path) as server:
        _scripted(settings, gmail_sandbox, tmp_path, server)
        outcome = check_json()
    assert outcome.code == CODES["mailbox_protocol"] == 19
    assert "literal of 4000000000 bytes" in outcome.doc["error"]


def test_an_endless_line_is_cut_at_the_cap(settings: Any, gmail_sandbox: GmailSandbox, tmp_path: Path) -> None:
    def script(conn: Conn) -> None:
        conn.send(b"* OK " + b"x" * (200 * 1024))  # no line end, longer than the 64 KiB cap
        time.sleep(2)

    with ScriptedServer(script, tmp_path) as server:
        _scripted(settings, gmail_sandbox, tmp_path, server)
        outcome = check_json()
    assert outcome.code == CODES["mailbox_protocol"]
    assert "longer than" in outcome.doc["error"]


def test_a_flood_of_untagged_responses_is_cut_at_the_cap(
    settings: Any, gmail_sandbox: GmailSandbox, tmp_path: Path
) -> None:
    def script(conn: Conn) -> None:
        _tag, _rest = serve_until(conn, "LIST")
        line = b'* LIST (\\HasNoChildren) "/" "Folder"\r\n'
        try:
            for _ in range(200):
                conn.send(line * 200)
        except OSError:
            pass

    with ScriptedServer(script, tmp_path) as server:
        _scripted(settings, gmail_sandbox, tmp_path, server)
        outcome = check_json()
    assert outcome.code == CODES["mailbox_protocol"]
    assert "more than 20000 lines" in outcome.doc["error"]


def test_a_server_dripping_bytes_is_stopped_by_the_overall_deadline(
    settings: Any, gmail_sandbox: GmailSandbox, tmp_path: Path
) -> None:
    stop = threading.Event()

    def script(conn: Conn) -> None:
        while not stop.is_set():  # a byte now and then: no single read ever times out
            conn.send(b"*")
            stop.wait(0.3)

    with ScriptedServer(script, tmp_path) as server:
        _scripted(settings, gmail_sandbox, tmp_path, server)
        settings.EMAIL_TIMEOUT = 1
        outcome = check_json("--round-trip-timeout", "1")
        stop.set()
    assert outcome.code == CODES["mailbox_connect"]
    assert "overall limit" in outcome.doc["error"]


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is new in Django 6.1")
def test_mailers_options_carry_the_mailbox(settings: Any, gmail_sandbox: GmailSandbox) -> None:
    """Django 6.1 builds the backend from OPTIONS and rejects unknown ones: imap_host/imap_port pass."""
    from django.core.mail import mailers  # type: ignore[attr-defined]

    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    settings.DEFAULT_FROM_EMAIL = SANDBOX_USER
    settings.MAILERS = {
        "default": {
            "BACKEND": "django_gmail_smtp.backend.EmailBackend",
            "OPTIONS": gmail_sandbox.mailer_options("ssl") | gmail_sandbox.mailbox_options("imap"),
        },
    }
    assert mailers["default"].config.imap_port == gmail_sandbox.imap_port
    outcome = check_json("--using", "default")
    assert outcome.code == 0, outcome.doc["cause"]
    values = {row["name"]: row for row in outcome.doc["config"]["values"]}
    assert values["imap_port"]["value"] == gmail_sandbox.imap_port
    assert values["imap_port"]["origin"] == "MAILERS['default']['OPTIONS']['imap_port']"


def test_the_round_trip_object_refuses_an_unknown_way() -> None:
    with pytest.raises(ValueError, match="via must be one of"):
        roundtrip.RoundTrip(via="smtp")
