"""Settings for the queue tests' subprocesses: a db_worker and a "web" process sharing a SQLite file.

Read from the environment (set by tests/queue_support.py): GMAIL_QUEUE_DB (the database file),
GMAIL_QUEUE_CLOCK (a file holding the clock's offset in seconds), GMAIL_SANDBOX_PORT and
GMAIL_SANDBOX_CA (the test process's Gmail sandbox).
"""

import contextlib
import os
from datetime import datetime, timedelta
from pathlib import Path

import django
from django.core.mail.utils import DNS_NAME
from django.utils import timezone

from django_gmail_smtp.sandbox.constants import SANDBOX_PASSWORD, SANDBOX_USER
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

DNS_NAME._fqdn = "test.localhost"  # never ask a DNS server for the EHLO name / Message-ID domain

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("GMAIL_QUEUE_DB", ":memory:"),
        "OPTIONS": {"timeout": 30},
    }
}
INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")
ROOT_URLCONF = "tests.queue_driver"
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "mail"]}}

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
    return timezone.now() + timedelta(seconds=offset)
