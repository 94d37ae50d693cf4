"""The daily-limit guard: arithmetic on an injectable clock, signals, the sync opt-in, concurrency."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_gmail_smtp import quota
from django_gmail_smtp.conf import resolve
from django_gmail_smtp.exceptions import GmailConfigError
from django_gmail_smtp.sandbox.constants import SANDBOX_USER
from tests.queue_support import REPO, QueueSite, needs_tasks_db

ACCOUNT = "shop@example.com"
DAY = timedelta(hours=24)


class Clock:
    """A clock the test moves by hand, passed as ``clock=`` (worker processes get GMAIL_SMTP["CLOCK"])."""

    def __init__(self) -> None:
        self.now = timezone.now().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def gmail_config(username: str = ACCOUNT, **options: Any) -> Any:
    return resolve({"host": "smtp.gmail.com", "username": username, "password": "x", **options})


pytestmark = pytest.mark.django_db


def test_the_in_process_tests_run_on_the_engine_asked_for() -> None:
    """``GMAIL_TEST_DATABASE=postgresql`` (CI's engine run) really moves these tests to PostgreSQL."""
    from django.db import connection

    assert connection.vendor == os.environ.get("GMAIL_TEST_DATABASE", "sqlite")
    if connection.vendor == "postgresql":  # the guard needs nothing stricter than the default
        with connection.cursor() as cursor:
            cursor.execute("SHOW transaction_isolation")
            assert cursor.fetchone() == ("read committed",)
    assert quota.reserve(ACCOUNT, limit=1).count == 1


def test_the_limit_counts_a_rolling_window(clock: Clock) -> None:
    start = clock.now
    for _ in range(3):
        quota.reserve(ACCOUNT, limit=5, clock=clock)
        clock.advance(hours=1)
    quota.reserve(ACCOUNT, 2, limit=5, clock=clock)  # 5 of 5, the last two at start + 3 h
    with pytest.raises(quota.QuotaExceededError) as refused:
        quota.reserve(ACCOUNT, limit=5, clock=clock)
    error = refused.value
    assert (error.account, error.used, error.limit) == (ACCOUNT, 5, 5)
    assert error.retry_at == start + DAY  # when the oldest leaves the window
    assert isinstance(error, smtplib.SMTPException)
    assert "has sent 5 of its 5 messages in the last 24 hours" in str(error)
    assert "[daily_quota]" in str(error)  # the cause and fix, as for Gmail's own 550 5.4.5
    clock.advance(hours=21, seconds=-1)  # 1 s before the first leaves
    with pytest.raises(quota.QuotaExceededError):
        quota.reserve(ACCOUNT, limit=5, clock=clock)
    clock.advance(seconds=1)
    quota.reserve(ACCOUNT, limit=5, clock=clock)
    assert quota.usage(ACCOUNT, 5, clock=clock).used == 5
    assert quota.usage(ACCOUNT, 5, clock=clock).remaining == 0


def test_released_and_partly_sent_slots_are_given_back(clock: Clock) -> None:
    whole = quota.reserve(ACCOUNT, 3, limit=4, clock=clock)
    quota.release(whole)
    assert quota.usage(ACCOUNT, 4, clock=clock).used == 0
    part = quota.reserve(ACCOUNT, 4, limit=4, clock=clock)
    quota.confirm(part, sent=1)  # three were not accepted
    assert quota.usage(ACCOUNT, 4, clock=clock).used == 1
    quota.settle(None, 0)  # the sync backend's call when the guard is off: nothing to do


def test_next_free_slot_counts_the_messages_waiting_ahead(clock: Clock) -> None:
    start = clock.now
    for hour in range(4):
        quota.reserve(ACCOUNT, limit=4, clock=clock)
        if hour < 3:
            clock.advance(hours=1)
    assert quota.next_free(ACCOUNT, 4, clock=clock) == start + DAY
    assert quota.next_free(ACCOUNT, 4, ahead=2, clock=clock) == start + DAY + timedelta(hours=2)
    assert quota.next_free(ACCOUNT, 4, ahead=10, clock=clock) == clock.now + DAY
    assert quota.next_free(ACCOUNT, None, clock=clock) == clock.now
    assert quota.next_free(ACCOUNT, 10, clock=clock) == clock.now


def test_warning_and_reached_signals_fire_once_at_their_marks(clock: Clock, caplog: Any) -> None:
    warnings: list[dict[str, Any]] = []
    reached: list[dict[str, Any]] = []

    def on_warning(**kwargs: Any) -> None:
        warnings.append(kwargs)

    def on_reached(**kwargs: Any) -> None:
        reached.append(kwargs)

    quota.quota_warning.connect(on_warning)
    quota.quota_reached.connect(on_reached)
    try:
        for _ in range(10):
            quota.reserve(ACCOUNT, limit=10, clock=clock)
    finally:
        quota.quota_warning.disconnect(on_warning)
        quota.quota_reached.disconnect(on_reached)
    assert [(w["account"], w["used"], w["limit"]) for w in warnings] == [(ACCOUNT, 8, 10)]
    assert [(r["used"], r["limit"], r["until"]) for r in reached] == [(10, 10, clock.now + DAY)]
    assert "has sent 8 of 10 messages in the last 24 hours" in caplog.text


def test_a_block_after_gmails_own_refusal_holds_everything_until_it_ends(clock: Clock) -> None:
    until = quota.block(ACCOUNT, reason="550 5.4.5 Daily user sending limit exceeded.", clock=clock)
    assert until == clock.now + DAY
    with pytest.raises(quota.QuotaExceededError, match=r"550 5\.4\.5") as refused:
        quota.reserve(ACCOUNT, limit=None, clock=clock)
    assert refused.value.retry_at == until
    assert quota.usage(ACCOUNT, 500, clock=clock).blocked_until == until
    assert quota.unblock(ACCOUNT)
    quota.reserve(ACCOUNT, limit=None, clock=clock)


def test_limits_per_host_account_and_mailer(settings: Any) -> None:
    assert quota.limit_for(gmail_config()) == 500
    assert quota.limit_for(resolve({"host": "smtp.example.com", "username": "a@b"})) is None
    assert quota.limit_for(resolve({"host": "smtp-relay.gmail.com", "username": "a@b"})) is None
    settings.GMAIL_SMTP = {"QUOTA_LIMIT": 2000, "QUOTA_LIMITS": {"Shop@Example.com": 100, "bulk": None}}
    assert quota.limit_for(gmail_config()) == 100  # by address, case-insensitive
    assert quota.limit_for(gmail_config("other@example.com")) == 2000
    assert quota.limit_for(resolve({"host": "127.0.0.1", "username": "shop@example.com"})) == 100
    assert quota.account_key(gmail_config("  Shop@Example.COM ")) == ACCOUNT
    settings.GMAIL_SMTP = {"QUOTA_LIMITS": {ACCOUNT: "many"}}
    with pytest.raises(GmailConfigError, match="QUOTA_LIMITS"):
        quota.limit_for(gmail_config())


def test_the_sync_guard_is_off_by_default_and_costs_no_query(django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        assert quota.reserve_sync(gmail_config(), 3) is None


def test_the_sync_guard_raises_a_clear_error_when_on(settings: Any, clock: Clock) -> None:
    settings.GMAIL_SMTP = {"QUOTA_SYNC": True, "QUOTA_LIMITS": {ACCOUNT: 2}}
    reservation = quota.reserve_sync(gmail_config(), 2, clock=clock)
    assert reservation is not None
    quota.settle(reservation, 1)
    with quota.bypass():  # the queued task reserved already
        assert quota.reserve_sync(gmail_config(), 5, clock=clock) is None
    with pytest.raises(quota.QuotaExceededError, match="has sent 1 of its 2 messages"):
        quota.reserve_sync(gmail_config(), 2, clock=clock)


def test_the_clock_setting_takes_a_dotted_path(settings: Any) -> None:
    settings.GMAIL_SMTP = {"CLOCK": "tests.queue_settings.clock"}
    assert abs(quota.now() - timezone.now()) < timedelta(seconds=5)


@needs_tasks_db
def test_processes_reserving_at_once_never_exceed_the_limit(queue_site: QueueSite) -> None:
    """Four processes race for 60 slots on one database file: exactly 60 are granted."""
    argv = [*queue_site.python, "-m", "tests.queue_driver", "reserve"]
    arguments = json.dumps({"account": ACCOUNT, "times": 30, "limit": 60, "start_at": time.time() + 1.5})
    processes = [
        subprocess.Popen(
            [*argv, arguments], env=queue_site.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    granted = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err.decode(errors="replace")
            granted.append(json.loads(out)["granted"])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert sum(granted) == 60
    [row] = queue_site.query(
        "SELECT SUM(u.count) AS used FROM gmail_smtp_quotause u JOIN gmail_smtp_quotaaccount a ON a.id = u.account_id"
    )
    assert row["used"] == 60


def _messages_at_the_server(sandbox: Any) -> dict[str, int]:
    ids = [m.message["Message-ID"] for m in sandbox.messages]
    return {mid: ids.count(mid) for mid in ids}


@needs_tasks_db
def test_eight_workers_racing_for_the_last_slots_never_exceed_the_limit(
    queue_site: QueueSite, gmail_sandbox: Any
) -> None:
    """10 slots left, 30 messages, 8 worker processes: exactly 10 reach the server, 20 are held."""
    queue_site.driver("prefill", {"account": SANDBOX_USER, "count": 490})  # limit 500 (tests/queue_settings.py)
    for _ in range(8):
        queue_site.start_worker()
    queue_site.wait_until_listening()
    answer = queue_site.driver("request", {"count": 30, "tag": "race"})
    log_ids = [m["log_id"] for m in answer["messages"]]

    def settled() -> bool:
        # A held message is claimed ("sending") for a moment each time it is checked again.
        rows = queue_site.log(log_ids)
        waiting = [r for r in rows if r["status"] != "sent" and r["cause"] == "daily_quota"]
        return len(rows) - len(waiting) == 10 and sum(r["status"] == "sent" for r in rows) == 10

    queue_site.wait_for("10 messages sent and 20 held", settled, timeout=60)
    # Held messages are checked again every second (QUOTA_HOLD_MAX): give them two more rounds.
    generations = {r["id"]: r["generation"] for r in queue_site.log(log_ids)}
    queue_site.wait_for(
        "the held messages to be checked again",
        lambda: all(
            r["generation"] >= generations[r["id"]] + 2 for r in queue_site.log(log_ids) if r["status"] != "sent"
        ),
        timeout=60,
    )
    at_server = _messages_at_the_server(gmail_sandbox)
    assert len(gmail_sandbox.messages) == 10
    assert set(at_server.values()) == {1}
    assert queue_site.quota_used() == 500
    rows = queue_site.log(log_ids)
    assert sorted(at_server) == sorted(r["message_id"] for r in rows if r["status"] == "sent")
    assert all(r["cause"] == "daily_quota" for r in rows if r["status"] != "sent")
    assert settled()


@needs_tasks_db
def test_a_worker_killed_holding_the_row_lock_leaves_no_slot_taken_and_nothing_sent_twice(
    queue_site: QueueSite, gmail_sandbox: Any
) -> None:
    """4 slots left, 4 messages: one worker is SIGKILLed inside reserve(), after locking the row.

    Its transaction dies with it (the slot it was taking is not counted), the other workers go
    on, and its message is sent by the backup: all 4 sent, each once, none held.
    """
    queue_site.driver("prefill", {"account": SANDBOX_USER, "count": 496})
    queue_site.freeze_in_reserve()
    for _ in range(3):
        queue_site.start_worker()
    answer = queue_site.driver("request", {"count": 4, "tag": "row-lock"})
    log_ids = [m["log_id"] for m in answer["messages"]]
    pid = queue_site.wait_for("a worker to stop holding the row lock", queue_site.frozen_pid, timeout=60)
    assert queue_site.is_ours(pid)
    time.sleep(0.5)  # the others queue up behind the lock meanwhile
    os.kill(pid, signal.SIGKILL)
    rows = queue_site.wait_for_status(log_ids, "sent", timeout=60)
    at_server = _messages_at_the_server(gmail_sandbox)
    assert sorted(at_server) == sorted(m["message_id"] for m in answer["messages"])
    assert set(at_server.values()) == {1}  # nothing sent twice
    assert all(r["cause"] == "" and r["last_reply"].startswith("250") for r in rows)  # nothing held
    assert [r["attempts"] for r in rows] == [1, 1, 1, 1]  # the killed attempt died before it counted
    assert queue_site.quota_used() == 500


def test_the_sync_backend_keeps_to_the_limit_when_asked(settings: Any, gmail_sandbox: Any, make_backend: Any) -> None:
    from django.core.mail import EmailMessage

    from django_gmail_smtp.sandbox.constants import SANDBOX_USER

    def mail(n: int) -> EmailMessage:
        return EmailMessage(subject=f"#{n}", body="x", from_email=SANDBOX_USER, to=["a@example.com"])

    settings.GMAIL_SMTP = {"QUOTA_SYNC": True, "QUOTA_LIMITS": {SANDBOX_USER: 2}}
    assert make_backend().send_messages([mail(1), mail(2)]) == 2
    with pytest.raises(quota.QuotaExceededError, match="has sent 2 of its 2 messages"):
        make_backend().send_messages([mail(3)])
    assert make_backend(fail_silently=True).send_messages([mail(3)]) == 0
    assert len(gmail_sandbox.messages) == 2
    # Gmail's own 550 5.4.5 (mail sent from elsewhere counts too) blocks the account for a window.
    settings.GMAIL_SMTP = {"QUOTA_SYNC": True, "QUOTA_LIMITS": {SANDBOX_USER: 100}}
    gmail_sandbox.inject("daily_quota")
    with pytest.raises(smtplib.SMTPSenderRefused):
        make_backend().send_messages([mail(4)])
    assert quota.usage(SANDBOX_USER, 100).blocked_until is not None
    with pytest.raises(quota.QuotaExceededError, match=r"550 5\.4\.5"):
        make_backend().send_messages([mail(5)])
    assert quota.usage(SANDBOX_USER, 100).used == 2


def test_the_sync_reservation_is_given_back_when_delivery_raises(
    settings: Any, gmail_sandbox: Any, gmail_oauth: Any
) -> None:
    """An error that is not a delivery failure (here a setting found only at sign-in: an OAuth2
    token endpoint over plain HTTP, gmail_smtp.E018) escapes send_messages(): the slots it
    reserved are released, not leaked."""
    from django.core.mail import EmailMessage

    from django_gmail_smtp.backend import EmailBackend
    from django_gmail_smtp.sandbox.constants import SANDBOX_USER

    options = gmail_sandbox.mailer_options() | gmail_oauth.mailer_options() | {"password": None}
    settings.GMAIL_SMTP = {
        **settings.GMAIL_SMTP,
        "OAUTH_TOKEN_URI": "http://tokens.example.com/token",  # refused before any request is made
        "QUOTA_SYNC": True,
        "QUOTA_LIMITS": {SANDBOX_USER: 10},
    }
    message = EmailMessage("Hi", "x", SANDBOX_USER, ["to@example.com"])
    with pytest.raises(GmailConfigError) as info:
        EmailBackend(**options).send_messages([message])
    assert info.value.check_id == "gmail_smtp.E018"
    assert quota.usage(SANDBOX_USER, 10).used == 0
    assert gmail_oauth.token_requests == 0
    assert gmail_sandbox.messages == []
