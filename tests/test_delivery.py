"""Delivery under Gmail's failures (issue #6): against the sandbox over real loopback TLS.

Every test checks what the server received (by Message-ID), not only what the backend says.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.header import decode_header, make_header
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_gmail_smtp import signals
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.delivery import FAILED, NOT_SENT, PARTIAL, SENT, UNKNOWN, DeliveryOptions, Job
from django_gmail_smtp.pipeline import Reply
from django_gmail_smtp.retry import Timing, backoff_delay
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox
from django_gmail_smtp.session import SMTPSession
from django_gmail_smtp.settlement import Attempt, give_up, settle

FAST_RETRIES = {"RETRY_BACKOFF": 0.01, "RETRY_BACKOFF_MAX": 0.05, "RETRY_TIMEOUT": 2.0}


@pytest.fixture(autouse=True)
def fast_retries(settings: Any) -> dict[str, Any]:
    settings.GMAIL_SMTP = dict(FAST_RETRIES)
    return settings.GMAIL_SMTP


def knobs(settings: Any, **values: Any) -> None:
    settings.GMAIL_SMTP = {**FAST_RETRIES, **values}


def make_messages(count: int, prefix: str = "message", **kwargs: Any) -> list[EmailMessage]:
    return [
        EmailMessage(f"{prefix} {i}", "Body", SANDBOX_USER, **({"to": [f"r{i}@example.com"]} | kwargs))
        for i in range(count)
    ]


def ids(messages: list[EmailMessage]) -> Counter[str]:
    return Counter(str(m.gmail_smtp_status.message_id) for m in messages)


def received_ids(sandbox: GmailSandbox) -> Counter[str]:
    return Counter(str(r.message["Message-ID"]) for r in sandbox.messages)


def client_lines(backend: EmailBackend, start: str) -> list[str]:
    """Commands the client wrote that start with ``start`` (smtplib writes some in lower case)."""
    return [text for d, text in backend.transcript.lines if d == "->" and text.upper().startswith(start)]


# -- dropped connections -------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_disconnect_mid_batch_delivers_every_message_exactly_once(make_backend, gmail_sandbox, settings, pipelining):
    # A window of 10: each hang-up catches the same number in flight, so attempts are 1 or 2.
    knobs(settings, PIPELINING=pipelining, PIPELINE_WINDOW=10)
    gmail_sandbox.inject("disconnect_after", messages=10, times=2)  # hangs up after 10, twice
    batch = make_messages(30)
    assert make_backend().send_messages(batch) == 30
    assert received_ids(gmail_sandbox) == ids(batch)  # all 30, none twice
    assert gmail_sandbox.connections == 3
    assert all(m.gmail_smtp_status.status == SENT for m in batch)
    # The messages written after each hang-up went again, on the next connection.
    assert sorted({m.gmail_smtp_status.attempts for m in batch}) == [1, 2]


def test_a_message_lost_in_flight_is_of_unknown_outcome_not_refused(make_backend, gmail_sandbox, settings):
    """The connection dies after the messages went out (pipelined with BDAT) and before their
    replies: without retries left they are "unknown" (may have been delivered), never "failed"
    (refused) without the server having said so."""
    knobs(settings, RETRY_ATTEMPTS=1, PIPELINE_WINDOW=5)
    gmail_sandbox.inject("disconnect_after", messages=1)
    batch = make_messages(3)
    failed: list[Any] = []

    def receiver(sender: Any, message: Any, status: Any, **kwargs: Any) -> None:
        failed.append(status.status)

    signals.message_failed.connect(receiver)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected) as info:
            make_backend().send_messages(batch)
    finally:
        signals.message_failed.disconnect(receiver)
    assert [m.gmail_smtp_status.status for m in batch] == [SENT, UNKNOWN, UNKNOWN]
    for message in batch[1:]:
        status = message.gmail_smtp_status
        assert (status.sent, status.refused, status.reply, status.cause.id) == (False, {}, None, "disconnected")
        assert status.may_have_gone
    assert failed == [UNKNOWN, UNKNOWN]
    assert "2 of unknown outcome (may have been delivered)" in " ".join(info.value.__notes__)
    assert info.value.sent_count == 1
    assert len(gmail_sandbox.messages) == 1


def test_a_message_that_never_went_out_is_not_sent(make_backend, gmail_sandbox, settings):
    """One command at a time: the connection dies at MAIL, before the message's bytes were
    written: "not_sent" with the error (no retry allowed here); the batch goes on."""
    knobs(settings, RETRY_ATTEMPTS=1, PIPELINING=False)
    gmail_sandbox.inject("disconnect_after", messages=1)
    batch = make_messages(3)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        make_backend().send_messages(batch)
    assert [m.gmail_smtp_status.status for m in batch] == [SENT, NOT_SENT, SENT]
    status = batch[1].gmail_smtp_status
    assert (status.refused, status.reply, status.cause.id, status.may_have_gone) == ({}, None, "disconnected", False)
    assert len(gmail_sandbox.messages) == 2


def test_idle_timeout_then_send_reconnects(make_backend, gmail_sandbox):
    first, second = make_messages(2)
    assert make_backend().send_messages([first]) == 1  # the connection stays in the pool
    gmail_sandbox.inject("idle_timeout", seconds=0.2)
    time.sleep(0.5)  # the sandbox says 451 4.4.2 and hangs up
    backend = make_backend()
    assert backend.send_messages([second]) == 1
    assert received_ids(gmail_sandbox) == ids([first, second])
    assert gmail_sandbox.connections == 2
    assert second.gmail_smtp_status.attempts == 1  # noticed before sending, without a round trip


def test_idle_timeout_seen_only_as_the_reply_to_mail(make_backend, gmail_sandbox, monkeypatch):
    """The 451 4.4.2 notice can cross our MAIL on the wire: the message goes out on a new connection."""
    first, second = make_messages(2)
    with make_backend() as backend:
        assert backend.send_messages([first]) == 1
        gmail_sandbox.inject("idle_timeout", seconds=0.2)
        time.sleep(0.5)
        monkeypatch.setattr(SMTPSession, "idle_check", lambda self, noop_after=None: True)
        assert backend.send_messages([second]) == 1
    assert received_ids(gmail_sandbox) == ids([first, second])
    assert second.gmail_smtp_status.attempts == 2
    assert any("451" in text and "4.4.2" in text for d, text in backend.transcript.lines if d == "<-")


# -- temporary and permanent failures ------------------------------------------------------


def test_one_421_then_success(make_backend, gmail_sandbox):
    gmail_sandbox.inject("throttled")  # 421 4.7.0 at MAIL, then the server hangs up
    [msg] = make_messages(1)
    assert make_backend().send_messages([msg]) == 1
    assert received_ids(gmail_sandbox) == ids([msg])
    assert msg.gmail_smtp_status.attempts == 2
    assert gmail_sandbox.connections == 2


def test_one_451_is_retried_on_the_same_connection(make_backend, gmail_sandbox):
    gmail_sandbox.inject("temporary")
    batch = make_messages(3)
    assert make_backend().send_messages(batch) == 3
    assert received_ids(gmail_sandbox) == ids(batch)
    assert gmail_sandbox.connections == 1


def test_too_many_logins_at_sign_in_is_retried(make_backend, gmail_sandbox):
    gmail_sandbox.inject("too_many_logins")
    [msg] = make_messages(1)
    assert make_backend().send_messages([msg]) == 1
    assert gmail_sandbox.auth_attempts >= 2
    assert received_ids(gmail_sandbox) == ids([msg])


def test_temporary_failures_give_up_within_the_bounds(make_backend, gmail_sandbox, settings):
    knobs(settings, RETRY_ATTEMPTS=3)
    gmail_sandbox.inject("temporary", times=None)  # every MAIL: 451
    batch = make_messages(2)
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        make_backend().send_messages(batch)
    assert time.monotonic() - started < 2.0
    assert info.value.smtp_code == 451
    assert info.value.cause.id == "temporary"
    assert info.value.sent_count == 0
    assert gmail_sandbox.messages == []
    assert [m.gmail_smtp_status.attempts for m in batch] == [3, 3]  # both were in flight each time
    assert [m.gmail_smtp_status.status for m in batch] == [FAILED, FAILED]
    assert batch[1].gmail_smtp_status.refused["r1@example.com"].code == 451


def test_throttling_that_never_ends_stops_the_batch(make_backend, gmail_sandbox, settings):
    knobs(settings, RETRY_ATTEMPTS=2, PIPELINE_WINDOW=2)
    gmail_sandbox.inject("throttled", times=None)  # 421 and hang-up at every MAIL
    batch = make_messages(20)
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        make_backend().send_messages(batch)
    assert (info.value.smtp_code, info.value.cause.id) == (421, "throttled")
    assert gmail_sandbox.messages == []
    assert gmail_sandbox.connections == 3  # two rounds for the first messages, one more, then it stops
    states = Counter(m.gmail_smtp_status.status for m in batch)
    assert states[NOT_SENT] >= 14
    assert states[FAILED] + states[NOT_SENT] == 20


def test_without_retries_a_temporary_failure_fails_only_that_message(make_backend, gmail_sandbox, settings):
    knobs(settings, RETRY_ATTEMPTS=1)
    slept: list[float] = []
    gmail_sandbox.inject("temporary")
    batch = make_messages(3)
    backend = make_backend(fail_silently=True)
    backend.timing = Timing(sleep=slept.append)
    assert backend.send_messages(batch) == 2
    assert [m.gmail_smtp_status.status for m in batch] == [FAILED, SENT, SENT]
    assert slept == []  # nothing left to retry: no waiting


def test_daily_quota_stops_the_batch_at_once(make_backend, gmail_sandbox, settings, monkeypatch):
    knobs(settings, PIPELINE_WINDOW=3)

    def quota_after_two(received: Any) -> None:
        if len(gmail_sandbox.messages) == 2:
            gmail_sandbox.inject("daily_quota", times=None)

    monkeypatch.setattr(gmail_sandbox, "on_message", quota_after_two)
    batch = make_messages(20)
    backend = make_backend()
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        backend.send_messages(batch)
    error = info.value
    assert (error.smtp_code, error.cause.id) == (550, "daily_quota")
    assert "Daily user sending" in error.smtp_error.decode()
    assert error.sent_count == 2
    assert "2 of 20 messages were sent" in "".join(error.__notes__)
    assert received_ids(gmail_sandbox) == ids(batch[:2])
    states = [m.gmail_smtp_status.status for m in batch]
    assert states[:2] == [SENT, SENT]
    assert states[2] == FAILED
    assert states[-10:] == [NOT_SENT] * 10  # never offered to the server
    assert len(client_lines(backend, "MAIL FROM")) <= 2 + 3  # what was in flight, nothing after


def test_daily_quota_with_fail_silently_returns_the_count(make_backend, gmail_sandbox, monkeypatch):
    monkeypatch.setattr(
        gmail_sandbox,
        "on_message",
        lambda received: gmail_sandbox.inject("daily_quota", times=None) if len(gmail_sandbox.messages) == 1 else None,
    )
    batch = make_messages(5)
    assert make_backend(fail_silently=True).send_messages(batch) == 1
    assert batch[4].gmail_smtp_status.cause.id == "daily_quota"


def test_permanent_refusal_is_reported_after_the_rest_of_the_batch(make_backend, gmail_sandbox):
    batch = make_messages(3)
    gmail_sandbox.inject("bad_recipient", address="r1@example.com")
    backend = make_backend()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        backend.send_messages(batch)
    assert info.value.cause.id == "bad_recipient"
    assert set(info.value.recipients) == {"r1@example.com"}
    assert received_ids(gmail_sandbox) == ids([batch[0], batch[2]])
    assert [m.gmail_smtp_status.status for m in batch] == [SENT, FAILED, SENT]
    assert batch[1].gmail_smtp_status.refused["r1@example.com"].code == 553
    assert batch[1].gmail_smtp_status.attempts == 1  # 5xx: never retried
    assert client_lines(backend, "RSET")  # the transaction after the refusal starts clean


def test_count_is_exactly_the_number_accepted(make_backend, gmail_sandbox):
    partial = EmailMessage("partial", "Body", SANDBOX_USER, ["ok@example.com", "bad@example.com"])
    refused = EmailMessage("refused", "Body", SANDBOX_USER, ["bad@example.com"])
    gmail_sandbox.inject("bad_recipient", address="bad@example.com", times=None)
    backend = make_backend(fail_silently=True)
    assert backend.send_messages([partial, refused, *make_messages(2)]) == 3
    assert partial.gmail_smtp_status.status == PARTIAL  # like smtplib: partly refused still counts
    assert partial.gmail_smtp_status.accepted == ["ok@example.com"]
    assert refused.gmail_smtp_status.status == FAILED
    assert len(gmail_sandbox.messages) == 3


# -- Gmail's limits --------------------------------------------------------------------------


def test_message_over_size_is_refused_before_sending():
    with GmailSandbox(size_limit=3000) as small:
        backend = EmailBackend(**small.mailer_options("ssl"))
        small_one, big, other = make_messages(3)
        big.body = "x" * 5000
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            backend.send_messages([small_one, big, other])
        assert info.value.smtp_code == 552
        assert info.value.cause.id == "message_too_large"
        assert "SIZE limit of 3000 bytes" in str(info.value)
        assert big.gmail_smtp_status.status == FAILED
        assert received_ids(small) == ids([small_one, other])
        sizes = [line for line in client_lines(backend, "MAIL FROM") if "SIZE=" in line]
        assert len(sizes) == 2
        assert all(int(line.split("SIZE=")[1].split()[0]) < 3000 for line in sizes)


def test_150_recipients_go_in_two_transactions(make_backend, gmail_sandbox):
    recipients = [f"user{i:03d}@example.com" for i in range(150)]
    msg = EmailMessage("many", "Body", SANDBOX_USER, recipients[:50], cc=recipients[50:90], bcc=recipients[90:])
    assert make_backend().send_messages([msg]) == 1
    first, second = gmail_sandbox.messages
    assert (len(first.rcpt_tos), len(second.rcpt_tos)) == (100, 50)
    assert Counter(first.rcpt_tos + second.rcpt_tos) == Counter(recipients)  # each exactly once
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert "user100@example.com" not in first.data.decode()  # Bcc stays out of the headers
    assert sorted(msg.gmail_smtp_status.accepted) == recipients


def test_server_with_a_lower_recipient_limit(gmail_sandbox, settings):
    knobs(settings, MAX_RECIPIENTS=100)
    with GmailSandbox(max_recipients=40) as strict:
        msg = EmailMessage("many", "Body", SANDBOX_USER, [f"u{i}@example.com" for i in range(90)])
        assert EmailBackend(**strict.mailer_options("ssl")).send_messages([msg]) == 1
        assert sorted(len(m.rcpt_tos) for m in strict.messages) == [10, 40, 40]
        assert msg.gmail_smtp_status.status == SENT


@pytest.mark.parametrize("domain", ["example.jp", "例え.jp"])
def test_smtputf8_for_a_japanese_local_part(make_backend, gmail_sandbox, domain):
    msg = EmailMessage("件名", "本文", SANDBOX_USER, [f"山田 太郎 <山田@{domain}>", "ascii@example.com"])
    assert make_backend().send_messages([msg]) == 1
    [received] = gmail_sandbox.messages
    assert received.smtputf8 is True
    assert received.rcpt_tos == [
        "山田@example.jp" if domain == "example.jp" else "山田@xn--r8jz45g.jp",
        "ascii@example.com",
    ]
    # RFC 6532: the local part is raw UTF-8 in the header, never an encoded-word.
    to = next(line for line in received.data.decode("utf-8").split("\r\n") if line.startswith("To:"))
    name, _, rest = to[3:].partition("<")
    assert rest.startswith("山田@")
    assert str(make_header(decode_header(name.strip()))) == "山田 太郎"  # encoded-word (5.2) or UTF-8 (6.x)


def test_ascii_mail_does_not_ask_for_smtputf8(make_backend, gmail_sandbox):
    assert make_backend().send_messages(make_messages(1, to=["佐藤 <sato@例え.jp>"])) == 1
    assert gmail_sandbox.messages[0].smtputf8 is False


# -- servers that offer less than Gmail ----------------------------------------------------


class _Recorder:
    """A minimal aiosmtpd handler: keeps every message; refuses recipients named refuse@..."""

    def __init__(self, advertise: tuple[str, ...] = ()) -> None:
        self.advertise = advertise
        self.messages: list[tuple[str, list[str], bytes, bool]] = []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], *(f"250-{word}" for word in self.advertise), responses[-1]]

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.startswith("refuse@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, envelope.smtp_utf8))
        return "250 2.0.0 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def plain_server(request: pytest.FixtureRequest) -> Iterator[tuple[_Recorder, dict[str, Any]]]:
    """A plain aiosmtpd server on loopback: no TLS, AUTH, CHUNKING or SMTPUTF8; PIPELINING only if asked."""
    from aiosmtpd.controller import Controller

    handler = _Recorder(getattr(request, "param", ()))
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=False)
    controller.start()
    options = {"host": "127.0.0.1", "port": controller.port, "use_tls": False, "username": "", "password": ""}
    yield handler, options
    controller.stop()


@pytest.mark.parametrize("plain_server", [(), ("PIPELINING",)], ids=["neither", "pipelining-only"], indirect=True)
def test_server_without_chunking(plain_server):
    handler, options = plain_server
    batch = make_messages(5)
    batch[2].to = ["refuse@example.com"]
    backend = EmailBackend(fail_silently=True, **options)
    with backend:
        before = backend._session.round_trips
        assert backend.send_messages(batch) == 4
        trips = backend._session.round_trips - before
    assert [m.gmail_smtp_status.status for m in batch] == [SENT, SENT, FAILED, SENT, SENT]
    assert [rcpts for _, rcpts, _, _ in handler.messages] == [
        ["r0@example.com"],
        ["r1@example.com"],
        ["r3@example.com"],
        ["r4@example.com"],
    ]
    assert Counter(m[2].split(b"Message-ID: ")[1].split(b"\r\n")[0].decode() for m in handler.messages) == ids(
        [batch[0], batch[1], batch[3], batch[4]]
    )
    assert not client_lines(backend, "BDAT")
    if handler.advertise:  # MAIL, RCPT, DATA in one write; the message and the next ones after 354
        assert trips <= 2 * len(batch) + 1
    else:  # one command at a time: MAIL, RCPT, DATA, the message (RSET after the refusal)
        assert trips >= 4 * 4 + 2


def test_smtputf8_not_offered_is_a_clear_error(plain_server):
    handler, options = plain_server
    utf8 = EmailMessage("件名", "本文", "sender@example.com", ["山田@example.jp"])
    ascii_ = EmailMessage("subject", "body", "sender@example.com", ["to@example.com"])
    with pytest.raises(smtplib.SMTPNotSupportedError) as info:
        EmailBackend(**options).send_messages([utf8, ascii_])
    assert info.value.cause.id == "smtputf8_required"
    assert "SMTPUTF8" in str(info.value)
    assert [rcpts for _, rcpts, _, _ in handler.messages] == [["to@example.com"]]  # the other one went out
    assert utf8.gmail_smtp_status.status == FAILED


# -- pipelining ------------------------------------------------------------------------------


def test_one_message_costs_one_round_trip(make_backend, gmail_sandbox):
    with make_backend() as backend:
        before = backend._session.round_trips
        assert backend.send_messages(make_messages(1)) == 1
        assert backend._session.round_trips - before == 1
        before = backend._session.round_trips
        assert backend.send_messages(make_messages(1, to=["a@example.com", "b@example.com"])) == 1
        assert backend._session.round_trips - before == 1
    assert all(m.via_bdat for m in gmail_sandbox.messages)
    assert client_lines(backend, "BDAT")


def test_a_window_of_messages_is_in_flight(make_backend, gmail_sandbox, settings):
    knobs(settings, PIPELINE_WINDOW=5)
    backend = make_backend()
    batch = make_messages(12)
    assert backend.send_messages(batch) == 12
    lines = list(backend.transcript.lines)
    first_final = next(i for i, (d, text) in enumerate(lines) if d == "<-" and text.startswith("250 2.0.0 OK"))
    # Five messages were written before the first one's final reply was read.
    assert sum(1 for d, text in lines[:first_final] if d == "->" and text.startswith("MAIL FROM")) == 5
    assert received_ids(gmail_sandbox) == ids(batch)
    assert [r.message["Subject"] for r in gmail_sandbox.messages] == [f"message {i}" for i in range(12)]


def test_without_pipelining_setting_commands_go_one_by_one(make_backend, gmail_sandbox, settings):
    knobs(settings, PIPELINING=False)
    with make_backend() as backend:
        before = backend._session.round_trips
        assert backend.send_messages(make_messages(2)) == 2
        assert backend._session.round_trips - before == 8  # MAIL, RCPT, DATA, message: twice
    assert not any(m.via_bdat for m in gmail_sandbox.messages)


# -- threads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("opened", [False, True], ids=["pooled", "opened"])
def test_eight_threads_fifty_messages_each(make_backend, gmail_sandbox, opened):
    gmail_sandbox.inject("disconnect_after", messages=30, times=3)  # and a few hang-ups on the way
    backend = make_backend()
    if opened:
        backend.open()
    batches = [make_messages(50, prefix=f"thread {t}") for t in range(8)]
    counts: list[int] = []
    errors: list[BaseException] = []

    def work(batch: list[EmailMessage]) -> None:
        try:
            counts.append(sum(backend.send_messages([msg]) for msg in batch))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    backend.close()
    assert errors == []
    assert counts == [50] * 8
    everything = [msg for batch in batches for msg in batch]
    assert received_ids(gmail_sandbox) == ids(everything)  # 400 messages, none lost, none twice


# -- outcome reporting ------------------------------------------------------------------------


def test_signals_and_logs_report_each_message_without_secrets(make_backend, gmail_sandbox, caplog):
    sent: list[Any] = []
    failed: list[Any] = []

    def on_sent(sender: Any, message: Any, status: Any, **kwargs: Any) -> None:
        sent.append((sender, message, status))

    def on_failed(sender: Any, message: Any, status: Any, **kwargs: Any) -> None:
        failed.append((message, status))
        raise RuntimeError("a broken receiver must not turn a sent batch into an error")

    signals.message_sent.connect(on_sent)
    signals.message_failed.connect(on_failed)
    try:
        gmail_sandbox.inject("bad_recipient", address="r1@example.com")
        batch = make_messages(2)
        with caplog.at_level(logging.INFO, logger="django_gmail_smtp"):
            assert make_backend(fail_silently=True).send_messages(batch) == 1
    finally:
        signals.message_sent.disconnect(on_sent)
        signals.message_failed.disconnect(on_failed)
    assert [(s, m) for s, m, _ in sent] == [(EmailBackend, batch[0])]
    assert sent[0][2].reply.code == 250
    assert [m for m, _ in failed] == [batch[1]]
    assert failed[0][1].cause.id == "bad_recipient"
    text = caplog.text
    assert str(batch[0].gmail_smtp_status.message_id) in text
    assert "553" in text
    assert "bad_recipient" in text
    assert "receiver" in text  # the broken receiver is logged
    assert SANDBOX_PASSWORD not in text


def test_header_injection_raises_before_anything_is_sent(make_backend, gmail_sandbox):
    good, bad = make_messages(2)
    bad.subject = "Hi\nBcc: victim@example.com"
    with pytest.raises(ValueError, match=r"(?i)newline|linefeed"):
        make_backend().send_messages([good, bad])
    assert gmail_sandbox.messages == []
    assert isinstance(bad.gmail_smtp_status.error, ValueError)


def test_bad_delivery_setting_is_a_configuration_error(make_backend, gmail_sandbox, settings):
    from django.core.exceptions import ImproperlyConfigured

    knobs(settings, PIPELINE_WINDOW="ten")
    with pytest.raises(ImproperlyConfigured, match="PIPELINE_WINDOW"):
        make_backend(fail_silently=True).send_messages(make_messages(1))


def test_delivery_options_come_from_gmail_smtp(settings):
    settings.GMAIL_SMTP = {"PIPELINE_WINDOW": 4, "RETRY_ATTEMPTS": 5, "MESSAGES_PER_CONNECTION": 0}
    options = DeliveryOptions.from_settings()
    assert (options.window, options.retry.attempts, options.messages_per_connection) == (4, 5, 0)
    assert options.max_recipients == 100


# -- the backoff schedule (pure) -------------------------------------------------------------


def test_backoff_doubles_with_equal_jitter():
    low = [backoff_delay(n, base=1.0, cap=100.0, rng=lambda: 0.0) for n in range(1, 6)]
    high = [backoff_delay(n, base=1.0, cap=100.0, rng=lambda: 1.0) for n in range(1, 6)]
    assert low == [0.5, 1.0, 2.0, 4.0, 8.0]  # half the ceiling at least
    assert high == [1.0, 2.0, 4.0, 8.0, 16.0]  # the ceiling at most
    assert backoff_delay(3, base=1.0, cap=100.0, rng=lambda: 0.5) == 3.0


def test_backoff_is_capped_and_never_overflows():
    assert backoff_delay(10, base=1.0, cap=15.0, rng=lambda: 1.0) == 15.0
    assert backoff_delay(10_000, base=1.0, cap=15.0, rng=lambda: 0.0) == 7.5
    with pytest.raises(ValueError, match="counts from 1"):
        backoff_delay(0, base=1.0, cap=15.0)


def test_backoff_jitter_spreads_clients_apart():
    import random

    rng = random.Random(6)
    delays = {round(backoff_delay(4, base=1.0, cap=100.0, rng=rng.random), 6) for _ in range(50)}
    assert len(delays) == 50
    assert all(4.0 <= d <= 8.0 for d in delays)


def test_retries_wait_as_the_policy_says(make_backend, gmail_sandbox, settings):
    """The backend's waits are the schedule's delays: no extra sleeping, no busy loop."""
    knobs(settings, RETRY_ATTEMPTS=4, RETRY_BACKOFF=0.02, RETRY_BACKOFF_MAX=1.0)
    slept: list[float] = []
    gmail_sandbox.inject("temporary", times=3)
    [msg] = make_messages(1)
    backend = make_backend()
    backend.timing = Timing(sleep=slept.append, random=lambda: 1.0)
    assert backend.send_messages([msg]) == 1
    assert slept == pytest.approx([0.02, 0.04, 0.08])
    assert msg.gmail_smtp_status.attempts == 4


# -- the state machine, without a server: every reply class at every stage -------------------------

OK = Reply(250, "2.1.0 OK")
ACCEPTED_FINAL = Reply(250, "2.0.0 OK 1700000000 x1-20020a")
TEMPORARY = Reply(451, "4.3.0 Mail server temporarily rejected message.")
CLOSING = Reply(421, "4.7.0 Try again later, closing connection.")
PERMANENT = Reply(550, "5.7.1 Our system has detected an unusual rate of unsolicited mail.")
NO_SUCH_USER = Reply(550, "5.1.1 The email account that you tried to reach does not exist.")
QUOTA = Reply(550, "5.4.5 Daily user sending limit exceeded.")
IDLE = Reply(451, "4.4.2 Timeout - closing connection.")
LOST = smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


def attempt(
    mail: Reply | None,
    rcpt: list[Reply | None],
    final: Reply | None,
    *,
    data_sent: bool,
    recipients: tuple[str, ...] = ("a@example.com",),
    issued: bool = True,
) -> Attempt:
    job = Job(None, SANDBOX_USER, list(recipients), b"Message-ID: <m@example.com>\r\n\r\nBody\r\n")
    return Attempt(
        job.sender,
        list(recipients),
        job.data,
        tag=job,
        issued=issued,
        data_sent=data_sent,
        mail=mail,
        rcpt=rcpt,
        final=final,
    )


# (stage, mail, rcpt, final, data went out, connection lost) ->
#   (with attempts left: status, sent again?; on the last attempt: status)
# A "disconnect" has no reply at that stage and the connection's error (`lost`) set.
STAGES = {
    "all 2xx": (OK, [OK], ACCEPTED_FINAL, True, False, (SENT, False), SENT),
    "MAIL 4xx": (TEMPORARY, [None], None, False, False, (NOT_SENT, True), FAILED),
    "MAIL 421": (CLOSING, [None], None, False, False, (NOT_SENT, True), FAILED),
    "MAIL 5xx": (PERMANENT, [None], None, False, False, (FAILED, False), FAILED),
    "MAIL daily quota": (QUOTA, [None], None, False, False, (FAILED, False), FAILED),
    "disconnect before MAIL's reply": (None, [None], None, False, True, (NOT_SENT, True), NOT_SENT),
    "RCPT 4xx": (OK, [TEMPORARY], None, False, False, (NOT_SENT, True), FAILED),
    "RCPT 5xx": (OK, [NO_SUCH_USER], None, False, False, (FAILED, False), FAILED),
    "disconnect before RCPT's reply": (OK, [None], None, False, True, (NOT_SENT, True), NOT_SENT),
    "DATA/BDAT 4xx": (OK, [OK], TEMPORARY, True, False, (NOT_SENT, True), FAILED),
    "DATA/BDAT 421": (OK, [OK], CLOSING, True, False, (NOT_SENT, True), FAILED),
    "DATA/BDAT 5xx": (OK, [OK], PERMANENT, True, False, (FAILED, False), FAILED),
    "DATA/BDAT daily quota": (OK, [OK], QUOTA, True, False, (FAILED, False), FAILED),
    "DATA refused before the message went out": (OK, [OK], PERMANENT, False, False, (FAILED, False), FAILED),
    "disconnect before DATA's go-ahead": (OK, [OK], None, False, True, (NOT_SENT, True), NOT_SENT),
    "disconnect after the message, before the final reply": (OK, [OK], None, True, True, (NOT_SENT, True), UNKNOWN),
    "disconnect after the final reply": (OK, [OK], ACCEPTED_FINAL, True, True, (SENT, False), SENT),
}


@pytest.mark.parametrize("case", STAGES.values(), ids=STAGES.keys())
def test_settle_with_attempts_left(case: tuple[Any, ...]) -> None:
    mail, rcpt, final, data_sent, lost, (status, again), _ = case
    txn = attempt(mail, rcpt, final, data_sent=data_sent)
    job: Job = txn.tag
    result = settle([txn], attempts=3, lost=LOST if lost else None)
    assert job.status.status == status
    assert job.status.attempts == 1
    assert [t.recipients for t in result.retry] == ([["a@example.com"]] if again else [])
    assert result.progress == (status == SENT)
    if again:  # each retry is a fresh transaction that remembers the try before
        [retry] = result.retry
        assert (retry.attempts, retry.issued, retry.mail, retry.final) == (1, False, None, None)
        assert retry.maybe_delivered == (data_sent and final is None)
        assert result.trouble is not None
    else:
        assert result.trouble is None


@pytest.mark.parametrize("case", STAGES.values(), ids=STAGES.keys())
def test_settle_on_the_last_attempt(case: tuple[Any, ...]) -> None:
    mail, rcpt, final, data_sent, lost, _, status = case
    txn = attempt(mail, rcpt, final, data_sent=data_sent)
    job: Job = txn.tag
    result = settle([txn], attempts=1, lost=LOST if lost else None)
    assert result.retry == []
    assert job.status.status == status
    recipient = job.status.recipients["a@example.com"]
    # Refused only with the server's reply; unknown/not sent carry none.
    assert (recipient.reply is not None) == (status in (SENT, FAILED))
    if status != SENT:
        assert job.error is not None
        assert job.error is not LOST or lost
    stops = QUOTA in (mail, final)
    assert (result.stop is not None) == stops
    if stops:
        assert result.stop.cause.id == "daily_quota"


def test_settle_mixed_recipients_sends_nothing_twice() -> None:
    """Accepted recipients are done: only the temporarily refused one goes again."""
    txn = attempt(
        OK,
        [OK, TEMPORARY, NO_SUCH_USER],
        ACCEPTED_FINAL,
        data_sent=True,
        recipients=("a@example.com", "b@example.com", "c@example.com"),
    )
    job: Job = txn.tag
    result = settle([txn], attempts=3, lost=None)
    assert job.status.status == PARTIAL
    assert job.status.accepted == ["a@example.com"]
    assert list(job.status.refused) == ["c@example.com"]
    assert [t.recipients for t in result.retry] == [["b@example.com"]]
    assert result.progress
    assert not result.dropped  # a server's 4xx: back off before trying again


def test_settle_all_recipients_temporarily_refused_then_data_refused() -> None:
    txn = attempt(OK, [TEMPORARY, TEMPORARY], None, data_sent=False, recipients=("a@example.com", "b@example.com"))
    result = settle([txn], attempts=3, lost=None)
    assert [t.recipients for t in result.retry] == [["a@example.com", "b@example.com"]]
    assert txn.tag.status.status == NOT_SENT


def test_settle_too_many_recipients_goes_again_at_once_without_using_an_attempt() -> None:
    too_many = Reply(452, "4.5.3 Your message has too many recipients.")
    txn = attempt(OK, [OK, too_many], ACCEPTED_FINAL, data_sent=True, recipients=("a@example.com", "b@example.com"))
    result = settle([txn], attempts=1, lost=None)  # even on the last attempt
    assert [t.recipients for t in result.retry] == [["b@example.com"]]
    assert result.trouble is None
    assert txn.tag.status.status == PARTIAL


def test_settle_after_a_421_the_server_acted_on_nothing() -> None:
    """A message written after the server's 421 and without a reply was not taken: not sent, not unknown."""
    closed = attempt(CLOSING, [None], None, data_sent=False)
    after = attempt(None, [None], None, data_sent=True)
    settle([closed, after], attempts=1, lost=LOST)
    assert closed.tag.status.status == FAILED
    assert after.tag.status.status == NOT_SENT


def test_settle_never_issued_transactions_wait_for_the_next_round() -> None:
    sent = attempt(OK, [OK], ACCEPTED_FINAL, data_sent=True)
    waiting = attempt(None, [], None, data_sent=False, issued=False)
    result = settle([sent, waiting], attempts=1, lost=None)
    assert result.retry == [waiting]
    assert waiting.attempts == 0  # not tried: no attempt used
    assert waiting.tag.status.status == NOT_SENT


@pytest.mark.parametrize(
    ("reply", "lost", "dropped"),
    [(None, LOST, True), (IDLE, None, True), (TEMPORARY, None, False), (CLOSING, None, False)],
    ids=["hang-up", "idle timeout (451 4.4.2)", "4xx", "421"],
)
def test_settle_a_mere_hang_up_reconnects_at_once(reply: Reply | None, lost: Any, dropped: bool) -> None:
    txn = attempt(reply, [None], None, data_sent=False)
    result = settle([txn], attempts=3, lost=lost)
    assert result.dropped == dropped
    assert result.trouble is not None


def test_a_lost_message_retried_and_lost_again_stays_unknown() -> None:
    """An earlier try may have delivered it: a later try that never wrote the bytes does not make it 'not sent'."""
    first = attempt(OK, [OK], None, data_sent=True)
    [second] = settle([first], attempts=2, lost=LOST).retry
    second.issued, second.rcpt = True, [None]  # the new connection broke before MAIL's reply
    settle([second], attempts=2, lost=LOST)
    assert first.tag.status.status == UNKNOWN
    assert first.tag.status.attempts == 2


def test_give_up_reports_how_the_last_try_ended() -> None:
    txn = attempt(OK, [OK], TEMPORARY, data_sent=True)
    [retry] = settle([txn], attempts=3, lost=None).retry
    stopped = smtplib.SMTPServerDisconnected("the batch stopped")
    give_up(retry, stopped)
    assert txn.tag.status.status == FAILED  # refused with the 451, not "stopped"
    assert txn.tag.status.recipients["a@example.com"].reply == TEMPORARY
    untried = attempt(None, [], None, data_sent=False, issued=False)
    give_up(untried, stopped)
    assert (untried.tag.status.status, untried.tag.error) == (NOT_SENT, stopped)


# -- the loop, with fake time --------------------------------------------------------------------


class FakeTime:
    """The real clock plus the time slept, without sleeping (the sessions' own deadlines stay comparable)."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def clock(self) -> float:
        return time.monotonic() + sum(self.slept)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_the_retry_budget_counts_on_the_injected_clock(make_backend, gmail_sandbox, settings):
    """Backoff is waited on the backend's Timing: no real sleeping, and the budget ends the retries."""
    knobs(settings, RETRY_ATTEMPTS=10, RETRY_BACKOFF=1.0, RETRY_BACKOFF_MAX=4.0, RETRY_TIMEOUT=6.0)
    fake = FakeTime()
    gmail_sandbox.inject("temporary", times=None)
    [msg] = make_messages(1)
    backend = make_backend(fail_silently=True)
    backend.timing = Timing(clock=fake.clock, sleep=fake.sleep, random=lambda: 0.0)
    assert backend.send_messages([msg]) == 0
    assert fake.slept == [0.5, 1.0, 2.0, 2.0]  # one more (2.0) would pass RETRY_TIMEOUT (6 s)
    assert msg.gmail_smtp_status.attempts == 5
    assert msg.gmail_smtp_status.status == FAILED
    assert msg.gmail_smtp_status.reply.code == 451
