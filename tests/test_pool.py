"""Reuse of signed-in connections across send_mail() calls (issue #6)."""

from __future__ import annotations

import os
import smtplib
import threading
import time
import warnings
from typing import Any

import django
import pytest
from django.core import mail
from django.core.mail import EmailMessage

from django_gmail_smtp import pool
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.conf import resolve
from django_gmail_smtp.sandbox import SANDBOX_USER, GmailSandbox

from .conftest import LEGACY_API

BACKEND = "django_gmail_smtp.backend.EmailBackend"


def message(subject: str = "Hello", **kwargs: Any) -> EmailMessage:
    return EmailMessage(subject, "Body", kwargs.pop("from_email", SANDBOX_USER), ["to@example.com"], **kwargs)


def send(sandbox: GmailSandbox, subject: str = "Hello", mode: str = "starttls", **options: Any) -> int:
    """What send_mail() does: a new backend for each call."""
    return EmailBackend(**(sandbox.mailer_options(mode) | options)).send_messages([message(subject)])


def client_lines(backend: EmailBackend, start: str) -> list[str]:
    """Commands the client wrote that start with ``start`` (smtplib writes some in lower case)."""
    return [text.upper() for d, text in backend.transcript.lines if d == "->" and text.upper().startswith(start)]


def legacy(test: Any) -> Any:
    for mark in LEGACY_API:
        test = mark(test)
    return test


@legacy
def test_five_send_mail_calls_use_one_connection_and_one_sign_in(legacy_settings, gmail_sandbox):
    for i in range(5):
        assert mail.send_mail(f"Subject {i}", "Body", SANDBOX_USER, ["to@example.com"]) == 1
    assert [m.message["Subject"] for m in gmail_sandbox.messages] == [f"Subject {i}" for i in range(5)]
    assert gmail_sandbox.connections == 1
    assert gmail_sandbox.auth_attempts == 1
    assert pool.idle_count() == 1


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
def test_mailers_share_a_connection_only_with_the_same_configuration(settings, gmail_sandbox):
    settings.MAILERS = {
        "default": {"BACKEND": BACKEND, "OPTIONS": gmail_sandbox.mailer_options("starttls")},
        "same": {"BACKEND": BACKEND, "OPTIONS": gmail_sandbox.mailer_options("starttls")},
        "ssl": {"BACKEND": BACKEND, "OPTIONS": gmail_sandbox.mailer_options("ssl")},
    }
    for using in ("default", "same", "ssl", "default", "ssl"):
        assert mail.send_mail("s", "b", SANDBOX_USER, ["to@example.com"], using=using) == 1
    assert gmail_sandbox.connections == 2


def test_reuse_can_be_turned_off(gmail_sandbox, settings):
    settings.GMAIL_SMTP = {"REUSE_CONNECTIONS": False}
    for i in range(3):
        assert send(gmail_sandbox, f"s{i}") == 1
    assert gmail_sandbox.connections == 3
    assert pool.idle_count() == 0


def test_different_credentials_never_share_a_connection():
    users = {"alice@example.com": "alicealicealicea", "bob@example.com": "bobbobbobbobbobb"}
    with GmailSandbox(users=users) as sb:
        for user in ("alice@example.com", "bob@example.com", "alice@example.com", "bob@example.com"):
            backend = EmailBackend(**(sb.mailer_options("ssl") | {"username": user, "password": users[user]}))
            assert backend.send_messages([message(from_email=user)]) == 1
        assert [(m.auth_user, m.mail_from) for m in sb.messages] == [(u, u) for u in users] * 2
        assert sb.connections == 2
        pool.close_all()


def test_a_wrong_password_does_not_get_the_right_ones_connection(gmail_sandbox):
    assert send(gmail_sandbox) == 1
    with pytest.raises(smtplib.SMTPAuthenticationError):
        send(gmail_sandbox, password="wrong-password")
    assert gmail_sandbox.connections == 2
    assert gmail_sandbox.auth_attempts > 1


def test_each_thread_has_its_own_connection(gmail_sandbox):
    def in_thread() -> None:
        for i in range(2):
            send(gmail_sandbox, f"thread {i}")

    send(gmail_sandbox, "main 0")
    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(10)
    send(gmail_sandbox, "main 1")
    assert gmail_sandbox.connections == 2
    assert len(gmail_sandbox.messages) == 4


def test_a_finished_threads_connection_is_closed_by_the_next_user_of_the_pool(gmail_sandbox):
    worker = threading.Thread(target=send, args=(gmail_sandbox, "from a thread"))
    worker.start()
    worker.join(10)
    assert pool.idle_count() == 1
    send(gmail_sandbox, "main")
    assert pool.idle_count() == 1  # main's; the worker's was closed with QUIT


def test_idle_connections_are_dropped_after_the_idle_limit(gmail_sandbox, settings):
    settings.GMAIL_SMTP = {"POOL_IDLE_TIMEOUT": 0.1}
    assert send(gmail_sandbox, "first") == 1
    time.sleep(0.25)
    assert send(gmail_sandbox, "second") == 1
    assert gmail_sandbox.connections == 2


def test_noop_before_reusing_a_connection_idle_for_a_while(gmail_sandbox, settings):
    settings.GMAIL_SMTP = {"POOL_NOOP_AFTER": 0.05}
    assert send(gmail_sandbox, "first") == 1
    backend = EmailBackend(**gmail_sandbox.mailer_options())
    assert backend.send_messages([message("right away")]) == 1
    assert client_lines(backend, "NOOP") == []
    time.sleep(0.1)
    assert backend.send_messages([message("after a pause")]) == 1
    assert client_lines(backend, "NOOP") == ["NOOP"]
    assert gmail_sandbox.connections == 1


def test_a_connection_the_server_dropped_is_replaced(gmail_sandbox):
    assert send(gmail_sandbox, "first") == 1
    gmail_sandbox.drop_connections()
    time.sleep(0.05)
    assert send(gmail_sandbox, "second") == 1
    assert [m.message["Subject"] for m in gmail_sandbox.messages] == ["first", "second"]
    assert gmail_sandbox.connections == 2


def test_connections_are_recycled_after_n_messages(gmail_sandbox, settings):
    settings.GMAIL_SMTP = {"MESSAGES_PER_CONNECTION": 3}
    backend = EmailBackend(**gmail_sandbox.mailer_options())
    assert backend.send_messages([message(f"batch {i}") for i in range(7)]) == 7
    assert gmail_sandbox.connections == 3  # 3 + 3 + 1
    assert client_lines(backend, "QUIT") == ["QUIT", "QUIT"]
    for i in range(2):  # the pooled one has carried 1; two more wear it out
        assert send(gmail_sandbox, f"single {i}") == 1
    assert pool.idle_count() == 0
    assert send(gmail_sandbox, "fresh") == 1
    assert gmail_sandbox.connections == 4


def test_open_takes_the_pooled_connection_and_close_gives_it_back(gmail_sandbox):
    assert send(gmail_sandbox) == 1
    backend = EmailBackend(**gmail_sandbox.mailer_options())
    assert backend.open() is True
    assert backend.open() is False
    assert pool.idle_count() == 0
    backend.close()
    assert pool.idle_count() == 1
    with EmailBackend(**gmail_sandbox.mailer_options()) as other:
        assert other.send_messages([message()]) == 1
    assert gmail_sandbox.connections == 1
    assert gmail_sandbox.auth_attempts == 1


def test_close_all_says_quit(gmail_sandbox):
    backend = EmailBackend(**gmail_sandbox.mailer_options())
    assert backend.send_messages([message()]) == 1
    assert pool.idle_count() == 1
    pool.close_all()
    assert pool.idle_count() == 0
    assert client_lines(backend, "QUIT") == ["QUIT"]
    assert any(d == "<-" and text.startswith("221") for d, text in backend.transcript.lines)


def test_the_pool_key_never_holds_the_password(gmail_sandbox):
    config = resolve(gmail_sandbox.mailer_options())
    assert config.password not in repr(pool.config_key(config))
    assert pool.config_key(config) != pool.config_key(resolve(gmail_sandbox.mailer_options() | {"password": "x" * 16}))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_use_the_parents_connection(gmail_sandbox):
    assert send(gmail_sandbox, "parent before") == 1
    [parent_session] = [idle.session for idle in pool._idle.values()]
    parent_socket = parent_session.client.sock
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may deadlock"
        pid = os.fork()
    if pid == 0:  # the child: report through the exit status only, never run pytest's teardown
        status = 1
        try:
            if pool.idle_count() == 0 and send(gmail_sandbox, "child") == 1:
                status = 0 if parent_socket.fileno() != -1 else 2  # the inherited socket untouched
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert send(gmail_sandbox, "parent after") == 1  # the parent's connection still works
    assert [m.message["Subject"] for m in gmail_sandbox.messages] == ["parent before", "child", "parent after"]
    assert gmail_sandbox.connections == 2  # the parent's, reused, and the child's own
