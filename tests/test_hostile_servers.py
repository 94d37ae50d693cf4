"""A hostile or broken server can neither exhaust our memory nor hold a caller for ever.

README.md#hostile-or-broken-servers. Every server here is a real loopback socket
(:mod:`tests.hostile`), plain or TLS with a trustme certificate. Each hostile schedule is 50
to 100 times longer than the deadline that must stop it, so the margins are huge and nothing
here times anything closely; every call is guarded (it fails the test instead of hanging).
"""

from __future__ import annotations

import smtplib
import time
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import Client
from django.urls import reverse

from django_gmail_smtp import conf, delivery, diagnose, oauth
from django_gmail_smtp import session as smtp_session
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.diagnose import probes
from django_gmail_smtp.exceptions import OAuthError
from django_gmail_smtp.retry import RetryPolicy

from .conftest import gmail_check, legacy_api
from .hostile import HostileServer, Peer, Stopped, call_within

GUARD = 30.0  # seconds a guarded call may take before the test fails (every deadline here is 1 s or less)
STREAM_LIMIT = 64 * 1024 * 1024  # an endless stream stops here: 1000 times the reply cap
GREETING = b"220 hostile.localhost ESMTP\r\n"
EHLO_PLAIN = b"250-hostile.localhost\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
EHLO_STARTTLS = b"250-hostile.localhost\r\n250-STARTTLS\r\n250 8BITMIME\r\n"


def message(subject: str = "hello") -> EmailMessage:
    return EmailMessage(subject, "body", "from@example.com", ["to@example.com"])


def backend(server: HostileServer, *, tls: str = "", timeout: float = 1.0, **options: Any) -> EmailBackend:
    """Our backend pointed at the hostile server: no sign-in; ``tls`` is "", "starttls" or "ssl"."""
    return EmailBackend(
        host=server.host,
        port=server.port,
        username="",
        password="",
        use_tls=tls == "starttls",
        use_ssl=tls == "ssl",
        timeout=timeout,
        ssl_cafile=server.ca_file,
        **options,
    )


@pytest.fixture
def one_attempt(settings: Any) -> None:
    """No retries: one connection per call, so each test sees exactly one deadline."""
    settings.GMAIL_SMTP = {"RETRY_ATTEMPTS": 1, "REUSE_CONNECTIONS": False}


def use_email_settings(settings: Any, server: HostileServer) -> None:
    """The legacy EMAIL_* settings (what gmail_check tests by default) pointed at the server, STARTTLS."""
    settings.EMAIL_HOST = server.host
    settings.EMAIL_PORT = server.port
    settings.EMAIL_HOST_USER = "someone@example.com"
    settings.EMAIL_HOST_PASSWORD = "abcdefghijklmnop"
    settings.EMAIL_USE_TLS = True
    settings.GMAIL_SMTP = {}  # no CA file


def assert_silent_caller_hung_up(server: HostileServer) -> None:
    """The client closed the connection long before the server's schedule ended."""
    assert not server.cut, "the watchdog had to cut the connection"
    assert server.peers, "the client never connected"
    assert all(not peer.done for peer in server.peers), "the client waited out the whole hostile schedule"


# -- reply caps ------------------------------------------------------------------------------


def endless_ehlo(peer: Peer) -> None:
    """Before STARTTLS anyone on the path can send this."""
    peer.send(GREETING)
    peer.readline()  # EHLO
    peer.endless(b"250-" + b"X" * 66 + b"\r\n", STREAM_LIMIT)


def endless_greeting(peer: Peer) -> None:
    peer.endless(b"220-" + b"Y" * 1000 + b"\r\n", STREAM_LIMIT)


def endless_mail_reply(peer: Peer) -> None:
    """In the pipelining engine: the reply to MAIL (RCPT and BDAT or DATA came in the same write)."""
    peer.send(GREETING)
    peer.readline()
    peer.send(EHLO_PLAIN)
    peer.readline()
    peer.endless(b"250-" + b"Z" * 66 + b"\r\n", STREAM_LIMIT)


@pytest.mark.parametrize(
    ("script", "tls", "stage", "cap"),
    [
        pytest.param(endless_ehlo, "starttls", "ehlo", "lines", id="ehlo-before-starttls"),
        pytest.param(endless_greeting, "", "greeting", "bytes", id="greeting"),
        pytest.param(endless_greeting, "ssl", "greeting", "bytes", id="greeting-over-tls"),
        pytest.param(endless_mail_reply, "", "send", "lines", id="pipelining-engine"),
    ],
)
@pytest.mark.usefixtures("one_attempt")
def test_an_endless_reply_is_cut_at_the_cap(script: Any, tls: str, stage: str, cap: str) -> None:
    """The call fails at the cap, naming it, long before the endless stream's end.

    What the client took in is bounded: one capped reply. The rest of what the server got out sat
    in the kernel's socket buffers until the client closed; it never reached STREAM_LIMIT.
    """
    with HostileServer(script, tls=tls == "ssl") as server:
        ended = call_within(GUARD, lambda: backend(server, tls=tls).send_messages([message()]))
        assert_silent_caller_hung_up(server)
    exc: Any = ended.error
    assert isinstance(exc, smtplib.SMTPServerDisconnected)
    assert exc.cause.id == "reply_too_long"
    assert exc.stage == stage
    if cap == "lines":
        assert f"more than {smtp_session.MAX_REPLY_LINES} lines" in str(exc)
    else:
        assert f"longer than {smtp_session.MAX_REPLY_BYTES} bytes" in str(exc)
    assert server.sent < STREAM_LIMIT / 4


# -- deadlines -------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["", "ssl"])
@pytest.mark.usefixtures("one_attempt")
def test_a_greeting_dripped_byte_by_byte_meets_the_set_up_deadline(tls: str) -> None:
    """Each byte comes well within the timeout (1 s); the whole greeting would take 60 s."""

    def dripping_greeting(peer: Peer) -> None:
        peer.drip(b"220 " + b"s" * 1200 + b"\r\n", every=0.05)

    with HostileServer(dripping_greeting, tls=tls == "ssl") as server:
        ended = call_within(GUARD, backend(server, tls=tls).open)
        assert_silent_caller_hung_up(server)
    exc: Any = ended.error
    assert isinstance(exc, TimeoutError)
    assert isinstance(exc, smtplib.SMTPServerDisconnected)  # as smtplib reports a reply timeout
    assert exc.stage == "greeting"
    assert exc.cause.id == "deadline_exceeded"  # it spoke, too slowly: not "never greeted"
    assert "did not finish within 1 s" in str(exc)


def test_send_mail_against_a_server_answering_a_line_at_a_time_meets_its_deadlines(settings: Any) -> None:
    """A line every 0.2 s never trips a 0.5 s read timeout: the EHLO reply alone would take 20 s
    per connection. Each connection attempt fails at its set-up deadline; the retry is bounded."""
    settings.GMAIL_SMTP = {"RETRY_ATTEMPTS": 2, "RETRY_BACKOFF": 0.01, "REUSE_CONNECTIONS": False}

    def line_at_a_time(peer: Peer) -> None:
        peer.send(GREETING)
        peer.readline()
        peer.lines([b"250-feature-%d\r\n" % i for i in range(99)] + [b"250 OK\r\n"], every=0.2)

    with HostileServer(line_at_a_time) as server:
        ended = call_within(GUARD, lambda: backend(server, timeout=0.5).send_messages([message()]))
        assert_silent_caller_hung_up(server)
        assert server.connections == 2  # RETRY_ATTEMPTS: the deadline failure is temporary
    exc: Any = ended.error
    assert isinstance(exc, TimeoutError)
    assert exc.cause.id == "deadline_exceeded"
    assert exc.cause.temporary
    assert "127.0.0.1" in str(exc)  # the set-up deadline names the server


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
@pytest.mark.usefixtures("one_attempt")
def test_a_stall_in_the_middle_of_the_tls_handshake_meets_the_set_up_deadline(tls: str) -> None:
    """Half of the server's handshake flight, then silence (for longer than the guard)."""

    def stalled_handshake(peer: Peer) -> None:
        if tls == "starttls":
            peer.drip(GREETING, every=0.02)  # most of the set-up's second already spent here
            peer.readline()
            peer.send(EHLO_STARTTLS)
            peer.readline()
            peer.send(b"220 2.0.0 Ready to start TLS\r\n")
        peer.stall_mid_handshake()

    with HostileServer(stalled_handshake) as server:
        ended = call_within(GUARD, backend(server, tls=tls).open)
        assert_silent_caller_hung_up(server)
    exc: Any = ended.error
    assert isinstance(exc, TimeoutError)
    assert exc.stage == ("starttls" if tls == "starttls" else "tls")
    assert "The connection set-up with 127.0.0.1" in str(exc)
    assert "did not finish within 1 s" in str(exc)


def test_a_reply_dripped_in_the_pipelining_engine_meets_the_exchange_deadline(one_attempt: None) -> None:
    def dripping_mail_reply(peer: Peer) -> None:
        peer.send(GREETING)
        peer.readline()
        peer.send(EHLO_PLAIN)
        peer.readline()
        peer.drip(b"250 " + b"m" * 1200 + b"\r\n", every=0.05)

    with HostileServer(dripping_mail_reply) as server:
        ended = call_within(GUARD, lambda: backend(server).send_messages([message()]))
        assert_silent_caller_hung_up(server)
    exc: Any = ended.error
    assert isinstance(exc, TimeoutError)
    assert exc.cause.id == "deadline_exceeded"
    assert "reply did not arrive in full within 1 s" in str(exc)


def test_send_messages_as_a_whole_meets_its_time_budget(settings: Any) -> None:
    """Every reply comes within the timeout (0.15 s of 0.25 s), so no exchange fails; 30 messages
    would take about 20 s, past the budget of RETRY_TIMEOUT + timeout * (RETRY_ATTEMPTS + 30)."""
    settings.GMAIL_SMTP = {"RETRY_ATTEMPTS": 1, "RETRY_TIMEOUT": 0, "PIPELINING": False}
    delivered = []

    def slow_but_steady(peer: Peer) -> None:
        peer.send(GREETING)
        peer.readline()
        peer.send(b"250-hostile.localhost\r\n250 8BITMIME\r\n")
        while True:
            line = peer.readline()
            if not line:
                return
            if line.upper().startswith(b"DATA"):
                peer.pause(0.15)
                peer.send(b"354 go ahead\r\n")
                while peer.readline() not in (b".\r\n", b""):
                    pass
                delivered.append(1)
            peer.pause(0.15)
            peer.send(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 OK\r\n")

    messages = [message(f"m{i}") for i in range(30)]
    with HostileServer(slow_but_steady) as server:
        ended = call_within(GUARD, lambda: backend(server, timeout=0.25).send_messages(messages))
        assert not server.cut
    exc: Any = ended.error
    budget = delivery.send_budget(30, 0.25, RetryPolicy(attempts=1, timeout=0))
    assert isinstance(exc, TimeoutError)
    assert exc.cause.id == "deadline_exceeded"
    assert f"time budget of {budget:g} s" in str(exc)
    assert 0 < len(delivered) < len(messages)  # it sent what it could, then stopped
    statuses = [m.gmail_smtp_status for m in messages]  # type: ignore[attr-defined]
    sent = sum(s.sent for s in statuses)
    # The last message the server took may have lost its 250 to the deadline (reported, not lost).
    assert len(delivered) - 1 <= sent <= len(delivered)
    assert exc.sent_count == sent


def test_the_send_budget_formula() -> None:
    policy = RetryPolicy(attempts=3, timeout=30.0)
    assert delivery.send_budget(1, 10.0, policy) == 30.0 + 10.0 * (3 + 1)
    assert delivery.send_budget(100, 2.0, policy) == 30.0 + 2.0 * 103
    assert delivery.send_budget(5, None, policy) is None


# -- the OAuth2 token endpoint ----------------------------------------------------------------


def oauth_config(timeout: float = 1.0) -> conf.SmtpConfig:
    return conf.resolve(
        {
            "host": "smtp.gmail.com",
            "username": "someone@gmail.com",
            "auth_method": "oauth2",
            "oauth_client_id": "hostile-test-client",
            "oauth_client_secret": "hostile-test-client-secret",
            "oauth_refresh_token": "hostile-test-refresh-token",
            "timeout": timeout,
        }
    )


def test_an_endless_token_endpoint_answer_is_cut_at_the_cap(settings: Any) -> None:
    def endless_answer(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        peer.endless(b'{"access_token": "' + b"t" * 1000, STREAM_LIMIT)

    with HostileServer(endless_answer) as server:
        settings.GMAIL_SMTP = {"OAUTH_TOKEN_URI": server.url}
        ended = call_within(GUARD, lambda: oauth.access_token(oauth_config(), force=True))
        assert_silent_caller_hung_up(server)
    exc: Any = ended.error
    assert isinstance(exc, OAuthError)
    assert exc.cause.id == "reply_too_long"
    assert f"more than {oauth.MAX_TOKEN_RESPONSE_BYTES} bytes" in str(exc)
    assert "hostile-test-client-secret" not in str(exc)
    assert server.sent < STREAM_LIMIT / 4


def test_a_dripping_token_endpoint_meets_the_deadline(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTPS (trustme), the status line and headers at 20 bytes a second: 60 s in all."""

    def dripping_answer(peer: Peer) -> None:
        peer.read_request()
        peer.drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"d" * 1200 + b"\r\n\r\n{}", every=0.05)

    with HostileServer(dripping_answer, tls=True) as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
        settings.GMAIL_SMTP = {"OAUTH_TOKEN_URI": server.url}
        ended = call_within(GUARD, lambda: oauth.access_token(oauth_config(), force=True))
        assert not server.cut
        assert all(not peer.done for peer in server.peers)
    exc: Any = ended.error
    assert isinstance(exc, OAuthError)
    assert exc.cause.id == "oauth_token_unreachable"
    assert "no complete answer within 1 s" in str(exc)


# -- gmail_check and the admin's Test connection ---------------------------------------------


def dripping_greeting(peer: Peer) -> None:
    peer.drip(b"220 " + b"g" * 1200 + b"\r\n", every=0.05)


@legacy_api
def test_gmail_check_against_a_dripping_server_ends_within_its_timeout(settings: Any) -> None:
    with HostileServer(dripping_greeting) as server:
        use_email_settings(settings, server)
        settings.EMAIL_TIMEOUT = 30  # --timeout overrides it
        ended = call_within(GUARD, lambda: gmail_check("--timeout", "1"))
        assert_silent_caller_hung_up(server)
        assert server.connections == 2  # the TCP step's own connection, then the conversation
    outcome = ended.value
    assert ended.error is None, ended.error
    assert outcome.code == diagnose.EXIT_CODES["greeting"]
    assert "[deadline_exceeded]" in outcome.err
    assert "did not finish within 1 s" in outcome.out


@pytest.mark.django_db
def test_the_admin_test_connection_against_a_dripping_server_ends_within_its_timeout(admin_client: Client) -> None:
    """The Django test client runs here, in the test's thread (the database is there): the server's
    watchdog is the guard. It would cut the connection after GUARD seconds, and the test fails if it did."""
    with HostileServer(dripping_greeting, give_up_after=GUARD) as server:
        started = time.monotonic()
        response = admin_client.post(
            reverse("admin:gmail_smtp_gmailaccount_test_new"),
            {
                "name": "hostile",
                "username": "someone@example.com",
                "auth_method": "app_password",
                "app_password": "abcdefghijklmnop",
                "host": server.host,
                "port": server.port,
                "security": "starttls",
                "timeout": "1",
                "from_aliases": "",
                "enabled": "on",
            },
            HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        )
        elapsed = time.monotonic() - started
        assert not server.cut, f"the watchdog had to cut the connection after {elapsed:.0f} s"
        assert all(not peer.done for peer in server.peers)
    html = response.content.decode()
    assert 'data-outcome="failed"' in html
    assert "[deadline_exceeded]" in html
    assert "did not finish within 1 s" in html


# -- gmail_check's own probes -----------------------------------------------------------------


@legacy_api
def test_the_certificate_probe_after_an_untrusted_certificate_is_capped(settings: Any) -> None:
    """After STARTTLS met a certificate nobody trusts, gmail_check connects once more to read who
    issued it: that probe's replies are capped like the session's."""
    ehlos: list[Peer] = []

    def untrusted_then_endless(peer: Peer) -> None:
        peer.send(GREETING)
        if not peer.readline():  # the TCP step's connection: it hangs up at once
            raise Stopped
        ehlos.append(peer)
        if len(ehlos) == 1:  # the conversation: STARTTLS with a certificate from our own CA
            peer.send(EHLO_STARTTLS)
            peer.readline()
            peer.send(b"220 2.0.0 Ready to start TLS\r\n")
            peer.starttls()
        else:  # the certificate probe
            peer.endless(b"250-" + b"C" * 66 + b"\r\n", STREAM_LIMIT)

    with HostileServer(untrusted_then_endless) as server:
        use_email_settings(settings, server)  # no CA file: the server's certificate is not trusted
        ended = call_within(GUARD, lambda: gmail_check("--timeout", "1"))
        assert_silent_caller_hung_up(server)
        assert len(ehlos) == 2  # the probe did run
    assert ended.error is None, ended.error
    assert ended.value.code == diagnose.EXIT_CODES["tls"]
    assert server.sent < STREAM_LIMIT / 4


def test_the_greeting_probe_reads_one_bounded_piece_of_an_endless_greeting() -> None:
    """The probe after a failed implicit-TLS handshake reads once, at most 512 bytes."""

    def endless_greeting(peer: Peer) -> None:
        peer.endless(b"220-" + b"p" * 100 + b"\r\n", STREAM_LIMIT)

    with HostileServer(endless_greeting) as server:
        config = conf.resolve({"host": server.host, "port": server.port, "use_ssl": True, "timeout": 1})
        ended = call_within(GUARD, lambda: probes.probe_plain_greeting(config, 1.0))
        assert not server.cut
    assert ended.error is None
    assert ended.value.startswith("220-ppp")
    assert len(ended.value) <= 512
