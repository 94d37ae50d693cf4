"""The sandbox's mailboxes, IMAP and POP3 servers, talked to with Python's imaplib and poplib."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import socket
import ssl
import threading
from typing import Any

import pytest

from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox
from django_gmail_smtp.sandbox.imap_server import MailboxLimits

MESSAGE = (
    "From: Sender <sandbox@example.com>\r\nTo: sandbox@example.com\r\nSubject: Hello mailbox\r\n"
    "Message-ID: <hello-1@example.com>\r\n\r\nHi.\r\n"
)


def context(sandbox: GmailSandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=sandbox.ca_file)


def imap(sandbox: GmailSandbox, *, login: bool = True) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(sandbox.host, sandbox.imap_port, ssl_context=context(sandbox), timeout=5)
    if login:
        client.login(SANDBOX_USER, SANDBOX_PASSWORD)
    return client


def pop(sandbox: GmailSandbox) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(sandbox.host, sandbox.pop_port, context=context(sandbox), timeout=5)
    client.user(SANDBOX_USER)
    client.pass_(SANDBOX_PASSWORD)
    return client


def send(sandbox: GmailSandbox, data: str = MESSAGE, *, sender: str = SANDBOX_USER) -> None:
    with smtplib.SMTP_SSL(sandbox.host, sandbox.ssl_port, context=context(sandbox), timeout=5) as client:
        client.login(SANDBOX_USER, SANDBOX_PASSWORD)
        client.sendmail(sender, [SANDBOX_USER], data)


def access_token(server: Any) -> str:
    """An access token from the sandbox's OAuth2 server, as the token endpoint hands it out."""
    status, answer = server.token_endpoint(
        {
            "grant_type": "refresh_token",
            "refresh_token": server.issue_refresh_token(),
            "client_id": server.client_id,
            "client_secret": server.client_secret,
        }
    )
    assert status == 200, answer
    return str(answer["access_token"])


@pytest.fixture
def sandbox(gmail_sandbox: GmailSandbox) -> GmailSandbox:
    return gmail_sandbox


# -- delivery into the mailbox -------------------------------------------------------------


def test_mail_to_the_account_lands_in_its_inbox_with_gmails_headers(sandbox: GmailSandbox) -> None:
    send(sandbox)
    [stored] = sandbox.mailbox.messages(SANDBOX_USER, "INBOX")
    received = stored.header("Received")[0]
    assert "by gmail-sandbox.localhost with ESMTPSA" in received
    assert "version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384" in received
    assert "spf=pass" in stored.header("Authentication-Results")[0]
    assert stored.labels == {"INBOX", "SENT"}  # to oneself: one message, inbox and Sent Mail
    assert [m.number for m in sandbox.mailbox.messages(SANDBOX_USER, "sent")] == [stored.number]
    # What the client sent is kept unchanged for tests that compare it.
    assert sandbox.messages[0].data == MESSAGE.encode()


def test_mail_to_others_does_not_fill_a_mailbox(sandbox: GmailSandbox) -> None:
    with smtplib.SMTP_SSL(sandbox.host, sandbox.ssl_port, context=context(sandbox), timeout=5) as client:
        client.login(SANDBOX_USER, SANDBOX_PASSWORD)
        client.sendmail(SANDBOX_USER, ["someone@example.org"], MESSAGE)
    assert sandbox.mailbox.all_messages(SANDBOX_USER) == []


def test_a_from_that_is_not_an_alias_is_rewritten_in_the_mailbox_copy(sandbox: GmailSandbox) -> None:
    send(sandbox, MESSAGE.replace("Sender <sandbox@example.com>", "Shop <noreply@shop.example>"))
    [stored] = sandbox.mailbox.messages(SANDBOX_USER)
    assert stored.header("From") == ["Shop <sandbox@example.com>"]
    assert stored.header("X-Google-Original-From") == ["Shop <noreply@shop.example>"]
    assert "dmarc=pass" in stored.header("Authentication-Results")[0]


def test_a_verified_alias_is_kept() -> None:
    with GmailSandbox(aliases={SANDBOX_USER: ["noreply@shop.example"]}) as sandbox:
        send(sandbox, MESSAGE.replace("Sender <sandbox@example.com>", "noreply@shop.example"))
        [stored] = sandbox.mailbox.messages(SANDBOX_USER)
        assert stored.header("From") == ["noreply@shop.example"]
        assert stored.header("X-Google-Original-From") == []
        assert "dmarc=fail" in stored.header("Authentication-Results")[0]


def test_injected_spam_and_verdicts(sandbox: GmailSandbox) -> None:
    sandbox.inject("spam")
    sandbox.inject("auth_results", dkim="fail")
    send(sandbox)
    assert sandbox.mailbox.messages(SANDBOX_USER, "INBOX") == []
    [spam] = sandbox.mailbox.messages(SANDBOX_USER, "junk")
    assert "dkim=fail" in spam.header("Authentication-Results")[0]


@pytest.mark.parametrize(
    ("kind", "params", "error"),
    [
        ("slow_arrival", {}, "needs the parameter"),
        ("slow_arrival", {"seconds": 0}, "S > 0"),
        ("auth_results", {"spf": "great"}, "one of: fail"),
        ("spam", {"folder": "x"}, "does not take"),
    ],
)
def test_mailbox_injections_are_validated(sandbox: GmailSandbox, kind: str, params: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        sandbox.inject(kind, **params)


# -- IMAP ----------------------------------------------------------------------------------


def test_list_shows_gmails_folders_with_special_use_flags(sandbox: GmailSandbox) -> None:
    client = imap(sandbox)
    typ, data = client.list('""', '"*"')
    assert typ == "OK"
    assert b'(\\HasNoChildren \\Junk) "/" "[Gmail]/Spam"' in data
    assert b'(\\Noselect \\HasChildren) "/" "[Gmail]"' in data
    typ, special = client.list('""', '"%"')
    assert {line.split(b'"/" ')[1] for line in special} == {b'"INBOX"', b'"[Gmail]"'}
    client.logout()


def test_japanese_folder_names_travel_in_modified_utf7() -> None:
    with GmailSandbox(mailbox_language="ja") as sandbox:
        client = imap(sandbox)
        _typ, data = client.list('""', '"*"')
        assert b'(\\HasNoChildren \\Junk) "/" "[Gmail]/&j,dg0TDhMPww6w-"' in data
        assert client.select('"[Gmail]/&j,dg0TDhMPww6w-"', readonly=True)[0] == "OK"
        client.logout()


def test_search_fetch_and_seen_flags(sandbox: GmailSandbox) -> None:
    send(sandbox)
    client = imap(sandbox)
    assert client.select("INBOX", readonly=True) == ("OK", [b"1"])
    assert client.uid("SEARCH", "HEADER", "Message-ID", '"<hello-1@example.com>"') == ("OK", [b"1"])
    assert client.uid("SEARCH", "HEADER", "Message-ID", '"<nope@example.com>"') == ("OK", [b""])
    assert client.search(None, "SUBJECT", '"hello MAILBOX"') == ("OK", [b"1"])
    typ, data = client.uid("FETCH", "1", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER])")
    assert typ == "OK"
    assert b"FLAGS ()" in data[0][0]
    assert data[0][1].startswith(b"Return-Path: <sandbox@example.com>")
    client.select("INBOX")
    client.fetch("1", "(BODY[])")
    assert b"\\Seen" in client.fetch("1", "(FLAGS)")[1][0]
    client.logout()


def test_expunge_in_the_inbox_only_removes_the_label_as_on_gmail(sandbox: GmailSandbox) -> None:
    send(sandbox)
    client = imap(sandbox)
    client.select("INBOX")
    client.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = client.expunge()
    assert (typ, data) == ("OK", [b"1"])
    client.logout()
    assert sandbox.mailbox.messages(SANDBOX_USER, "INBOX") == []
    assert len(sandbox.mailbox.messages(SANDBOX_USER, "all")) == 1  # still in All Mail


def test_move_to_trash_then_expunge_there_deletes_for_good(sandbox: GmailSandbox) -> None:
    send(sandbox)
    client = imap(sandbox)
    client.select("INBOX")
    typ, _data = client.uid("MOVE", "1", '"[Gmail]/Trash"')
    assert typ == "OK"
    assert client.untagged_responses.get("EXPUNGE") == [b"1"]
    client.select('"[Gmail]/Trash"')
    client.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
    assert client.uid("EXPUNGE", "1")[0] == "OK"
    client.logout()
    assert sandbox.mailbox.all_messages(SANDBOX_USER) == []


def test_examine_is_read_only(sandbox: GmailSandbox) -> None:
    send(sandbox)
    client = imap(sandbox)
    client.select("INBOX", readonly=True)
    assert client.store("1", "+FLAGS", "(\\Deleted)")[0] == "NO"
    client.logout()


def test_idle_announces_a_new_message(sandbox: GmailSandbox) -> None:
    client = imap(sandbox)
    client.select("INBOX")
    client.send(b"I1 IDLE\r\n")
    assert client.readline().startswith(b"+ idling")
    threading.Timer(0.2, send, args=(sandbox,)).start()
    assert client.readline() == b"* 1 EXISTS\r\n"
    client.send(b"DONE\r\n")
    assert client.readline().startswith(b"I1 OK")
    client.logout()


def test_imap_disabled_and_wrong_passwords(sandbox: GmailSandbox) -> None:
    sandbox.inject("imap_disabled")
    with pytest.raises(imaplib.IMAP4.error, match="not enabled for IMAP use"):
        imap(sandbox)
    client = imap(sandbox, login=False)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\] Invalid credentials"):
        client.login(SANDBOX_USER, "wrongpasswordxyz")
    client.shutdown()


def test_commands_before_sign_in_and_unknown_ones_are_bad(sandbox: GmailSandbox) -> None:
    client = imap(sandbox, login=False)
    client.send(b'X1 LIST "" "*"\r\n')
    assert client.readline().startswith(b"X1 BAD Command not allowed in the not-authenticated state")
    client.send(b"X2 FROBNICATE\r\n")
    assert client.readline().startswith(b"X2 BAD Unknown command")
    client.send(b'X3 SELECT "INBOX\r\n')
    assert client.readline().startswith(b"X3 BAD Could not parse command")
    client.shutdown()


def test_xoauth2_with_sandbox_tokens(sandbox: GmailSandbox, gmail_oauth: Any) -> None:
    token = access_token(gmail_oauth)
    client = imap(sandbox, login=False)
    auth = f"user={SANDBOX_USER}\x01auth=Bearer {token}\x01\x01".encode()
    assert client.authenticate("XOAUTH2", lambda challenge: auth)[0] == "OK"
    client.logout()
    client = imap(sandbox, login=False)
    challenges: list[bytes] = []

    def bad(challenge: bytes) -> bytes:
        challenges.append(challenge)
        return f"user={SANDBOX_USER}\x01auth=Bearer ya29.wrong\x01\x01".encode() if not challenge else b""

    with pytest.raises(imaplib.IMAP4.error, match="Invalid credentials"):
        client.authenticate("XOAUTH2", bad)
    assert b'"scope":"https://mail.google.com/"' in challenges[-1]
    client.shutdown()


# -- the servers' caps ---------------------------------------------------------------------


def raw_tls(sandbox: GmailSandbox, port: int) -> ssl.SSLSocket:
    sock = socket.create_connection((sandbox.host, port), 5)
    return context(sandbox).wrap_socket(sock, server_hostname=sandbox.host)


def read_all(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_an_overlong_command_line_is_refused_and_the_connection_closed(sandbox: GmailSandbox) -> None:
    with raw_tls(sandbox, sandbox.imap_port) as sock:
        sock.sendall(b"A1 NOOP " + b"x" * (70 * 1024) + b"\r\n")
        assert b"* BAD [TOOBIG] Command line too long" in read_all(sock)


def test_an_overlong_literal_is_refused_before_it_is_read(sandbox: GmailSandbox) -> None:
    with raw_tls(sandbox, sandbox.imap_port) as sock:
        sock.sendall(b"A1 LOGIN {100000000}\r\n")
        answer = read_all(sock)
        assert b"* BAD [TOOBIG] Literal too large" in answer
        assert b"+ go ahead" not in answer


def test_idle_clients_are_logged_out_and_connections_capped() -> None:
    limits = MailboxLimits(idle_timeout=0.3, connections=1)
    with GmailSandbox(mailbox_limits=limits) as sandbox, raw_tls(sandbox, sandbox.imap_port) as sock:
        with raw_tls(sandbox, sandbox.pop_port) as second:
            assert read_all(second) == b"-ERR [SYS/TEMP] Too many simultaneous connections.\r\n"
        assert read_all(sock).endswith(b"* BYE Session expired, please login again.\r\n")


# -- POP3 ----------------------------------------------------------------------------------


def test_pop3_shows_each_message_once_and_dele_moves_it_to_trash(sandbox: GmailSandbox) -> None:
    send(sandbox)
    send(sandbox, MESSAGE.replace("hello-1", "hello-2"))
    client = pop(sandbox)
    assert client.stat()[0] == 2
    _resp, lines, _octets = client.retr(1)
    assert b"Message-ID: <hello-1@example.com>" in lines
    client.dele(2)
    client.quit()
    assert pop(sandbox).stat()[0] == 0  # the first was downloaded, the second deleted
    assert [m.header("Message-ID") for m in sandbox.mailbox.messages(SANDBOX_USER, "trash")] == [
        ["<hello-2@example.com>"]
    ]
    assert len(sandbox.mailbox.messages(SANDBOX_USER, "INBOX")) == 1  # downloaded, still in Gmail


def test_pop3_top_uidl_and_no_commit_without_quit(sandbox: GmailSandbox) -> None:
    send(sandbox)
    client = pop(sandbox)
    assert client.uidl()[1][0].startswith(b"1 GmailId")
    _resp, header, _octets = client.top(1, 0)
    assert header[-1] == b""
    assert b"Subject: Hello mailbox" in header
    client.dele(1)
    client.close()  # no QUIT: nothing happens
    assert pop(sandbox).stat()[0] == 1


def test_pop3_disabled_and_xoauth2(sandbox: GmailSandbox, gmail_oauth: Any) -> None:
    sandbox.inject("pop_disabled")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\] Your account is not enabled for POP access"):
        pop(sandbox)
    token = access_token(gmail_oauth)
    client = poplib.POP3_SSL(sandbox.host, sandbox.pop_port, context=context(sandbox), timeout=5)
    blob = base64.b64encode(f"user={SANDBOX_USER}\x01auth=Bearer {token}\x01\x01".encode()).decode()
    assert client._shortcmd(f"AUTH XOAUTH2 {blob}").startswith(b"+OK")
    client.quit()
