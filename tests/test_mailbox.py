"""The receiving side's building blocks: settings, modified UTF-7, LIST parsing, reply causes,
the delivered-header analysis and the bounded reader (over a real socket pair)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from django_gmail_smtp import conf
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.bounded_io import BoundedReader, Deadline, ReplyTooLarge
from django_gmail_smtp.exceptions import GmailConfigError
from django_gmail_smtp.imap import explain_imap_reply, parse_list_line
from django_gmail_smtp.mutf7 import decode_mutf7, encode_mutf7
from django_gmail_smtp.pop import explain_pop_reply
from django_gmail_smtp.roundtrip import address_of, auth_results, receiving_hop
from django_gmail_smtp.sandbox.inbox import gmail_tls_version, verdicts

# -- settings ------------------------------------------------------------------------------


def test_gmail_hosts_by_default_with_provenance() -> None:
    config = conf.resolve({"username": "me@gmail.com"})
    assert (config.imap_host, config.imap_port) == ("imap.gmail.com", 993)
    assert (config.pop_host, config.pop_port) == ("pop.gmail.com", 995)
    assert config.provenance["imap_host"] == conf.Value(conf.SOURCE_DEFAULT, conf.GMAIL_DEFAULT_LABEL)


def test_another_smtp_host_reads_its_own_mailbox_by_default() -> None:
    config = conf.resolve({"host": "mail.example.org", "port": 465, "use_ssl": True})
    assert (config.imap_host, config.imap_port, config.pop_port) == ("mail.example.org", 993, 995)


def test_settings_environment_and_arguments_in_order(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GMAIL_SMTP = {"IMAP_HOST": "imap.example.org", "IMAP_PORT": 1993}
    monkeypatch.setenv("GMAIL_SMTP_POP_PORT", "1995")
    config = conf.resolve({"imap_port": 2993})
    assert (config.imap_host, config.imap_port, config.pop_port) == ("imap.example.org", 2993, 1995)
    assert str(config.provenance["imap_host"].origin) == "GMAIL_SMTP['IMAP_HOST']"
    assert config.provenance["pop_port"].origin == "GMAIL_SMTP_POP_PORT"
    assert config.provenance["imap_port"].source == conf.SOURCE_ARGUMENT


def test_a_port_that_is_not_a_port_is_a_configuration_error(settings: Any) -> None:
    settings.GMAIL_SMTP = {"IMAP_PORT": "imaps"}
    with pytest.raises(GmailConfigError, match=r"The IMAP port 'imaps' \(from GMAIL_SMTP\['IMAP_PORT'\]\)") as info:
        conf.resolve({})
    assert info.value.check_id == "gmail_smtp.E010"


def test_the_mailbox_rows_are_shown_only_for_the_round_trip() -> None:
    config = conf.resolve({"username": "me@gmail.com"})
    assert "imap_host" not in [name for name, _shown, _value in config.describe()]
    assert [name for name, _s, _v in config.describe(mailbox="imap")][-2:] == ["imap_host", "imap_port"]
    assert [name for name, _s, _v in config.describe(mailbox="pop3")][-2:] == ["pop_host", "pop_port"]


def test_the_backend_accepts_the_mailbox_options() -> None:
    """Django 6.1 builds backends with MAILERS OPTIONS as keywords and rejects unknown ones."""
    backend = EmailBackend(username="me@gmail.com", password="abcdabcdabcdabcd", imap_host="imap.example.org")
    assert backend.config.imap_host == "imap.example.org"


def test_with_mailbox_fills_a_configuration_built_elsewhere(settings: Any) -> None:
    settings.GMAIL_SMTP = {"IMAP_PORT": 2993}
    built = conf.SmtpConfig(
        host="127.0.0.1", port=2587, username="u@example.com", password="p", use_tls=True, use_ssl=False, timeout=5
    )
    filled = conf.with_mailbox(built)
    assert (filled.imap_host, filled.imap_port) == ("127.0.0.1", 2993)


# -- modified UTF-7 and LIST ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", "INBOX"),
        ("[Gmail]/迷惑メール", "[Gmail]/&j,dg0TDhMPww6w-"),
        ("[Gmail]/すべてのメール", "[Gmail]/&MFkweTBmMG4w4TD8MOs-"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("日本語", "&ZeVnLIqe-"),
    ],
)
def test_modified_utf7_both_ways(name: str, wire: str) -> None:
    assert encode_mutf7(name) == wire
    assert decode_mutf7(wire) == name
    assert decode_mutf7(wire.encode()) == name


def test_invalid_modified_utf7_is_kept_as_it_is() -> None:
    assert decode_mutf7("a&!!-b") == "a&!!-b"


@pytest.mark.parametrize(
    ("item", "name", "role"),
    [
        (b'(\\HasNoChildren \\Junk) "/" "[Gmail]/&j,dg0TDhMPww6w-"', "[Gmail]/迷惑メール", "junk"),
        (b'(\\HasNoChildren \\All) "/" "[Gmail]/All Mail"', "[Gmail]/All Mail", "all"),
        (b'(\\HasNoChildren \\Trash) "/" Trash', "Trash", "trash"),  # Dovecot: an atom
        (b'(\\HasNoChildren) "/" INBOX', "INBOX", "inbox"),
        ((b'(\\HasNoChildren \\Sent) "/" {9}', b"Sent Mail"), "Sent Mail", "sent"),  # a literal
        (b'(\\HasNoChildren) NIL "Say \\"hi\\""', 'Say "hi"', ""),
    ],
)
def test_list_lines(item: Any, name: str, role: str) -> None:
    folder = parse_list_line(item)
    assert folder is not None
    assert (folder.name, folder.role, folder.selectable) == (name, role, True)


def test_list_line_noselect_and_garbage() -> None:
    folder = parse_list_line(b'(\\Noselect \\HasChildren) "/" "[Gmail]"')
    assert folder is not None
    assert not folder.selectable
    assert parse_list_line(b"garbage") is None


# -- what a refusal means ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        (
            "[ALERT] Your account is not enabled for IMAP use. Please visit your Gmail settings page "
            "and enable your account for IMAP access. (Failure)",
            "imap_disabled",
        ),
        ("[ALERT] IMAP access is disabled for your domain. (Failure)", "imap_disabled"),
        ("[AUTHENTICATIONFAILED] Invalid credentials (Failure)", "imap_bad_credentials"),
        (
            "[ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)",
            "imap_app_password_required",
        ),
        (
            "[ALERT] Please log in via your web browser: https://support.google.com/mail/accounts/answer/78754 (Failure)",
            "imap_web_login_required",
        ),
        ("[ALERT] Too many simultaneous connections. (Failure)", "imap_unavailable"),
        ("[AUTHENTICATIONFAILED] Authentication failed.", "imap_bad_credentials"),  # Dovecot
    ],
)
def test_imap_refusals(reply: str, cause: str) -> None:
    assert explain_imap_reply(reply).id == cause


@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        (
            "-ERR [SYS/PERM] Your account is not enabled for POP access. Please visit your Gmail "
            "settings page and enable your account for POP access.",
            "pop_disabled",
        ),
        ("-ERR [AUTH] Username and password not accepted.", "imap_bad_credentials"),
        ("-ERR [AUTH] Web login required: https://support.google.com/mail/answer/78754", "imap_web_login_required"),
        ("-ERR [IN-USE] Mailbox in use.", "imap_unavailable"),
    ],
)
def test_pop_refusals(reply: str, cause: str) -> None:
    assert explain_pop_reply(reply).id == cause


# -- the delivered header ------------------------------------------------------------------


def test_the_newest_authentication_results_count() -> None:
    newest = (
        "mx.google.com; dkim=pass header.i=@example.com header.s=s1; spf=pass (google.com: domain of "
        "a@example.com designates 1.2.3.4 as permitted sender) smtp.mailfrom=a@example.com; "
        "dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com; dkim=fail header.i=@other.example"
    )
    assert auth_results([newest, "old.example; spf=fail"]) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert auth_results([]) == {"spf": None, "dkim": None, "dmarc": None}
    assert auth_results(["mx; spf=SoftFail smtp.mailfrom=x"])["spf"] == "softfail"


def test_the_receiving_hop_from_gmail_postfix_and_plain_received_headers() -> None:
    gmail = (
        "from [192.168.1.2] (host.example. [203.0.113.7]) by smtp.gmail.com with ESMTPSA id "
        "a1sm123.45 for <you@gmail.com> (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256); "
        "Tue, 02 Jan 2026 10:00:00 -0800 (PST)"
    )
    internal = "by 2002:a05:6402:1234:b0:5f1:2 with SMTP id x; Tue, 02 Jan 2026 10:00:01 -0800 (PST)"
    hop = receiving_hop([internal, gmail])  # newest first: the submission hop is the oldest
    assert hop is not None
    assert (hop["protocol"], hop["tls"], hop["tls_version"], hop["cipher"]) == (
        "ESMTPSA",
        True,
        "TLS1_3",
        "TLS_AES_256_GCM_SHA384",
    )
    postfix = (
        "from client.example (client.example [198.51.100.2]) (using TLSv1.3 with cipher "
        "TLS_AES_128_GCM_SHA256 (128/128 bits)) by mx.example.org (Postfix) with ESMTPS id 4Xyz"
    )
    found = receiving_hop([postfix])
    assert found is not None
    assert (found["tls"], found["tls_version"]) == (True, "TLSv1.3")
    plain = receiving_hop(["from a.example by b.example with ESMTP id 1; Tue, 02 Jan 2026"])
    assert plain is not None
    assert plain["tls"] is False
    assert receiving_hop(["by local (Dovecot) with LMTP id 3"]) is None  # local delivery, not a hop
    assert receiving_hop(["from nowhere"]) is None


def test_addresses_of_from_headers() -> None:
    assert address_of('"Shop" <News@Shop.Example>') == "news@shop.example"
    assert address_of("plain@example.com") == "plain@example.com"


def test_sandbox_verdicts_and_tls_names() -> None:
    assert verdicts("me@example.com", "me@example.com") == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert verdicts("me@example.com", "news@shop.example")["dmarc"] == "fail"
    assert verdicts("me@example.com", "me@example.com", {"spf": "fail"})["spf"] == "fail"
    assert gmail_tls_version("TLSv1.3") == "TLS1_3"


# -- the bounded reader, over a real socket pair ---------------------------------------------


def reader(sock: socket.socket, **caps: Any) -> BoundedReader:
    limits = {"max_line": 64, "max_reply": 256, "max_lines": 5} | caps
    return BoundedReader(sock, deadline=Deadline(5), timeout=2, **limits)


def test_lines_and_exact_reads() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"* OK hello\r\n{5}\r\nabcdeTAIL\r\n")
        bounded = reader(left)
        assert bounded.readline() == b"* OK hello\r\n"
        assert bounded.readline() == b"{5}\r\n"
        assert bounded.read(5) == b"abcde"
        assert bounded.readline() == b"TAIL\r\n"


def test_caps_on_a_line_a_reply_and_its_lines() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"x" * 100)
        with pytest.raises(ReplyTooLarge, match="longer than 64 bytes"):
            reader(left).readline()
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"line\r\n" * 10)
        bounded = reader(left)
        for _ in range(5):
            bounded.readline()
        with pytest.raises(ReplyTooLarge, match="more than 5 lines"):
            bounded.readline()
        bounded.new_reply()  # a new command: the count starts again
        assert bounded.readline() == b"line\r\n"
    left, right = socket.socketpair()
    with left, right, pytest.raises(ReplyTooLarge, match="longer than 256 bytes"):
        reader(left).read(1000)  # refused before a byte is read


def test_the_overall_deadline_ends_a_slow_drip() -> None:
    left, right = socket.socketpair()
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.05):
            try:
                right.sendall(b"x")
            except OSError:
                return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        bounded = BoundedReader(left, deadline=Deadline(0.5), timeout=1, max_line=10**6, max_reply=10**6, max_lines=10)
        with pytest.raises(TimeoutError, match=r"overall limit of 0\.5 s"):
            bounded.readline()
    finally:
        stop.set()
        thread.join(2)
        left.close()
        right.close()


def test_a_deadline_with_a_fake_clock() -> None:
    now = [100.0]
    deadline = Deadline(10, clock=lambda: now[0])
    assert deadline.wait(3) == 3
    now[0] = 108.5
    assert deadline.wait(3) == 1.5
    now[0] = 111
    with pytest.raises(TimeoutError):
        deadline.wait(3)
