"""Settings of bench_queue.py's processes (the "web" process and the workers), from the environment.

BENCH_DATABASE (a JSON ``DATABASES`` entry), BENCH_TASKS (``db`` or ``rq``), BENCH_REDIS (URL),
BENCH_RQ_POOL (non-empty: one shared Redis connection pool instead of django-rq's one per call),
BENCH_SMTP_PORT and BENCH_SMTP_CA (the sandbox behind the latency proxy). Everything else is
the queued backend's defaults, as a site would run it (the daily-limit guard on, a limit of
100,000 so that it counts without ever holding a message).
"""

import json
import os

import django
from django.core.mail.utils import DNS_NAME

from django_gmail_smtp.sandbox.constants import SANDBOX_PASSWORD, SANDBOX_USER

DNS_NAME._fqdn = "bench.localhost"  # never ask a DNS server (the benchmark stays on loopback)

SECRET_KEY = "benchmark-only-not-secret"
USE_TZ = True
DEBUG = False
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_gmail_smtp", "django_tasks_db"]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")
DATABASES = {"default": json.loads(os.environ.get("BENCH_DATABASE", '{"ENGINE": "django.db.backends.sqlite3"}'))}
LOGGING_CONFIG = None
QUEUES = ["default", "mail"]
if os.environ.get("BENCH_TASKS") == "rq":
    INSTALLED_APPS.append("django_rq")
    RQ_QUEUES = {name: {"URL": os.environ.get("BENCH_REDIS", "")} for name in QUEUES}
    if os.environ.get("BENCH_RQ_POOL"):  # one shared pool, not a connection per task enqueued
        from tests.engines import rq_queues

        RQ_QUEUES = rq_queues(os.environ.get("BENCH_REDIS", ""), QUEUES)
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": QUEUES}}
else:
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": QUEUES}}

SMTP = {
    "host": "127.0.0.1",
    "port": int(os.environ.get("BENCH_SMTP_PORT", "0")),
    "username": SANDBOX_USER,
    "password": SANDBOX_PASSWORD,
    "use_tls": True,
    "timeout": 30,
}
BACKEND = "django_gmail_smtp.queued.QueuedEmailBackend"
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": BACKEND, "OPTIONS": SMTP}}
else:
    EMAIL_BACKEND = BACKEND
    EMAIL_HOST, EMAIL_PORT = SMTP["host"], SMTP["port"]
    EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = SMTP["username"], SMTP["password"]
    EMAIL_USE_TLS, EMAIL_TIMEOUT = True, 30
GMAIL_SMTP = {
    "SSL_CAFILE": os.environ.get("BENCH_SMTP_CA") or None,
    "QUEUE_NAME": "mail",
    "QUOTA_LIMITS": {SANDBOX_USER: 100_000},
}
