"""Settings for the queue tests' subprocesses: workers and a "web" process sharing one database.

Read from the environment (set by tests/queue_support.py): GMAIL_QUEUE_DATABASE (a JSON
``DATABASES`` entry, e.g. PostgreSQL) or GMAIL_QUEUE_DB (a SQLite file); GMAIL_QUEUE_TASKS
(``db``: django-tasks-db and ``db_worker``, the default; ``rq``: django-tasks-rq and
``rqworker`` on the Redis at GMAIL_QUEUE_REDIS); GMAIL_QUEUE_CLOCK (a file holding the clock's
offset in seconds); GMAIL_SANDBOX_PORT and GMAIL_SANDBOX_CA (the test process's Gmail sandbox).
"""

import contextlib
import json
import os
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import django
from django.core.mail.utils import DNS_NAME
from django.utils import timezone

from django_gmail_smtp.sandbox.constants import SANDBOX_PASSWORD, SANDBOX_USER
from tests.engines import rq_queues
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

DNS_NAME._fqdn = "test.localhost"  # never ask a DNS server for the EHLO name / Message-ID domain

if os.environ.get("GMAIL_QUEUE_DATABASE"):
    DATABASES = {"default": json.loads(os.environ["GMAIL_QUEUE_DATABASE"])}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("GMAIL_QUEUE_DB", ":memory:"),
            # Several worker processes write: take the write lock when a transaction starts.
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
INSTALLED_APPS = [*INSTALLED_APPS]
if "django_tasks_db" not in INSTALLED_APPS:
    INSTALLED_APPS.append("django_tasks_db")
if django.VERSION < (6, 0) and "django_tasks" not in INSTALLED_APPS:
    INSTALLED_APPS.append("django_tasks")
ROOT_URLCONF = "tests.queue_urls"
QUEUES = ["default", "mail"]
TASKS_KIND = os.environ.get("GMAIL_QUEUE_TASKS", "db")
if TASKS_KIND == "rq":
    INSTALLED_APPS.append("django_rq")
    # The README's layout: one Redis connection pool shared by the queues.
    RQ_QUEUES = rq_queues(os.environ.get("GMAIL_QUEUE_REDIS", "redis://127.0.0.1:6379/0"), QUEUES)
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": QUEUES}}
else:
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": QUEUES}}

SANDBOX = {
    "host": "127.0.0.1",
    "port": int(os.environ.get("GMAIL_SANDBOX_PORT", "0")),
    "username": SANDBOX_USER,
    "password": SANDBOX_PASSWORD,
    "use_tls": True,
    "timeout": 5,
}
QUEUED_BACKEND = "django_gmail_smtp.queued.QueuedEmailBackend"
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": QUEUED_BACKEND, "OPTIONS": {**SANDBOX, "queue_name": "mail"}}}
else:
    EMAIL_BACKEND = QUEUED_BACKEND
    EMAIL_HOST = SANDBOX["host"]
    EMAIL_PORT = SANDBOX["port"]
    EMAIL_HOST_USER = SANDBOX["username"]
    EMAIL_HOST_PASSWORD = SANDBOX["password"]
    EMAIL_USE_TLS = True
    EMAIL_TIMEOUT = 5

GMAIL_SMTP = {
    "SSL_CAFILE": os.environ.get("GMAIL_SANDBOX_CA") or None,
    "RETRY_ATTEMPTS": 1,  # no quick retry inside one attempt: the task's own retry is what is tested
    "QUEUE_NAME": "mail",
    "QUEUE_LEASE": 3.0,
    "QUEUE_RETRY_BACKOFF": 0.2,
    "QUEUE_RETRY_BACKOFF_MAX": 0.5,
    "QUOTA_LIMITS": {SANDBOX_USER: 500},
    "QUOTA_HOLD_MAX": 1.0,
    "CLOCK": "tests.queue_settings.clock",
}


def clock() -> datetime:
    """Wall-clock time plus the offset (seconds) written in the GMAIL_QUEUE_CLOCK file, if any."""
    path = os.environ.get("GMAIL_QUEUE_CLOCK")
    offset = 0.0
    if path:
        with contextlib.suppress(FileNotFoundError):
            offset = float(Path(path).read_text() or 0)
        _freeze_in_reserve(Path(path))
    return timezone.now() + timedelta(seconds=offset)


def _freeze_in_reserve(clock_file: Path) -> None:
    """Once the test created ``<clock>.freeze``: the first process to read the clock inside
    ``quota.reserve()`` (holding the account's row lock) writes its pid to ``<clock>.frozen``
    and waits there for the test to SIGKILL it."""
    if not clock_file.with_suffix(".freeze").exists():
        return
    frames = sys._getframe(2)
    inside = False
    while frames is not None:
        if frames.f_code.co_name == "reserve" and frames.f_globals.get("__name__") == "django_gmail_smtp.quota":
            inside = True
            break
        frames = frames.f_back
    if not inside:
        return
    try:
        descriptor = os.open(clock_file.with_suffix(".frozen"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another process froze already
    os.write(descriptor, str(os.getpid()).encode())
    os.close(descriptor)
    while True:
        time.sleep(1)
