"""The queued backend: payloads, the task's decisions, and a real db_worker against the sandbox."""

from __future__ import annotations

import email
import email.policy
import json
import re
import secrets
import smtplib
from datetime import timedelta
from typing import Any

import django
import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.management import call_command
from django.utils import timezone
from django.utils.module_loading import import_string

from django_gmail_smtp import payload as payloads
from django_gmail_smtp import queued, quota
from django_gmail_smtp.exceptions import GmailConfigError
from django_gmail_smtp.sandbox.constants import SANDBOX_PASSWORD, SANDBOX_USER
from tests.queue_driver import BINARY, SJIS, rich_message
from tests.queue_support import HAVE_TASKS_DB, NO_TASKS_DB, QueueSite, needs_tasks_db

BOUNDARY = re.compile(rb"={15}\d+==")


def json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def normalized(data: bytes) -> bytes:
    return BOUNDARY.sub(b"BOUNDARY", data)


def leaves(data: bytes) -> list[tuple[str, str | None, str | None, bytes]]:
    """(content type, filename, charset, decoded bytes) of every leaf MIME part."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    return [
        (part.get_content_type(), part.get_filename(), part.get_content_charset(), part.get_payload(decode=True))
        for part in message.walk()
        if not part.is_multipart()
    ]


def wire(message: EmailMessage) -> bytes:
    """The bytes Django's SMTP backend would send (CRLF line ends)."""
    if django.VERSION >= (6, 0):
        return message.message(policy=email.policy.SMTP).as_bytes()  # type: ignore[call-arg]
    return message.message().as_bytes(linesep="\r\n")  # type: ignore[call-arg]


def headers(data: bytes, *names: str) -> list[str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return [str(message[name]) for name in names]


# -- payloads (pure) ------------------------------------------------------------------------------


def test_payload_round_trip_is_byte_for_byte() -> None:
    original = rich_message()
    payload = json_round_trip(payloads.to_payload(original))
    rebuilt = payloads.from_payload(payload)
    # Render the original with the Date and Message-ID the payload fixed: the bytes must be the same.
    original.extra_headers = dict(payload["headers"])
    assert type(rebuilt) is EmailMultiAlternatives
    assert normalized(rebuilt.message().as_bytes()) == normalized(original.message().as_bytes())
    assert leaves(rebuilt.message().as_bytes()) == leaves(original.message().as_bytes())
    found = {filename: content for _, filename, _, content in leaves(rebuilt.message().as_bytes())}
    assert found["image.png"] == BINARY
    assert found["請求書.csv"] == SJIS


def test_payload_is_json_and_fixes_the_identity_once() -> None:
    message = EmailMessage(subject="件名", body="本文", from_email=SANDBOX_USER, to=["a@example.com"], bcc=["b@x.org"])
    first = payloads.to_payload(message)
    assert json_round_trip(first) == first
    assert first["message_id"].startswith("<")
    assert first["message_id"].endswith("@test.localhost>")
    assert payloads.envelope(first) == (SANDBOX_USER, ["a@example.com", "b@x.org"])
    assert "Message-ID" not in message.extra_headers  # the caller's message is left alone
    assert payloads.to_payload(message)["message_id"] != first["message_id"]
    again = payloads.from_payload(first)
    assert again.bcc == ["b@x.org"]
    assert payloads.to_payload(again)["message_id"] == first["message_id"]  # a resend keeps it
    given = EmailMessage(to=["a@example.com"], headers={"message-id": "<given@example.com>"})
    assert payloads.to_payload(given)["message_id"] == "<given@example.com>"


def test_payload_keeps_plain_html_bodies_and_rfc822_attachments() -> None:
    inner = EmailMessage(subject="転送", body="元のメール", from_email="x@example.com", to=["y@example.com"])
    message = EmailMessage(subject="html", body="<b>太字</b>", to=["a@example.com"])
    message.content_subtype = "html"
    message.encoding = "iso-2022-jp"
    message.attach("forwarded.eml", inner, "message/rfc822")
    message.attach("notes.txt", b"bytes kept as bytes", "application/octet-stream")
    rebuilt = payloads.from_payload(json_round_trip(payloads.to_payload(message)))
    assert rebuilt.content_subtype == "html"
    assert rebuilt.encoding == "iso-2022-jp"
    parts = leaves(rebuilt.message().as_bytes())
    assert parts[0][0] == "text/html"
    assert parts[0][3].decode("iso-2022-jp").rstrip("\n") == "<b>太字</b>"
    assert ("application/octet-stream", "notes.txt", None, b"bytes kept as bytes") in parts
    forwarded = email.message_from_bytes(rebuilt.message().as_bytes(), policy=email.policy.default)
    attached = next(p for p in forwarded.walk() if p.get_content_type() == "message/rfc822")
    assert str(attached.get_payload(0)["Subject"]) == "転送"


def test_payload_refuses_what_it_cannot_read() -> None:
    with pytest.raises(payloads.PayloadError, match="version"):
        payloads.from_payload({"version": 99})
    with pytest.raises(ValueError, match="Bcc"):
        payloads.to_payload(EmailMessage(to=["a@example.com"], headers={"Bcc": "x@example.com"}))


@pytest.mark.parametrize(
    ("exc", "kind", "cause"),
    [
        (
            smtplib.SMTPSenderRefused(421, b"4.7.0 Try again later, closing connection.", "a@b"),
            "temporary",
            "throttled",
        ),
        (smtplib.SMTPSenderRefused(550, b"5.4.5 Daily user sending limit exceeded.", "a@b"), "quota", "daily_quota"),
        (smtplib.SMTPRecipientsRefused({"x@y": (553, b"5.1.3 not a valid RFC-5321 address.")}), "permanent", ""),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), "temporary", ""),
        (ConnectionRefusedError(111, "Connection refused"), "temporary", ""),
        (smtplib.SMTPDataError(552, b"5.2.3 Your message exceeded Google's message size limits."), "permanent", ""),
    ],
)
def test_failures_are_classified_by_the_reply(exc: BaseException, kind: str, cause: str) -> None:
    found_kind, reply, found_cause = queued.classify(exc)
    assert found_kind == kind
    if cause:
        assert found_cause == cause
    if isinstance(exc, smtplib.SMTPResponseException):
        assert reply.startswith(str(exc.smtp_code))


# -- the backend and the task in this process (Tasks backend: the framework's DummyBackend) ------


def dummy_tasks(**extra: Any) -> dict[str, Any]:
    from django_gmail_smtp.tasks_compat import SOURCE

    path = (
        "django.tasks.backends.dummy.DummyBackend"
        if SOURCE == "django.tasks"
        else "django_tasks.backends.dummy.DummyBackend"
    )
    return {"default": {"BACKEND": path, "QUEUES": ["default", "mail"], **extra}}


@pytest.fixture
def sandbox_mail(gmail_sandbox: Any, settings: Any) -> Any:
    """Settings that send through the queued backend to the sandbox (MAILERS on 6.1, EMAIL_* before)."""
    options = gmail_sandbox.mailer_options("starttls")
    settings.TASKS = dummy_tasks()
    settings.GMAIL_SMTP = {"RETRY_ATTEMPTS": 1, "QUOTA_LIMITS": {SANDBOX_USER: 500}}
    if django.VERSION >= (6, 1):
        settings.MAILERS = {"default": {"BACKEND": "django_gmail_smtp.queued.QueuedEmailBackend", "OPTIONS": options}}
    else:
        settings.EMAIL_HOST, settings.EMAIL_PORT = options["host"], options["port"]
        settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = options["username"], options["password"]
        settings.EMAIL_USE_TLS = True
        settings.GMAIL_SMTP["SSL_CAFILE"] = options["ssl_cafile"]
    return gmail_sandbox


def queued_backend(**options: Any) -> queued.QueuedEmailBackend:
    if django.VERSION >= (6, 1):
        from django.core.mail import mailers  # type: ignore[attr-defined]

        backend = mailers["default"]
        assert isinstance(backend, queued.QueuedEmailBackend)
        return backend
    return queued.QueuedEmailBackend(**options)


def enqueued() -> list[Any]:
    from django_gmail_smtp.tasks_compat import task_backends

    return list(task_backends["default"].results)


def run_enqueued(results: list[Any]) -> list[str]:
    """What a worker would do with these tasks, in order (the DummyBackend runs nothing itself)."""
    return [r.task.call(*r.args, **r.kwargs) for r in results]


needs_tasks = pytest.mark.skipif(not HAVE_TASKS_DB, reason=NO_TASKS_DB)


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_each_message_is_queued_as_a_sender_and_a_backup_without_secrets(sandbox_mail: Any) -> None:
    from django_gmail_smtp.models import DeliveryLog

    messages = [
        EmailMessage(subject=f"#{n}", body="x", from_email=SANDBOX_USER, to=[f"to{n}@example.com"]) for n in range(2)
    ]
    messages.append(EmailMessage(subject="nobody", body="x", from_email=SANDBOX_USER))
    assert queued_backend().send_messages(messages) == 2
    assert not hasattr(messages[2], "gmail_smtp_queued")
    results = enqueued()
    assert [(r.kwargs["backup"], r.kwargs["generation"]) for r in results] == [(False, 1), (True, 1)] * 2
    sender, backup = results[0], results[1]
    assert sender.task.name == queued.TASK_NAME
    # The path workers import it by, which tasks enqueued by earlier versions name too.
    assert sender.task.module_path == "django_gmail_smtp.queued.deliver_queued_message"
    assert import_string(sender.task.module_path).func is sender.task.func
    assert sender.task.run_after is None
    assert sender.task.queue_name == "default"
    assert backup.task.run_after - timezone.now() == pytest.approx(timedelta(seconds=301), abs=timedelta(seconds=5))
    assert [r.kwargs for r in results[:2]] == [
        {"log_id": messages[0].gmail_smtp_queued.log_id, "generation": 1, "backup": backup} for backup in (False, True)
    ]  # the entry's id, never the message (nor a secret)
    assert results[0].args == []
    entry = DeliveryLog.objects.get(pk=messages[0].gmail_smtp_queued.log_id)
    assert (entry.status, entry.account, entry.recipients, entry.message_id) == (
        "queued",
        SANDBOX_USER,
        1,
        messages[0].gmail_smtp_queued.message_id,
    )
    assert SANDBOX_PASSWORD not in json.dumps(entry.payload)
    # A worker runs them: the senders send, the backups find nothing to do.
    assert run_enqueued(results) == ["sent", "sent", "sent", "sent"]
    received = sandbox_mail.wait_for_messages(2)
    assert [m.message["Message-ID"] for m in received] == [m.gmail_smtp_queued.message_id for m in messages[:2]]
    entry.refresh_from_db()
    assert (entry.status, entry.attempts, entry.payload) == ("sent", 1, None)
    assert entry.last_reply.startswith("250 2.0.0 OK")


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_a_task_enqueued_with_the_message_by_an_earlier_version_is_still_delivered(sandbox_mail: Any) -> None:
    from django_gmail_smtp.models import DeliveryLog

    message = EmailMessage(subject="from before the upgrade", body="x", from_email=SANDBOX_USER, to=["a@example.com"])
    queued_backend().send_messages([message])
    entry = DeliveryLog.objects.get()
    # What earlier versions enqueued: the sender task carried the message too.
    queued.SCHEDULER.task("default", "default").enqueue(
        payload=entry.payload, log_id=entry.pk, generation=1, backup=False
    )
    old_style = enqueued()[-1]
    assert "payload" in old_style.kwargs
    assert run_enqueued([old_style]) == ["sent"]
    assert sandbox_mail.wait_for_messages(1)[0].message["Subject"] == "from before the upgrade"
    assert run_enqueued(enqueued()[:-1]) == ["sent", "sent"]  # this version's pair: nothing left to do
    assert len(sandbox_mail.messages) == 1


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_configuration_mistakes_are_refused_when_queuing(sandbox_mail: Any, settings: Any) -> None:
    with pytest.raises(GmailConfigError, match="secrets are never put in the queue"):
        queued.QueuedEmailBackend(password="from-an-argument")
    settings.TASKS = {
        "default": {"BACKEND": dummy_tasks()["default"]["BACKEND"].replace("dummy.Dummy", "immediate.Immediate")}
    }
    with pytest.raises(GmailConfigError, match="cannot run a task later"):
        queued.QueuedEmailBackend()
    settings.TASKS = dummy_tasks()
    with pytest.raises(GmailConfigError, match="not one of the QUEUES"):
        queued.QueuedEmailBackend(queue_name="elsewhere")
    with pytest.raises(GmailConfigError, match="not usable"):
        queued.QueuedEmailBackend(task_backend="missing")


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_a_refusal_is_recorded_with_the_reply_and_can_be_retried_from_the_admin(
    sandbox_mail: Any, admin_client: Any
) -> None:
    from django_gmail_smtp.models import DeliveryLog

    message = EmailMessage(subject="bad", body="x", from_email=SANDBOX_USER, to=["nobody@example.com"])
    queued_backend().send_messages([message])
    sandbox_mail.inject("bad_recipient")
    results = enqueued()
    assert run_enqueued(results[:1]) == ["failed"]
    entry = DeliveryLog.objects.get()
    assert entry.status == "failed"
    assert entry.last_reply.startswith("553")
    assert entry.payload is not None  # kept for the retry
    page = admin_client.get("/admin/gmail_smtp/deliverylog/")
    assert page.status_code == 200
    assert b"553" in page.content
    response = admin_client.post(
        "/admin/gmail_smtp/deliverylog/", {"action": "retry_selected", "_selected_action": [entry.pk]}, follow=True
    )
    assert b"1 message was queued again." in response.content
    entry.refresh_from_db()
    assert (entry.status, entry.generation, entry.attempts) == ("queued", 2, 0)
    assert run_enqueued(enqueued()[len(results) :]) == ["sent", "sent"]
    assert sandbox_mail.wait_for_messages(1)[0].message["Message-ID"] == entry.message_id
    # Read-only: no add or change, even for a superuser.
    assert admin_client.get(f"/admin/gmail_smtp/deliverylog/{entry.pk}/change/").status_code == 200
    assert admin_client.get("/admin/gmail_smtp/deliverylog/add/").status_code == 403


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_a_message_of_unknown_outcome_is_retried_and_its_slot_kept(sandbox_mail: Any) -> None:
    """The connection dies after the message went out and before the reply: the log says the
    outcome is unknown, the task sends it again later (the duplicate the README documents), and
    its daily-limit slot stays counted (Gmail may have counted it)."""
    from django_gmail_smtp.models import DeliveryLog

    first, second = (
        EmailMessage(subject=f"#{n}", body="x", from_email=SANDBOX_USER, to=[f"to{n}@example.com"]) for n in (1, 2)
    )
    queued_backend().send_messages([first, second])
    sandbox_mail.inject("disconnect_after", messages=1)  # hangs up at the command after the first 250
    first_sender, _first_backup, second_sender, _second_backup = enqueued()
    assert run_enqueued([first_sender]) == ["sent"]
    assert run_enqueued([second_sender]) == ["retrying"]  # on the pooled connection: written, no reply
    entry = DeliveryLog.objects.get(message_id=second.gmail_smtp_queued.message_id)
    assert entry.status == "queued"
    assert entry.last_reply.startswith("Outcome unknown: the connection broke after the message went out")
    assert entry.cause == "disconnected"
    assert quota.usage(SANDBOX_USER, 500).used == 2
    retry_sender = next(r for r in enqueued() if r.kwargs["generation"] == 2 and not r.kwargs["backup"])
    DeliveryLog.objects.filter(pk=entry.pk).update(due_at=quota.now())  # its backoff has passed
    assert run_enqueued([retry_sender]) == ["sent"]
    assert [m.message["Subject"] for m in sandbox_mail.wait_for_messages(2)] == ["#1", "#2"]


class FakeClock:
    """The queue's time, moved by the test (passed in a ``queued.Timing``, nothing patched)."""

    def __init__(self) -> None:
        self.now = timezone.now().replace(microsecond=0)

    def __call__(self) -> Any:
        return self.now


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_a_temporary_failure_is_retried_after_the_backoff_of_the_timing_passed_in(
    sandbox_mail: Any, settings: Any
) -> None:
    from django_gmail_smtp.models import DeliveryLog

    settings.GMAIL_SMTP |= {"QUEUE_RETRY_BACKOFF": 60, "QUEUE_RETRY_BACKOFF_MAX": 3600}
    clock = FakeClock()
    timing = queued.Timing(clock=clock, random=lambda: 0.5)  # equal jitter: 30 s + 0.5 * 30 s
    message = EmailMessage(subject="throttled", body="x", from_email=SANDBOX_USER, to=["a@example.com"])
    backend = queued_backend()
    backend.scheduler = backend.scheduler.with_timing(timing)  # queued on the same clock
    try:
        backend.send_messages([message])
    finally:
        del backend.scheduler  # back to the class's (6.1's mailers may hand this instance out again)
    log_id = message.gmail_smtp_queued.log_id
    assert DeliveryLog.objects.get(pk=log_id).due_at == clock.now
    sandbox_mail.inject("throttled")  # 421 to the next message
    assert queued.deliver(None, log_id=log_id, generation=1, timing=timing) == "retrying"
    entry = DeliveryLog.objects.get(pk=log_id)
    assert (entry.status, entry.generation, entry.attempts) == ("queued", 2, 1)
    assert entry.due_at == clock.now + timedelta(seconds=45)
    assert entry.last_reply.startswith("421")
    clock.now += timedelta(seconds=44)
    assert queued.deliver(None, log_id=log_id, generation=2, timing=timing) == "not due"
    clock.now += timedelta(seconds=1)
    assert queued.deliver(None, log_id=log_id, generation=2, timing=timing) == "sent"
    entry.refresh_from_db()
    assert (entry.status, entry.attempts) == ("sent", 2)
    assert [m.message["Subject"] for m in sandbox_mail.wait_for_messages(1)] == ["throttled"]


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_the_backup_sends_when_the_attempt_died_and_old_generations_do_nothing(sandbox_mail: Any) -> None:
    from django_gmail_smtp.models import DeliveryLog

    message = EmailMessage(subject="orphan", body="x", from_email=SANDBOX_USER, to=["a@example.com"])
    queued_backend().send_messages([message])
    sender, backup = enqueued()
    # The sender's worker claimed it, then died: the entry stays "sending" with a lease.
    DeliveryLog.objects.update(status="sending", due_at=timezone.now() + timedelta(seconds=300))
    assert run_enqueued([backup]) == ["watching"]  # the lease still runs: look again later
    watcher = enqueued()[-1]
    assert watcher.kwargs["backup"]
    assert watcher.task.run_after > timezone.now() + timedelta(seconds=290)
    DeliveryLog.objects.update(due_at=timezone.now() - timedelta(seconds=1))  # the lease ran out
    assert run_enqueued([watcher]) == ["sent"]
    assert enqueued()[-1].kwargs["backup"]  # it armed a backup of its own before sending
    assert run_enqueued([sender]) == ["sent"]  # the original sender, if it ever runs: nothing to do
    assert len(sandbox_mail.wait_for_messages(1)) == 1


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_purge_and_queue_status_commands(sandbox_mail: Any, capsys: Any) -> None:
    from django_gmail_smtp.models import DeliveryLog

    backend = queued_backend()
    backend.send_messages([EmailMessage(subject=f"#{n}", body="x", to=["a@example.com"]) for n in range(3)])
    run_enqueued(enqueued()[:2])  # one sent, two waiting
    call_command("gmail_queue_status", "--json")
    report = json.loads(capsys.readouterr().out)
    [account] = report["accounts"]
    assert account["account"] == SANDBOX_USER
    assert (account["queued"], account["failed"], account["stuck"]) == (2, 0, 0)
    assert account["quota"] | {"next_free": None} == {
        "used": 1,
        "limit": 500,
        "remaining": 499,
        "window_hours": 24.0,
        "next_free": None,
        "blocked_until": None,
    }
    call_command("gmail_queue_status")
    table = capsys.readouterr().out
    assert SANDBOX_USER in table
    assert "1/500" in table
    DeliveryLog.objects.filter(status="sent").update(updated_at=timezone.now() - timedelta(days=31))
    call_command("gmail_purge_log", "--older-than", "30", "--dry-run")
    assert "1 delivery log entries would be deleted" in capsys.readouterr().out
    call_command("gmail_purge_log", "--older-than", "30")
    assert "Deleted 1 delivery log entries." in capsys.readouterr().out
    assert DeliveryLog.objects.count() == 2  # unsent entries are never purged


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_a_stored_account_is_named_in_the_payload_and_resolved_by_the_worker(gmail_sandbox: Any, settings: Any) -> None:
    from django.core.cache import cache

    from django_gmail_smtp.models import DeliveryLog, GmailAccount

    cache.clear()
    settings.TASKS = dummy_tasks()
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file, "RETRY_ATTEMPTS": 1}
    account = GmailAccount(
        name="shop", username=SANDBOX_USER, host=gmail_sandbox.host, port=gmail_sandbox.starttls_port, timeout=5
    )
    account.set_password(SANDBOX_PASSWORD)
    account.save()
    message = EmailMessage(subject="stored", body="x", from_email=SANDBOX_USER, to=["a@example.com"])
    assert queued.QueuedEmailBackend(account="shop").send_messages([message]) == 1
    entry = DeliveryLog.objects.get()
    assert entry.payload["mailer"] == {"alias": None, "options": {"account": "shop"}}
    assert SANDBOX_PASSWORD not in json.dumps(entry.payload)
    assert run_enqueued(enqueued()[:1]) == ["sent"]
    assert gmail_sandbox.wait_for_messages(1)[0].auth_user == SANDBOX_USER
    cache.clear()


# -- a real worker process ------------------------------------------------------------------------


def ids(answer: dict[str, Any]) -> list[int]:
    return [m["log_id"] for m in answer["messages"]]


def received_ids(sandbox: Any) -> list[str]:
    return [m.message["Message-ID"] for m in sandbox.messages]


@needs_tasks_db
def test_messages_queued_in_a_request_are_delivered_by_the_worker(queue_site: QueueSite, gmail_sandbox: Any) -> None:
    answer = queue_site.driver("request", {"count": 3, "tag": "request"})
    assert answer["queued"] == 3
    assert gmail_sandbox.messages == []  # the request did not wait for Gmail
    queue_site.start_worker()
    rows = queue_site.wait_for_status(ids(answer), "sent")
    assert sorted(received_ids(gmail_sandbox)) == sorted(m["message_id"] for m in answer["messages"])
    assert [(r["attempts"], r["payload"]) for r in rows] == [(1, None)] * 3
    assert all(r["last_reply"].startswith("250 2.0.0 OK") for r in rows)
    finished = queue_site.finished_tasks()
    assert list(finished) == ["mail"]
    assert finished["mail"] >= 3
    report = json.loads(queue_site.manage("gmail_queue_status", "--json"))
    assert report["totals"] == dict.fromkeys(report["totals"], 0)
    assert report["accounts"][0]["quota"]["used"] == 3
    # What the queue's tasks hold (RQ: in Redis; django-tasks-db: its table) never includes the password.
    tasks = (
        queue_site.broker_dump()
        + json.dumps(queue_site.query("SELECT * FROM gmail_smtp_deliverylog"), default=str).encode()
    )
    if queue_site.tasks == "db":
        tasks += json.dumps(queue_site.query("SELECT * FROM django_tasks_database_dbtaskresult"), default=str).encode()
    assert b"mail" in tasks
    assert SANDBOX_PASSWORD.encode() not in tasks


@needs_tasks_db
def test_the_tasks_table_never_holds_the_message(queue_site: QueueSite, gmail_sandbox: Any) -> None:
    """The Tasks backend keeps every task's arguments (django-tasks-db's table, RQ's Redis): a
    password-reset link must not stay there."""
    marker = f"reset-link-{secrets.token_hex(8)}"
    gmail_sandbox.inject("throttled")  # one retry: a re-scheduled generation of tasks too
    answer = queue_site.driver("request", {"count": 2, "tag": marker})

    def tasks() -> list[dict[str, Any]]:
        return queue_site.query("SELECT * FROM django_tasks_database_dbtaskresult")

    def stored() -> bytes:
        return queue_site.broker_dump() + json.dumps(tasks(), default=str).encode()

    if queue_site.tasks == "db":
        assert len(tasks()) == 4  # a sender and a backup per message
    else:
        assert stored().count(b"deliver_queued_message") >= 4
    assert marker.encode() not in stored()
    queue_site.start_worker()
    rows = queue_site.wait_for_status(ids(answer), "sent")
    assert all(marker in m.data.decode() for m in gmail_sandbox.messages)  # the body did travel
    assert max(r["generation"] for r in rows) == 2
    if queue_site.tasks == "db":
        assert len(tasks()) > 4
    assert marker.encode() not in stored()
    # The log forgot the message once sent: only its subject stays, on purpose (LOG_SUBJECTS, #14).
    assert [row for row in rows if marker in json.dumps(row | {"subject": ""}, default=str)] == []
    assert all(row["subject"].startswith(marker) for row in rows)


@needs_tasks_db
def test_a_421_is_retried_by_the_task_and_then_delivered(queue_site: QueueSite, gmail_sandbox: Any) -> None:
    gmail_sandbox.inject("throttled")
    answer = queue_site.driver("request", {"count": 1, "tag": "throttled"})
    queue_site.start_worker()
    [row] = queue_site.wait_for_status(ids(answer), "sent")
    assert row["attempts"] == 2
    assert row["generation"] == 2  # re-scheduled once
    assert received_ids(gmail_sandbox) == [answer["messages"][0]["message_id"]]


@needs_tasks_db
def test_a_worker_killed_mid_send_loses_nothing(queue_site: QueueSite, gmail_sandbox: Any) -> None:
    answer = queue_site.driver("request", {"count": 2, "tag": "killed"})
    first_id = answer["messages"][0]["message_id"]
    killed: list[int] = []

    def kill_before_replying(message: Any) -> None:
        # The sandbox keeps the message, then the sending process (db_worker, or RQ's work horse)
        # dies before it reads the 250: the worst moment.
        if gmail_sandbox.on_message is kill_before_replying:
            gmail_sandbox.on_message = None
            killed.extend(queue_site.kill_sender(gmail_sandbox.starttls_port))

    gmail_sandbox.on_message = kill_before_replying
    queue_site.start_worker()
    try:
        queue_site.wait_for("the sender to be killed", lambda: killed)
    finally:
        gmail_sandbox.on_message = None
    assert received_ids(gmail_sandbox) == [first_id]
    first = queue_site.log(ids(answer))[0]
    assert first["status"] == "sending"  # the dead worker never recorded the 250
    queue_site.start_worker()  # restart: the backup takes over once the lease (3 s) has run out
    rows = queue_site.wait_for_status(ids(answer), "sent")
    counts = {mid: received_ids(gmail_sandbox).count(mid) for mid in (m["message_id"] for m in answer["messages"])}
    # At least once, as documented: the killed send arrives twice with the same Message-ID, the other once.
    assert counts == {first_id: 2, answer["messages"][1]["message_id"]: 1}
    assert rows[0]["attempts"] == 2
    assert rows[1]["attempts"] == 1


@needs_tasks_db
def test_the_501st_message_is_held_until_the_window_moves(queue_site: QueueSite, gmail_sandbox: Any) -> None:
    queue_site.driver("prefill", {"account": SANDBOX_USER, "count": 500})  # 500 sent "just now"
    answer = queue_site.driver("request", {"count": 1, "tag": "over-quota"})
    queue_site.start_worker()
    [row] = queue_site.wait_for_status(ids(answer), "held")
    assert row["cause"] == "daily_quota"
    assert "500 of its 500" in row["last_reply"]
    assert gmail_sandbox.messages == []
    queue_site.wait_for(
        "the held message to be checked again", lambda: queue_site.log(ids(answer))[0]["generation"] >= 3
    )
    assert gmail_sandbox.messages == []  # still held: the window has not moved
    queue_site.set_clock(24 * 3600 + 1)  # a day later, the 500 leave the window
    queue_site.wait_for_status(ids(answer), "sent")
    assert received_ids(gmail_sandbox) == [answer["messages"][0]["message_id"]]


@needs_tasks_db
def test_queue_status_and_the_admin_tell_the_same_on_every_site(queue_site: QueueSite, gmail_sandbox: Any) -> None:
    gmail_sandbox.inject("bad_recipient")
    first = queue_site.driver("request", {"count": 3, "tag": "status"})
    worker = queue_site.start_worker()
    queue_site.wait_for(
        "one failed and two sent",
        lambda: sorted(r["status"] for r in queue_site.log(ids(first))) == ["failed", "sent", "sent"],
    )
    queue_site.kill(worker)
    late = queue_site.driver("request", {"count": 1, "tag": "no worker"})  # waits: no worker is running
    report = json.loads(queue_site.manage("gmail_queue_status", "--json"))
    [account] = report["accounts"]
    assert (account["account"], account["queued"], account["failed"], account["stuck"]) == (SANDBOX_USER, 1, 1, 0)
    assert (account["quota"]["used"], account["quota"]["limit"]) == (2, 500)
    queue_site.set_clock(600)  # ten minutes later, nobody has looked at it: stuck
    report = json.loads(queue_site.manage("gmail_queue_status", "--json"))
    assert (report["totals"]["queued"], report["totals"]["stuck"]) == (1, 1)
    assert "stuck" in queue_site.manage("gmail_queue_status")

    changelist = "/admin/gmail_smtp/deliverylog/"
    page = queue_site.driver("admin", {"path": changelist + "?status__exact=failed"})
    assert page["status"] == 200
    [failed] = [r for r in queue_site.log(ids(first)) if r["status"] == "failed"]
    assert failed["last_reply"].startswith("553")
    assert "553" in page["page"]
    assert failed["subject"] in page["page"]
    assert all(r["subject"] not in page["page"] for r in queue_site.log(ids(first)) if r["status"] == "sent")
    everything = queue_site.driver("admin", {"path": changelist})["page"]
    assert all(r["subject"] in everything for r in queue_site.log(ids(first) + ids(late)))
    retried = queue_site.driver(
        "admin",
        {"path": changelist, "data": {"action": "retry_selected", "_selected_action": [failed["id"], *ids(late)]}},
    )
    assert "2 messages were queued again." in retried["page"]
    queue_site.start_worker()
    queue_site.wait_for_status(ids(first) + ids(late), "sent")
    report = json.loads(queue_site.manage("gmail_queue_status", "--json"))
    assert report["totals"] == dict.fromkeys(report["totals"], 0)
    assert report["accounts"][0]["quota"]["used"] == 4
    assert sorted(received_ids(gmail_sandbox)) == sorted(m["message_id"] for m in first["messages"] + late["messages"])


@needs_tasks_db
def test_queuing_inside_the_request_transaction_costs_at_most_three_queries(queue_site: QueueSite) -> None:
    """django-tasks-db: the log entry and its two tasks, no savepoint; RQ: the log entry (tasks at commit)."""
    answer = queue_site.driver("enqueue_queries")
    assert answer["queued"] == 1
    statements = [sql.split()[0] for sql in answer["sql"]]
    assert statements == (["INSERT"] * 3 if queue_site.tasks == "db" else ["INSERT"])
    # fail_silently keeps a savepoint: a failed enqueue must not spoil the request's transaction.
    silent = queue_site.driver("enqueue_queries", {"fail_silently": True})
    if queue_site.tasks == "db":
        assert [sql.split()[0] for sql in silent["sql"]] == ["SAVEPOINT", "INSERT", "INSERT", "INSERT", "RELEASE"]


@needs_tasks_db
def test_japanese_text_and_attachments_survive_the_queue(queue_site: QueueSite, gmail_sandbox: Any) -> None:
    answer = queue_site.driver("request", {"kind": "rich"})
    queue_site.start_worker()
    queue_site.wait_for_status(ids(answer), "sent")
    [received] = gmail_sandbox.wait_for_messages(1)
    expected = wire(rich_message())
    assert leaves(received.data) == leaves(expected)
    names = ("Subject", "From", "To", "Cc", "Reply-To", "X-Order")
    assert headers(received.data, *names) == headers(expected, *names)
    assert received.message["Message-ID"] == answer["messages"][0]["message_id"]
    assert sorted(received.rcpt_tos) == ["keiri@example.jp", "taro@example.jp"]
