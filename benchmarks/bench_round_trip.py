"""How long ``gmail_check --round-trip`` takes, and how soon it notices a late message.

    .venv/bin/python benchmarks/bench_round_trip.py            # the sandbox, then Debian's Dovecot if installed

Every run is one ``gmail_check --round-trip --json`` in this process against servers on 127.0.0.1:
the Gmail sandbox (SMTP in, its IMAP/POP3 out), and Dovecot fed by the sandbox through its
Maildir (tests/dovecot.py). "arrival" is what the round trip reports: seconds from the server's
250 to finding the message; "+1.0 s" delays the delivery by one second (IDLE wakes up at once;
without IDLE the search is repeated after 1 s, growing to 5 s).
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.core.mail.utils import DNS_NAME  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402

from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox, ReceivedMessage  # noqa: E402
from django_gmail_smtp.sandbox.inbox import delivered_copy  # noqa: E402

DNS_NAME._fqdn = "bench.localhost"  # no DNS lookup for the EHLO name


def run(sandbox: GmailSandbox, imap_port: int, pop_port: int, ca_file: str, via: str, label: str) -> None:
    smtp = sandbox.mailer_options("starttls")
    with override_settings(
        EMAIL_HOST=smtp["host"],
        EMAIL_PORT=smtp["port"],
        EMAIL_HOST_USER=SANDBOX_USER,
        EMAIL_HOST_PASSWORD=SANDBOX_PASSWORD,
        EMAIL_USE_TLS=True,
        EMAIL_TIMEOUT=5,
        DEFAULT_FROM_EMAIL=SANDBOX_USER,
        GMAIL_SMTP={
            "SSL_CAFILE": ca_file,
            "IMAP_HOST": "127.0.0.1",
            "IMAP_PORT": imap_port,
            "POP_HOST": "127.0.0.1",
            "POP_PORT": pop_port,
        },
    ):
        out = io.StringIO()
        started = time.perf_counter()
        call_command("gmail_check", "--round-trip", "--json", "--round-trip-via", via, stdout=out)
        total = time.perf_counter() - started
    doc: dict[str, Any] = json.loads(out.getvalue())
    print(
        f"{label:30s} {via:5s} ok={doc['ok']!s:5s} arrival {doc['round_trip']['seconds']:6.3f} s   whole run {total:6.3f} s"
    )


def main() -> None:
    with GmailSandbox() as sandbox:
        for via in ("imap", "pop3"):
            for _ in range(3):
                run(sandbox, sandbox.imap_port, sandbox.pop_port, sandbox.ca_file, via, "sandbox")
        sandbox.inject("slow_arrival", seconds=1.0)
        run(sandbox, sandbox.imap_port, sandbox.pop_port, sandbox.ca_file, "imap", "sandbox, +1.0 s, IDLE")
    with GmailSandbox(imap_extensions=()) as sandbox:
        sandbox.inject("slow_arrival", seconds=1.0)
        run(sandbox, sandbox.imap_port, sandbox.pop_port, sandbox.ca_file, "imap", "sandbox, +1.0 s, no IDLE")

    from tests import dovecot

    if dovecot.DOVECOT is None:
        print(dovecot.MISSING)
        return
    server = dovecot.start_dovecot(SANDBOX_USER, SANDBOX_PASSWORD)
    delay = [0.0]

    def file_into_maildir(message: ReceivedMessage) -> None:
        data = delivered_copy(message, SANDBOX_USER, server_name="gmail-sandbox.localhost")
        threading.Timer(delay[0], server.deliver, args=(data,)).start()

    try:
        with GmailSandbox(on_message=file_into_maildir) as sandbox:
            bundle = server.root / "bundle.pem"
            bundle.write_bytes(Path(sandbox.ca_file).read_bytes() + server.ca_pem)
            for via in ("imap", "pop3"):
                run(sandbox, server.imap_port, server.pop_port, str(bundle), via, f"Dovecot {dovecot.version()[:6]}")
            delay[0] = 1.0
            run(sandbox, server.imap_port, server.pop_port, str(bundle), "imap", "Dovecot, +1.0 s, IDLE")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
