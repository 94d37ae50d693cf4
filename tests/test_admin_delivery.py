"""The delivery log as operators read it: recipients and subject (privacy switches), the list, the detail, the chart."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.utils import timezone, translation

from django_gmail_smtp import queue_report
from django_gmail_smtp.admin_delivery import _nice_ceiling, cause_of, chart
from django_gmail_smtp.admin_display import reply_summary
from django_gmail_smtp.causes import CATALOGUE
from django_gmail_smtp.models import DeliveryLog, GmailAccount
from django_gmail_smtp.queued import QueuedEmailBackend
from django_gmail_smtp.sandbox.constants import SANDBOX_PASSWORD, SANDBOX_USER
from tests.queue_support import HAVE_TASKS_DB, NO_TASKS_DB
from tests.test_queue import dummy_tasks, enqueued, queued_backend, run_enqueued, sandbox_mail

__all__ = ["sandbox_mail"]  # a fixture used below

LOG = "/admin/gmail_smtp/deliverylog/"
needs_tasks = pytest.mark.skipif(not HAVE_TASKS_DB, reason=NO_TASKS_DB)


def entry(**fields: Any) -> DeliveryLog:
    values: dict[str, Any] = {"message_id": "<m@example.com>", "account": SANDBOX_USER, "due_at": timezone.now()}
    return DeliveryLog.objects.create(**(values | fields))


def shipped() -> EmailMessage:
    return EmailMessage(
        subject="Your  order\t#1041 has shipped",
        body="the body is never logged",
        from_email=SANDBOX_USER,
        to=["bob@example.com"],
        cc=["carol@example.com"],
        bcc=["audit@example.com"],
    )


# -- what is recorded -----------------------------------------------------------------------------


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_recipients_and_subject_are_recorded_never_the_body(sandbox_mail: Any) -> None:
    message = shipped()
    queued_backend().send_messages([message])
    log = DeliveryLog.objects.get()
    assert log.to.split() == ["bob@example.com", "carol@example.com", "audit@example.com"]
    assert log.subject == "Your order #1041 has shipped"
    assert run_enqueued(enqueued()[:1]) == ["sent"]
    log.refresh_from_db()
    assert log.payload is None
    assert all("the body is never logged" not in str(value) for value in vars(log).values())


@needs_tasks
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("key", "field", "kept"), [("LOG_RECIPIENTS", "to", "subject"), ("LOG_SUBJECTS", "subject", "to")]
)
def test_privacy_switches_leave_recipients_or_subjects_out(
    sandbox_mail: Any, settings: Any, key: str, field: str, kept: str
) -> None:
    settings.GMAIL_SMTP[key] = False
    queued_backend().send_messages([shipped()])
    log = DeliveryLog.objects.get()
    assert getattr(log, field) == ""
    assert getattr(log, kept) != ""
    assert log.recipients == 3  # the count stays


@needs_tasks
@pytest.mark.django_db(transaction=True)
def test_the_stored_account_is_recorded_by_its_name(gmail_sandbox: Any, settings: Any) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.TASKS = dummy_tasks()
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    account = GmailAccount(
        name="shop", username=SANDBOX_USER, host=gmail_sandbox.host, port=gmail_sandbox.starttls_port, is_default=True
    )
    account.set_password(SANDBOX_PASSWORD)
    account.save()
    QueuedEmailBackend(account="default").send_messages([shipped()])  # "default" means the account marked so
    log = DeliveryLog.objects.get()
    assert (log.account_name, log.account) == ("shop", SANDBOX_USER)
    cache.clear()


@pytest.mark.django_db
def test_purge_can_erase_recipients_and_subjects_and_keep_the_entries(capsys: Any) -> None:
    old = entry(status="sent", to="bob@example.com", subject="Invoice", sent_at=timezone.now())
    recent = entry(status="failed", to="eve@example.com", subject="Hello")
    waiting = entry(status="queued", to="zoe@example.com", subject="Later")
    DeliveryLog.objects.filter(pk__in=[old.pk, waiting.pk]).update(updated_at=timezone.now() - timedelta(days=40))
    call_command("gmail_purge_log", "--older-than", "30", "--redact", "--dry-run")
    assert "1 delivery log entries would lose their recipients and subject" in capsys.readouterr().out
    assert DeliveryLog.objects.get(pk=old.pk).to == "bob@example.com"
    call_command("gmail_purge_log", "--older-than", "30", "--redact")
    assert "Erased the recipients and subject of 1 delivery log entries." in capsys.readouterr().out
    old.refresh_from_db()
    assert (old.to, old.subject, old.status) == ("", "", "sent")  # kept, for the counts and the chart
    assert DeliveryLog.objects.get(pk=recent.pk).to == "eve@example.com"  # too recent
    assert DeliveryLog.objects.get(pk=waiting.pk).to == "zoe@example.com"  # still on its way
    call_command("gmail_purge_log", "--older-than", "30")
    assert not DeliveryLog.objects.filter(pk=old.pk).exists()


# -- the list and the detail ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_list_is_searchable_by_recipient_and_subject_and_says_stuck_only_when_true(admin_client: Any) -> None:
    entry(status="sent", to="bob@example.com\ncarol@example.com", subject="Invoice 7", sent_at=timezone.now())
    entry(status="failed", to="eve@example.com", subject="Welcome", last_reply="553 5.1.3 bad")
    entry(status="queued", to="zoe@example.com", subject="Late", due_at=timezone.now() - timedelta(hours=2))
    page = admin_client.get(LOG).content.decode()
    assert page.count("badge-stuck") == 1  # only the queued one, two hours overdue
    assert "Due" not in page
    assert "Message-ID" not in page.split('id="result_list"')[1].split("</thead>")[0]
    for query, found in (("carol@example.com", "Invoice 7"), ("welcome", "eve@"), ("zoe", "Late")):
        results = admin_client.get(LOG, {"q": query}).content.decode().split('id="result_list"')[1]
        assert found in results
        assert results.count("<tr") == 2  # the header and one message


@pytest.mark.django_db
def test_an_empty_log_explains_which_backend_fills_it(admin_client: Any) -> None:
    page = admin_client.get(LOG).content.decode()
    assert "QueuedEmailBackend" in page
    assert "README.md#background-sending" in page
    assert "0 delivery log" not in page


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["en", "ja"])
def test_the_detail_explains_the_cause_and_shows_no_next_attempt_once_sent(
    admin_client: Any, settings: Any, language: str
) -> None:
    settings.LANGUAGE_CODE = language
    failed = entry(
        status="failed",
        to="eve@example.com",
        account_name="shop",
        last_reply="535-5.7.8 Username and Password not accepted.\n535 5.7.8 ?p=BadCredentials",
        cause="bad_credentials",
    )
    sent = entry(status="sent", sent_at=timezone.now(), last_reply="250 2.0.0 OK 1796 x - gsmtp")
    page = admin_client.get(f"{LOG}{failed.pk}/change/").content.decode()
    with translation.override(language):
        assert str(CATALOGUE["bad_credentials"].summary) in page
        assert str(CATALOGUE["bad_credentials"].fix) in page
    assert "field-next_attempt" not in page  # failed for good: nothing is due
    assert "shop" in page
    page = admin_client.get(f"{LOG}{sent.pk}/change/").content.decode()
    assert "field-next_attempt" not in page
    assert "field-cause_detail" not in page
    assert "field-sent_at_detail" in page


def test_cause_comes_from_the_id_or_else_from_the_reply() -> None:
    assert cause_of(DeliveryLog(status="failed", cause="bad_credentials")) is CATALOGUE["bad_credentials"]
    assert cause_of(DeliveryLog(status="failed", last_reply="553 5.1.3 not valid")) is CATALOGUE["bad_recipient"]
    assert cause_of(DeliveryLog(status="failed", cause="config", last_reply="x")) is CATALOGUE["config"]
    assert cause_of(DeliveryLog(status="sent", last_reply="250 2.0.0 OK")) is None


def test_replies_are_summarised_without_gmails_ids() -> None:
    assert reply_summary("250 2.0.0 OK  1796025406 6a67a43029265-673f25a6002sm1879104g.85 - gsmtp") == "250 2.0.0 OK"
    assert (
        reply_summary("553 5.1.3 The recipient address <x@example.com> is not valid")
        == "553 5.1.3 The recipient addre…"
    )
    assert reply_summary("") == ""


# -- the picture ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_activity_counts_sent_failed_and_held_per_hour(settings: Any) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"
    now = timezone.now().replace(minute=30)
    for hours_ago, status in ((0, "sent"), (0, "sent"), (2, "sent"), (2, "failed"), (30, "sent")):
        log = entry(status=status, sent_at=now - timedelta(hours=hours_ago) if status == "sent" else None)
        DeliveryLog.objects.filter(pk=log.pk).update(updated_at=now - timedelta(hours=hours_ago))
    entry(status="held")
    found = queue_report.activity(now=now)
    assert len(found.hours) == 24
    assert (found.sent, found.failed, found.held) == (3, 1, 1)  # the sent one 30 hours ago is out
    assert (found.hours[-1].sent, found.hours[-3].sent, found.hours[-3].failed) == (2, 1, 1)
    assert found.hours[-1].start.hour == timezone.localtime(now).hour
    drawn = chart(found)
    last = drawn["bars"][-1]
    assert last.sent[1] > 0
    assert last.failed[1] == 0
    assert "3 sent, 1 failed, 1 held" in drawn["summary"]


def test_the_chart_top_is_a_round_number() -> None:
    assert [_nice_ceiling(n) for n in (1, 3, 7, 10, 11, 499, 501)] == [1, 5, 10, 10, 20, 500, 1000]
