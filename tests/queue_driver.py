"""The "web" side of the queue tests, run as a subprocess next to a real ``db_worker``.

``python -m tests.queue_driver COMMAND [JSON]`` with ``DJANGO_SETTINGS_MODULE=tests.queue_settings``:

* ``migrate``: create the tables in the database file;
* ``request``: POST to the view below through Django's test client (a real request through the
  middleware and the queued backend) and print the view's JSON answer;
* ``prefill``: count messages against an account's daily limit (as if sent earlier);
* ``reserve``: take slots one at a time as fast as possible and print how many were granted
  (several of these run at once to show the guard never gives more than the limit);
* ``admin``: GET (or POST ``data`` to) an admin page as a superuser; print the status and the page.

Also the view of the URLconf of those settings (tests/queue_urls.py) and :func:`rich_message`, which the test
process builds too, to compare what the sandbox received part by part.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

SENDER = "sandbox@example.com"

# All 256 byte values, then a PNG signature and bytes that are not UTF-8: any re-encoding shows.
BINARY = bytes(range(256)) * 4 + b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\xff\xfe\xfd\x00\r\n.\r\n" * 50
SJIS = "請求書 第二四半期\r\n合計,１２３４５円\r\n".encode("shift_jis")


def rich_message() -> Any:
    """Japanese subject, names, bodies and file names; an HTML alternative; text and binary files."""
    from django.core.mail import EmailMultiAlternatives

    message = EmailMultiAlternatives(
        subject="ご注文ありがとうございます — 注文番号 12345 の確認",
        body="山田 太郎 様\n\nご注文を承りました。\n・商品: 日本茶セット\n・金額: ￥3,240（税込）\n\n.\n行頭のドット\n",
        from_email=f"ショップ <{SENDER}>",
        to=["山田 太郎 <taro@example.jp>"],
        cc=["経理 <keiri@example.jp>"],
        reply_to=["サポート <support@example.jp>"],
        headers={"X-Order": "12345"},
    )
    message.attach_alternative("<p>山田 太郎 様</p><p>ご注文を<strong>承りました</strong>。</p>", "text/html")
    message.attach("領収書.txt", "領収書\n金額: ￥3,240\n", "text/plain")
    message.attach("image.png", BINARY, "image/png")
    message.attach("請求書.csv", SJIS, "application/octet-stream")
    return message


@csrf_exempt
def send_view(request: HttpRequest) -> JsonResponse:
    """Queue messages the way a site would, in a request; answer with their log ids and Message-IDs."""
    import django
    from django.core import mail

    data = json.loads(request.body or b"{}")
    tag = data.get("tag", "test")
    if data.get("kind") == "rich":
        messages = [rich_message()]
    else:
        messages = [
            mail.EmailMessage(
                subject=f"{tag} #{number}",
                body=f"Message {number} of {tag}.\n",
                from_email=SENDER,
                to=[f"to{number}@example.com"],
            )
            for number in range(int(data.get("count", 1)))
        ]
    connection = mail.mailers.default if django.VERSION >= (6, 1) else mail.get_connection()  # type: ignore[attr-defined]
    queued = connection.send_messages(messages)
    return JsonResponse(
        {
            "queued": queued,
            "messages": [
                {"log_id": m.gmail_smtp_queued.log_id, "message_id": m.gmail_smtp_queued.message_id} for m in messages
            ],
        }
    )


def _mailer_options() -> dict[str, Any]:
    """The queued backend's options as the settings give them (MAILERS on 6.1, EMAIL_* before)."""
    import django
    from django.conf import settings

    if django.VERSION >= (6, 1):
        options = dict(settings.MAILERS["default"]["OPTIONS"])
        options.pop("password", None)  # read from MAILERS by the worker; never an argument
        return options
    return {}


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.queue_settings")
    import django

    django.setup()
    command, arguments = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    if command == "migrate":
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    elif command == "request":
        from django.test import Client

        response = Client().post("/queue-send/", data=json.dumps(arguments), content_type="application/json")
        if response.status_code != 200:
            sys.stderr.write(response.content.decode(errors="replace"))
            return 1
        sys.stdout.write(response.content.decode())
    elif command == "prefill":
        from django_gmail_smtp import quota

        quota.reserve(arguments["account"], arguments["count"], limit=None)
    elif command == "reserve":
        import time

        from django_gmail_smtp import quota

        time.sleep(max(0.0, arguments.get("start_at", 0) - time.time()))  # all racers start together
        granted = 0
        for _ in range(arguments["times"]):
            try:
                quota.reserve(arguments["account"], 1, limit=arguments["limit"])
            except quota.QuotaExceededError:
                continue
            granted += 1
        sys.stdout.write(json.dumps({"granted": granted}))
    elif command == "enqueue_queries":
        from django.core.mail import EmailMessage
        from django.db import connection, transaction
        from django.test.utils import CaptureQueriesContext

        from django_gmail_smtp.queued import QueuedEmailBackend

        backend = QueuedEmailBackend(fail_silently=arguments.get("fail_silently", False), **_mailer_options())
        message = EmailMessage(subject="cheap", body="x", from_email=SENDER, to=["a@example.com"])
        with transaction.atomic(), CaptureQueriesContext(connection) as queries:  # ATOMIC_REQUESTS
            queued = backend.send_messages([message])
        sys.stdout.write(json.dumps({"queued": queued, "sql": [q["sql"] for q in queries.captured_queries]}))
    elif command == "admin":
        from django.contrib.auth import get_user_model
        from django.test import Client

        user, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        client = Client()
        client.force_login(user)
        if "data" in arguments:
            response = client.post(arguments["path"], arguments["data"], follow=True)
        else:
            response = client.get(arguments["path"])
        sys.stdout.write(json.dumps({"status": response.status_code, "page": response.content.decode()}))
    else:
        sys.stderr.write(f"unknown command {command!r}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
