"""Example project: SQLite, the admin, and mail through django-gmail-smtp.

All mail configuration comes from the environment (and an optional ``.env``
file next to manage.py), read with django-environ. Without any, mail goes to
the local Gmail sandbox started by ``manage.py gmail_sandbox``.
"""

import json
import os
from pathlib import Path

import django
import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; real environment variables win

# The embedded default, when no EMAIL_URL is given: the Gmail sandbox on loopback. While
# `manage.py gmail_sandbox` runs, its ready file (.sandbox/ready.json) says which ports it got
# (free ones with `--starttls-port auto`) and where its CA is; without that file, the port is
# SANDBOX_STARTTLS_PORT (default 2587) and the CA .sandbox/ca.pem. Its IMAP and POP3 ports (the
# sandbox account's mailbox) come from the same file, or SANDBOX_IMAP_PORT/SANDBOX_POP_PORT.
SANDBOX_DIR = Path(env("SANDBOX_DIR", default=str(BASE_DIR / ".sandbox")))
if not os.environ.get("EMAIL_URL"):
    try:
        sandbox = json.loads((SANDBOX_DIR / "ready.json").read_text(encoding="utf-8"))
        sandbox_port, sandbox_ca = sandbox["ports"]["starttls"], sandbox["ca_file"]
        # The sandbox account's mailbox, read by 'manage.py gmail_check --round-trip'.
        imap_port, pop_port = sandbox["ports"].get("imap", 2993), sandbox["ports"].get("pop3", 2995)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not running (or an unreadable file)
        sandbox_port, sandbox_ca = env.int("SANDBOX_STARTTLS_PORT", default=2587), str(SANDBOX_DIR / "ca.pem")
        imap_port, pop_port = env.int("SANDBOX_IMAP_PORT", default=2993), env.int("SANDBOX_POP_PORT", default=2995)
    os.environ["EMAIL_URL"] = f"smtp+tls://sandbox%40example.com:sandboxapppasswd@127.0.0.1:{sandbox_port}"
    if not os.environ.get("GMAIL_SMTP_SSL_CAFILE"):
        os.environ["GMAIL_SMTP_SSL_CAFILE"] = sandbox_ca
    for variable, value in (
        ("GMAIL_SMTP_IMAP_HOST", "127.0.0.1"),
        ("GMAIL_SMTP_IMAP_PORT", str(imap_port)),
        ("GMAIL_SMTP_POP_HOST", "127.0.0.1"),
        ("GMAIL_SMTP_POP_PORT", str(pop_port)),
    ):
        if not os.environ.get(variable):
            os.environ[variable] = value

SECRET_KEY = env("DJANGO_SECRET_KEY", default="example-project-insecure-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_gmail_smtp",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "example_project.wsgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}

LANGUAGE_CODE = env("LANGUAGE_CODE", default="en")
LANGUAGES = [("en", "English"), ("ja", "日本語")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Mail: our backend; host, port, account and password come from EMAIL_URL.
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="sandbox@example.com")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django_gmail_smtp.backend.EmailBackend"}}
else:
    EMAIL_BACKEND = "django_gmail_smtp.backend.EmailBackend"
