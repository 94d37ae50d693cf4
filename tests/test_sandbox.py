"""The Gmail sandbox over real sockets and real TLS, with smtplib (or a raw socket) as client."""

from __future__ import annotations

import base64
import gc
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox, PortInUseError, ReceivedMessage
from django_gmail_smtp.sandbox.replies import Reply

SID = r"\S+ - gsmtp"
MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Hello\r\n\r\nHello from the sandbox.\r\n"


def tls_context(sb: GmailSandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=sb.ca_file)


def connect(sb: GmailSandbox, mode: str = "starttls", *, login: bool = True) -> smtplib.SMTP:
    """A signed-in smtplib client on the STARTTLS port or the implicit-TLS port."""
    client: smtplib.SMTP
    if mode == "ssl":
        client = smtplib.SMTP_SSL(sb.host, sb.ssl_port, timeout=5, context=tls_context(sb))
    else:
        client = smtplib.SMTP(sb.host, sb.starttls_port, timeout=5)
        client.starttls(context=tls_context(sb))
    if login:
        client.login(SANDBOX_USER, SANDBOX_PASSWORD)
    return client


def reply_lines(error: bytes | str) -> list[str]:
    """smtplib's joined multi-line reply text, split, session id stripped."""
    text = error.decode() if isinstance(error, bytes) else error
    return [re.sub(r" \S+ - gsmtp$", "", line) for line in text.split("\n")]


def test_a_reply_of_the_table_is_built_as_gmail_words_it() -> None:
    """Continuation lines carry "-", only the last line the session id's tail; {fields} are filled in."""
    reply = Reply(553, "5.1.3", ("The address <{address}> is wrong.", " https://example.com/help"))
    assert reply("abc123", address="a@b") == (
        "553-5.1.3 The address <a@b> is wrong.\r\n553 5.1.3  https://example.com/help abc123 - gsmtp"
    )
    assert reply(address="a@b").endswith(" https://example.com/help"), "no session id, no tail"
    assert Reply(354, "", ("Go ahead",))("abc123") == "354 Go ahead abc123 - gsmtp", "no status, no gap"


class RawClient:
    """An implicit-TLS socket speaking SMTP by hand: for pipelining and BDAT."""

    def __init__(self, sb: GmailSandbox) -> None:
        raw = socket.create_connection((sb.host, sb.ssl_port), timeout=5)
        self.sock = tls_context(sb).wrap_socket(raw, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[str]]:
        lines = []
        while True:
            line = self.file.readline().decode()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line[4:].rstrip("\r\n"))
            if line[3] == " ":
                return int(line[:3]), lines

    def login(self) -> None:
        token = base64.b64encode(f"\0{SANDBOX_USER}\0{SANDBOX_PASSWORD}".encode()).decode()
        self.send(f"EHLO client.example\r\nAUTH PLAIN {token}\r\n".encode())
        assert self.reply()[0] == 250
        assert self.reply() == (235, ["2.7.0 Accepted"])

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw(gmail_sandbox: GmailSandbox) -> Iterator[RawClient]:
    client = RawClient(gmail_sandbox)
    client.login()
    yield client
    client.close()


@pytest.fixture
def small_sandbox() -> Iterator[GmailSandbox]:
    with GmailSandbox(size_limit=1000) as sb:
        yield sb


# -- session shape ------------------------------------------------------------------------


def test_greeting_and_ehlo_before_starttls(gmail_sandbox: GmailSandbox) -> None:
    client = smtplib.SMTP()
    code, greeting = client.connect(gmail_sandbox.host, gmail_sandbox.starttls_port)
    assert code == 220
    assert re.fullmatch(rf"gmail-sandbox\.localhost ESMTP {SID}", greeting.decode())
    code, text = client.ehlo("client.example")
    assert code == 250
    assert text.decode().split("\n") == [
        "gmail-sandbox.localhost at your service, [127.0.0.1]",
        "SIZE 35882577",
        "8BITMIME",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "PIPELINING",
        "CHUNKING",
        "SMTPUTF8",
    ]
    assert not client.has_extn("auth")
    client.quit()


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_ehlo_once_encrypted_offers_auth_not_starttls(gmail_sandbox: GmailSandbox, mode: str) -> None:
    client = connect(gmail_sandbox, mode, login=False)
    text = client.ehlo("client.example")[1]
    assert text.decode().split("\n")[1:] == [
        "SIZE 35882577",
        "8BITMIME",
        "AUTH LOGIN PLAIN XOAUTH2",  # Gmail also lists PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH
        "ENHANCEDSTATUSCODES",
        "PIPELINING",
        "CHUNKING",
        "SMTPUTF8",
    ]
    assert client.docmd("STARTTLS")[0] == 502
    client.quit()


def test_session_id_is_the_same_within_a_connection_and_new_for_the_next(gmail_sandbox: GmailSandbox) -> None:
    ids = []
    for _ in range(2):
        client = smtplib.SMTP(gmail_sandbox.host, gmail_sandbox.starttls_port, timeout=5)
        ids.append(client.docmd("NOOP")[1].decode().split()[-3])
        assert client.docmd("RSET")[1].decode().split()[-3] == ids[-1]
        assert client.quit() == (221, f"2.0.0 closing connection {ids[-1]} - gsmtp".encode())
    assert ids[0] != ids[1]


def test_auth_and_mail_before_starttls_are_refused(gmail_sandbox: GmailSandbox) -> None:
    client = smtplib.SMTP(gmail_sandbox.host, gmail_sandbox.starttls_port, timeout=5)
    client.ehlo()
    with pytest.raises(smtplib.SMTPNotSupportedError):
        client.login(SANDBOX_USER, SANDBOX_PASSWORD)
    code, text = client.docmd("AUTH", "PLAIN AHNhbmRib3hAZXhhbXBsZS5jb20Ac2FuZGJveGFwcHBhc3N3ZA==")
    assert (code, reply_lines(text)) == (530, ["5.7.0 Must issue a STARTTLS command first."])
    code, text = client.docmd("MAIL", "FROM:<a@example.com>")
    assert (code, reply_lines(text)) == (530, ["5.7.0 Must issue a STARTTLS command first."])
    client.quit()
    assert gmail_sandbox.auth_attempts == 1
    assert gmail_sandbox.messages == []


def test_mail_without_auth_is_refused_multiline(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox, "ssl", login=False)
    with pytest.raises(smtplib.SMTPSenderRefused) as caught:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert caught.value.smtp_code == 530
    assert reply_lines(caught.value.smtp_error) == [
        "5.7.0 Authentication Required. For more information, go to",
        "5.7.0  https://support.google.com/mail/?p=WantAuthError",
    ]
    client.quit()


@pytest.mark.parametrize(("mode", "port_attr"), [("starttls", "starttls_port"), ("ssl", "ssl_port")])
def test_login_and_send_on_both_ports(gmail_sandbox: GmailSandbox, mode: str, port_attr: str) -> None:
    client = connect(gmail_sandbox, mode)
    assert client.sendmail("a@example.com", ["b@example.com", "c@example.com"], MESSAGE) == {}
    client.quit()
    [message] = gmail_sandbox.wait_for_messages(1)
    assert message == ReceivedMessage(
        mail_from="a@example.com",
        rcpt_tos=["b@example.com", "c@example.com"],
        data=MESSAGE,
        auth_user=SANDBOX_USER,
        tls=True,
        port=getattr(gmail_sandbox, port_attr),
        smtputf8=False,
        via_bdat=False,
    )
    assert message.message["Subject"] == "Hello"
    assert gmail_sandbox.auth_attempts == 1
    assert gmail_sandbox.connections == 1


def test_auth_login_mechanism_and_dot_stuffing(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox, "ssl", login=False)
    client.ehlo()
    client.user, client.password = SANDBOX_USER.upper(), SANDBOX_PASSWORD
    assert client.auth("LOGIN", client.auth_login, initial_response_ok=False)[0] == 235
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nafter\r\n"
    client.sendmail("a@example.com", ["b@example.com"], body)
    client.quit()
    [message] = gmail_sandbox.wait_for_messages(1)
    assert message.data == body
    assert message.auth_user == SANDBOX_USER


def test_wrong_password_gets_gmail_535(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox, login=False)
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        client.login(SANDBOX_USER, "wrongpassword")
    assert caught.value.smtp_code == 535
    error = caught.value.smtp_error
    assert isinstance(error, bytes)
    assert re.fullmatch(
        r"5\.7\.8 Username and Password not accepted\. For more information, go to\n"
        rf"5\.7\.8  https://support\.google\.com/mail/\?p=BadCredentials {SID}",
        error.decode(),
    )
    assert gmail_sandbox.auth_attempts == 2  # smtplib tries PLAIN, then LOGIN
    client.login(SANDBOX_USER, SANDBOX_PASSWORD)  # the connection stays usable
    client.quit()


def test_app_password_with_spaces_is_rejected(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox, login=False)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(SANDBOX_USER, "sand boxa ppp assw d")
    client.quit()


def test_certificate_is_verified_against_ca_file(tmp_path: Path) -> None:
    with GmailSandbox(state_dir=tmp_path, cert_hostnames=("other.example",)) as sb:
        assert sb.ca_file == str(tmp_path / "ca.pem")
        assert Path(sb.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            smtplib.SMTP_SSL(sb.host, sb.ssl_port, timeout=5, context=tls_context(sb))
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            smtplib.SMTP_SSL(sb.host, sb.ssl_port, timeout=5, context=ssl.create_default_context())
        context = tls_context(sb)
        raw = socket.create_connection((sb.host, sb.ssl_port), timeout=5)
        with context.wrap_socket(raw, server_hostname="other.example") as tls:
            assert tls.recv(100).startswith(b"220 gmail-sandbox.localhost ESMTP ")


def test_plaintext_sandbox_never_offers_starttls_or_auth() -> None:
    with GmailSandbox(offer_starttls=False) as sb:
        client = smtplib.SMTP(sb.host, sb.starttls_port, timeout=5)
        client.ehlo()
        assert not client.has_extn("starttls")
        assert not client.has_extn("auth")
        assert client.docmd("STARTTLS")[0] == 502
        assert client.docmd("MAIL", "FROM:<a@example.com>")[0] == 530
        client.quit()
        assert sb.mailer_options("plain")["use_tls"] is False


def test_plaintext_sandbox_can_offer_auth_without_tls() -> None:
    with GmailSandbox(offer_starttls=False, require_tls_for_auth=False) as sb:
        client = smtplib.SMTP(sb.host, sb.starttls_port, timeout=5)
        client.login(SANDBOX_USER, SANDBOX_PASSWORD)
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        client.quit()
        assert sb.wait_for_messages(1)[0].tls is False


# -- injected failures --------------------------------------------------------------------

AUTH_FAILURES = {
    "bad_credentials": (
        535,
        [
            "5.7.8 Username and Password not accepted. For more information, go to",
            "5.7.8  https://support.google.com/mail/?p=BadCredentials",
        ],
    ),
    "app_password_required": (
        534,
        [
            "5.7.9 Application-specific password required. For more information, go to",
            "5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor",
        ],
    ),
    "web_login_required": (
        534,
        [
            "5.7.14 <https://accounts.google.com/signin/continue?sarp=1&scc=1&plt=GMAILSANDBOX>"
            " Please log in via your web browser and",
            "5.7.14 then try again.",
            "5.7.14  Learn more at",
            "5.7.14  https://support.google.com/mail/answer/78754",
        ],
    ),
    "too_many_logins": (454, ["4.7.0 Too many login attempts, please try again later."]),
}


@pytest.mark.parametrize("kind", AUTH_FAILURES)
def test_auth_injections(gmail_sandbox: GmailSandbox, kind: str) -> None:
    injection = gmail_sandbox.inject(kind)
    client = connect(gmail_sandbox, login=False)
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        client.login(SANDBOX_USER, SANDBOX_PASSWORD)  # the right password
    assert (caught.value.smtp_code, reply_lines(caught.value.smtp_error)) == AUTH_FAILURES[kind]
    assert gmail_sandbox.auth_attempts == 2  # smtplib tried PLAIN, then LOGIN: both refused
    client.close()
    assert injection.fired == 1
    client = connect(gmail_sandbox)  # times=1: the next connection signs in
    client.quit()


MAIL_FAILURES = {
    "temporary": (451, ["4.7.0 Temporary System Problem.  Try again later (WS)."]),
    "daily_quota": (
        550,
        [
            "5.4.5 Daily user sending limit exceeded. For more information on Gmail",
            "5.4.5  sending limits go to https://support.google.com/a/answer/166852",
        ],
    ),
    "too_large": (
        552,
        [
            "5.2.3 Your message exceeded Google's message size limits. For more information, go to",
            "5.2.3  https://support.google.com/mail/?p=MaxSizeError",
        ],
    ),
}


@pytest.mark.parametrize("kind", MAIL_FAILURES)
def test_mail_injections(gmail_sandbox: GmailSandbox, kind: str) -> None:
    gmail_sandbox.inject(kind)
    client = connect(gmail_sandbox)
    with pytest.raises(smtplib.SMTPSenderRefused) as caught:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert (caught.value.smtp_code, reply_lines(caught.value.smtp_error)) == MAIL_FAILURES[kind]
    client.rset()
    assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    client.quit()
    assert len(gmail_sandbox.messages) == 1


def test_throttled_replies_421_and_closes(gmail_sandbox: GmailSandbox) -> None:
    gmail_sandbox.inject("throttled")
    client = connect(gmail_sandbox)
    code, text = client.docmd("MAIL", "FROM:<a@example.com>")
    assert (code, reply_lines(text)) == (421, ["4.7.0 Try again later, closing connection."])
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


def test_injection_times_none_fires_until_reset(gmail_sandbox: GmailSandbox) -> None:
    injection = gmail_sandbox.inject("temporary", times=None)
    client = connect(gmail_sandbox)
    for _ in range(3):
        assert client.docmd("MAIL", "FROM:<a@example.com>")[0] == 451
    gmail_sandbox.reset()
    assert client.docmd("MAIL", "FROM:<a@example.com>")[0] == 250
    client.quit()
    assert injection.fired == 3


def test_injection_arguments_are_checked(gmail_sandbox: GmailSandbox) -> None:
    with pytest.raises(ValueError, match="Unknown failure kind 'nope'"):
        gmail_sandbox.inject("nope")
    with pytest.raises(ValueError, match="needs the parameter"):
        gmail_sandbox.inject("disconnect_after")
    with pytest.raises(ValueError, match="does not take"):
        gmail_sandbox.inject("temporary", seconds=1)
    with pytest.raises(ValueError, match="times"):
        gmail_sandbox.inject("temporary", times=0)


def test_too_large_at_end_of_data_when_mail_has_no_size(raw: RawClient, gmail_sandbox: GmailSandbox) -> None:
    gmail_sandbox.inject("too_large")
    raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert [raw.reply()[0] for _ in range(3)] == [250, 250, 354]
    raw.send(MESSAGE + b".\r\n")
    code, lines = raw.reply()
    assert (code, lines[0][:5]) == (552, "5.2.3")
    assert gmail_sandbox.messages == []


def test_size_declared_in_mail_is_enforced(small_sandbox: GmailSandbox) -> None:
    client = connect(small_sandbox)
    with pytest.raises(smtplib.SMTPSenderRefused) as caught:
        client.sendmail("a@example.com", ["b@example.com"], b"x" * 1001)
    assert caught.value.smtp_code == 552
    assert b"?p=MaxSizeError" in caught.value.smtp_error
    client.rset()
    client.sendmail("a@example.com", ["b@example.com"], b"x" * 998 + b"\r\n")  # exactly 1000
    client.quit()
    assert small_sandbox.wait_for_messages(1)[0].size == 1000


def test_real_size_is_enforced_at_end_of_data(small_sandbox: GmailSandbox) -> None:
    client = connect(small_sandbox)
    client.mail("a@example.com")  # no SIZE=
    client.rcpt("b@example.com")
    code, _ = client.data(b"y" * 600 + b"\r\n" + b"z" * 600)
    assert code == 552
    assert client.noop()[0] == 250  # the connection survives
    client.quit()
    assert small_sandbox.messages == []


def test_101st_recipient_is_refused(gmail_sandbox: GmailSandbox) -> None:
    recipients = [f"r{n}@example.com" for n in range(101)]
    client = connect(gmail_sandbox)
    refused = client.sendmail("a@example.com", recipients, MESSAGE)
    assert list(refused) == ["r100@example.com"]
    code, text = refused["r100@example.com"]
    assert (code, reply_lines(text)) == (
        452,
        [
            "4.5.3 Your message has too many recipients. For more information regarding",
            "4.5.3 Google's sending limits, visit",
            "4.5.3  https://support.google.com/mail/?p=TooManyRecipientsError",
        ],
    )
    client.quit()
    assert gmail_sandbox.wait_for_messages(1)[0].rcpt_tos == recipients[:100]


def test_bad_recipients(gmail_sandbox: GmailSandbox) -> None:
    gmail_sandbox.inject("bad_recipient", address="Picked@example.com")
    client = connect(gmail_sandbox)
    refused = client.sendmail(
        "a@example.com", ["ok@example.com", "not-an-address", "picked@example.com", "c@example.com"], MESSAGE
    )
    assert sorted(refused) == ["not-an-address", "picked@example.com"]
    code, text = refused["not-an-address"]
    assert (code, reply_lines(text)) == (
        553,
        [
            "5.1.3 The recipient address <not-an-address> is not a valid RFC-5321 address. For more information, go to",
            "5.1.3  https://support.google.com/a/answer/3221692",
        ],
    )
    client.quit()
    assert gmail_sandbox.wait_for_messages(1)[0].rcpt_tos == ["ok@example.com", "c@example.com"]
    gmail_sandbox.inject("too_many_recipients")
    client = connect(gmail_sandbox)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("a@example.com", ["ok@example.com"], MESSAGE)
    client.quit()


def test_disconnect_after_messages(gmail_sandbox: GmailSandbox) -> None:
    gmail_sandbox.inject("disconnect_after", messages=2)
    client = connect(gmail_sandbox)
    for _ in range(2):
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    client.close()
    client = connect(gmail_sandbox)  # fired once: a new connection goes on past two messages
    for _ in range(3):
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    client.quit()
    assert len(gmail_sandbox.messages) == 5
    assert gmail_sandbox.connections == 2


def test_idle_timeout(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox)  # already open when the failure is injected
    injection = gmail_sandbox.inject("idle_timeout", seconds=0.3)
    started = time.monotonic()
    code, text = client.getreply()  # the server speaks first, then hangs up
    assert 0.2 < time.monotonic() - started < 3
    assert (code, reply_lines(text)) == (451, ["4.4.2 Timeout - closing connection."])
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    assert injection.fired == 1
    client = connect(gmail_sandbox)
    time.sleep(0.5)
    assert client.noop()[0] == 250  # fired once only
    client.quit()


def test_no_greeting(gmail_sandbox: GmailSandbox) -> None:
    gmail_sandbox.inject("no_greeting")
    with pytest.raises((smtplib.SMTPServerDisconnected, TimeoutError), match="timed out"):
        smtplib.SMTP(gmail_sandbox.host, gmail_sandbox.starttls_port, timeout=0.5)
    assert smtplib.SMTP(gmail_sandbox.host, gmail_sandbox.starttls_port, timeout=5).quit()[0] == 221
    assert gmail_sandbox.connections == 2


def test_drop_connections(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox)
    gmail_sandbox.drop_connections()
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        client.noop()


# -- pipelining, chunking, SMTPUTF8 -------------------------------------------------------


def test_pipelined_commands_are_answered_in_order(raw: RawClient, gmail_sandbox: GmailSandbox) -> None:
    raw.send(
        b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\n"
        b"RCPT TO:<bad>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
    )
    codes = [raw.reply()[0] for _ in range(5)]
    assert codes == [250, 250, 553, 250, 354]
    raw.send(
        MESSAGE + b".\r\nNOOP\r\nMAIL FROM:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nBDAT 5 LAST\r\nhelloRSET\r\n"
    )
    replies = [raw.reply() for _ in range(6)]
    assert [code for code, _ in replies] == [250, 250, 250, 250, 250, 250]
    assert replies[0][1][0].startswith("2.0.0 OK  ")
    assert replies[1][1][0].startswith("2.0.0 OK ")
    assert replies[5][1][0].startswith("2.1.5 Flushed ")
    first, second = gmail_sandbox.wait_for_messages(2)
    assert (first.rcpt_tos, first.data, first.via_bdat) == (["b@example.com", "c@example.com"], MESSAGE, False)
    assert (second.mail_from, second.data, second.via_bdat) == ("x@example.com", b"hello", True)


def test_bdat_in_one_chunk(raw: RawClient, gmail_sandbox: GmailSandbox) -> None:
    raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
    assert [raw.reply()[0] for _ in range(2)] == [250, 250]
    raw.send(b"BDAT %d LAST\r\n" % len(MESSAGE) + MESSAGE)
    code, lines = raw.reply()
    assert code == 250
    assert re.fullmatch(rf"2\.0\.0 OK  \d+ {SID}", lines[0])
    [message] = gmail_sandbox.wait_for_messages(1)
    assert (message.data, message.via_bdat, message.tls) == (MESSAGE, True, True)


def test_bdat_in_several_chunks_including_an_empty_last(raw: RawClient, gmail_sandbox: GmailSandbox) -> None:
    raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
    assert [raw.reply()[0] for _ in range(2)] == [250, 250]
    parts = [MESSAGE[:10], MESSAGE[10:40], MESSAGE[40:]]
    raw.send(b"".join(b"BDAT %d\r\n" % len(part) + part for part in parts) + b"BDAT 0 LAST\r\n")
    assert [raw.reply() for _ in range(3)] == [(250, [f"2.0.0 {len(part)} bytes received"]) for part in parts]
    assert raw.reply()[0] == 250
    [message] = gmail_sandbox.wait_for_messages(1)
    assert message.data == MESSAGE


def test_bdat_then_data_is_a_bad_sequence(raw: RawClient, gmail_sandbox: GmailSandbox) -> None:
    raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nBDAT 3\r\nabcDATA\r\n")
    assert [raw.reply()[0] for _ in range(4)] == [250, 250, 250, 503]
    raw.send(b"RSET\r\nBDAT 3 LAST\r\nxyz")  # after RSET there is no transaction any more
    assert raw.reply()[0] == 250
    assert raw.reply()[0] == 503
    raw.send(b"NOOP\r\n")
    assert raw.reply()[0] == 250  # the 3 bytes were consumed, not read as a command
    assert gmail_sandbox.messages == []


def test_bdat_over_the_size_limit(small_sandbox: GmailSandbox) -> None:
    raw = RawClient(small_sandbox)
    raw.login()
    raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nBDAT 600\r\n" + b"a" * 600)
    raw.send(b"BDAT 600 LAST\r\n" + b"b" * 600 + b"NOOP\r\n")
    assert [raw.reply()[0] for _ in range(5)] == [250, 250, 250, 552, 250]
    raw.close()
    assert small_sandbox.messages == []


def test_smtputf8_japanese_local_part(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox)
    body = "Subject: テスト\r\n\r\nこんにちは\r\n".encode()
    assert client.sendmail("送信者@example.com", ["受信者@example.jp"], body, mail_options=["SMTPUTF8"]) == {}
    client.command_encoding = "utf-8"  # non-ASCII, but without SMTPUTF8
    code, text = client.docmd("MAIL", "FROM:<送信者@example.com>")
    assert (code, reply_lines(text)[0]) == (
        553,
        "5.1.7 The sender address <送信者@example.com> is not a valid RFC-5321 address. For more information, go to",
    )
    client.quit()
    [message] = gmail_sandbox.wait_for_messages(1)
    assert (message.mail_from, message.rcpt_tos, message.smtputf8) == (
        "送信者@example.com",
        ["受信者@example.jp"],
        True,
    )
    assert message.message["Subject"] == "テスト"


def test_unknown_and_odd_commands(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox)
    code, text = client.docmd("XYZZY")
    assert (code, reply_lines(text)) == (502, ["5.5.1 Unrecognized command."])
    assert client.docmd("RCPT", "TO:<b@example.com>")[0] == 503
    assert client.docmd("DATA")[0] == 503
    assert client.docmd("MAIL", "FROM:<a@example.com> FOO=1")[0] == 555
    assert client.docmd("AUTH", "PLAIN")[0] == 503  # already signed in
    assert client.docmd("X" * 1100)[0] == 555
    client.quit()


def test_unknown_auth_mechanism(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox, login=False)
    client.ehlo()
    code, text = client.docmd("AUTH", "CRAM-MD5")
    assert (code, reply_lines(text)) == (504, ["5.7.4 Unrecognized authentication type."])
    code, text = client.docmd("AUTH", "PLAIN !!!")
    assert (code, reply_lines(text)) == (501, ["5.5.2 Cannot Decode response"])
    client.quit()


def test_non_ascii_ehlo_is_refused_and_closed(gmail_sandbox: GmailSandbox) -> None:
    client = smtplib.SMTP(gmail_sandbox.host, gmail_sandbox.starttls_port, timeout=5)
    client.command_encoding = "utf-8"
    code, text = client.ehlo("ホスト")
    assert code == 501
    assert reply_lines(text)[0] == '5.5.4 HELO/EHLO argument "ホスト" invalid, closing connection.'
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


# -- files, life cycle, API ---------------------------------------------------------------


def test_keep_files_writes_eml_and_json(tmp_path: Path) -> None:
    with GmailSandbox(state_dir=tmp_path, keep_files=True) as sb:
        for _ in range(2):
            client = connect(sb, "ssl")
            client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
            client.quit()
        sb.wait_for_messages(2)
    assert sorted(p.name for p in (tmp_path / "messages").iterdir()) == ["1.eml", "1.json", "2.eml", "2.json"]
    assert (tmp_path / "messages" / "2.eml").read_bytes() == MESSAGE
    envelope = json.loads((tmp_path / "messages" / "1.json").read_text())
    assert envelope | {"received_at": None} == {
        "mail_from": "a@example.com",
        "rcpt_tos": ["b@example.com"],
        "auth_user": SANDBOX_USER,
        "tls": True,
        "port": sb.ssl_port,
        "smtputf8": False,
        "via_bdat": False,
        "size": len(MESSAGE),
        "received_at": None,
    }
    with GmailSandbox(state_dir=tmp_path, keep_files=True) as sb:  # numbering goes on
        client = connect(sb)
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        client.quit()
        sb.wait_for_messages(1)
    assert (tmp_path / "messages" / "3.eml").exists()


def test_temporary_state_dir_is_removed_on_stop() -> None:
    with GmailSandbox() as sb:
        ca_file = Path(sb.ca_file)
        assert ca_file.exists()
    assert not ca_file.parent.exists()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_start_and_stop_twenty_times_leaks_nothing() -> None:
    gc.collect()
    threads, fds = threading.active_count(), open_fds()
    started = time.monotonic()
    sb = GmailSandbox()
    for n in range(20):
        other = GmailSandbox() if n % 2 else sb  # fresh instances and one restarted instance
        other.start()
        client = connect(other, "ssl")  # a live connection must not keep anything open
        idle = socket.create_connection((other.host, other.ssl_port))  # stuck in the TLS handshake
        port = other.starttls_port
        other.stop()
        client.close()
        idle.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((other.host, port), timeout=1)
    assert time.monotonic() - started < 20
    gc.collect()  # closes what smtplib and ssl left for the garbage collector
    assert threading.active_count() == threads
    assert open_fds() == fds


def test_stop_is_fast_and_idempotent() -> None:
    sb = GmailSandbox().start()
    assert sb.start() is sb
    started = time.monotonic()
    sb.stop()
    sb.stop()
    assert time.monotonic() - started < 1


def test_only_loopback(gmail_sandbox: GmailSandbox) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        GmailSandbox(host="0.0.0.0")  # noqa: S104
    with pytest.raises(ValueError, match="loopback only"):
        GmailSandbox(host="example.com")
    assert GmailSandbox(host="localhost").host == "127.0.0.1"
    with pytest.raises(PortInUseError) as caught:
        GmailSandbox(starttls_port=gmail_sandbox.starttls_port).start()
    assert caught.value.port == gmail_sandbox.starttls_port


def test_counters_clear_reset_and_wait(gmail_sandbox: GmailSandbox) -> None:
    client = connect(gmail_sandbox)
    client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    client.quit()
    assert (gmail_sandbox.connections, gmail_sandbox.auth_attempts, len(gmail_sandbox.messages)) == (1, 1, 1)
    gmail_sandbox.clear()
    assert (gmail_sandbox.connections, gmail_sandbox.messages) == (1, [])
    gmail_sandbox.inject("temporary")
    gmail_sandbox.reset()
    assert (gmail_sandbox.connections, gmail_sandbox.auth_attempts) == (0, 0)
    with pytest.raises(TimeoutError, match="received 0 message"):
        gmail_sandbox.wait_for_messages(1, timeout=0.1)
    client = connect(gmail_sandbox)
    assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}  # injection forgotten
    client.quit()


def test_mailer_options(gmail_sandbox: GmailSandbox) -> None:
    assert gmail_sandbox.mailer_options() == {
        "host": "127.0.0.1",
        "port": gmail_sandbox.starttls_port,
        "username": SANDBOX_USER,
        "password": SANDBOX_PASSWORD,
        "use_tls": True,
        "use_ssl": False,
        "timeout": 5,
        "ssl_cafile": gmail_sandbox.ca_file,
    }
    ssl_options = gmail_sandbox.mailer_options("ssl")
    assert (ssl_options["port"], ssl_options["use_tls"], ssl_options["use_ssl"]) == (
        gmail_sandbox.ssl_port,
        False,
        True,
    )


def test_other_users() -> None:
    with GmailSandbox(users={"me@example.org": "abcdabcdabcdabcd"}) as sb:
        client = connect(sb, login=False)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(SANDBOX_USER, SANDBOX_PASSWORD)
        client.login("me@example.org", "abcdabcdabcdabcd")
        client.quit()
        assert sb.mailer_options()["username"] == "me@example.org"


def test_package_and_plugin_import_without_aiosmtpd_or_django() -> None:
    script = (
        "import sys; sys.modules['aiosmtpd'] = None\n"
        "import django_gmail_smtp.sandbox.pytest_plugin as plugin, django_gmail_smtp.sandbox as sandbox\n"
        "assert 'django' not in sys.modules and 'trustme' not in sys.modules, sorted(sys.modules)\n"
        "assert sandbox.SANDBOX_USER == 'sandbox@example.com'\n"
        "try:\n    sandbox.GmailSandbox\nexcept ImportError as error:\n    print('ImportError', error)\n"
        "print(plugin.MISSING_EXTRA)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.splitlines()[0].startswith("ImportError")
    assert 'pip install "django-gmail-smtp[sandbox]"' in done.stdout
