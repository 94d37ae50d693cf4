"""How long delayed tasks wait when the machine running RQ's scheduler is lost (issue #16).

    .venv/bin/python benchmarks/bench_rq_recovery.py                  # our layout: ~1.5 min a run
    .venv/bin/python benchmarks/bench_rq_recovery.py --runs 3
    .venv/bin/python benchmarks/bench_rq_recovery.py --rq-defaults    # RQ's and django-rq's defaults: ~15 min

Two ``rqworker --with-scheduler`` processes on a real Redis; the first holds RQ's scheduler lock.
Its whole process tree is SIGKILLed (a lost machine), then a message is queued whose first attempt
gets a ``421`` from the Gmail sandbox, so that its retry (0.2-0.5 s later) is a delayed task that
only a scheduler can start. Printed: seconds from the loss to the retry's delivery, and to the
moment the surviving worker took the scheduler lock over.

Our layout: ``--worker-class django_gmail_smtp.rq_worker.Worker --worker-ttl 30`` (maintenance,
and with it the take-over, every 30 s). ``--rq-defaults``: RQ's worker (maintenance every 600 s)
with django-rq's ``--worker-ttl 420`` (an idle worker wakes up every 405 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_gmail_smtp.sandbox import GmailSandbox  # noqa: E402
from tests.engines import RedisServer, kill_tree, missing_redis  # noqa: E402


def wait_for(what: str, predicate: object, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def one_run(args: argparse.Namespace, sandbox: GmailSandbox, redis: RedisServer, directory: Path) -> dict[str, float]:
    redis.flush()
    sandbox.reset()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "GMAIL_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.queue_settings",
        PYTHONPATH=str(ROOT),
        GMAIL_QUEUE_TASKS="rq",
        GMAIL_QUEUE_REDIS=redis.url,
        GMAIL_QUEUE_DB=str(directory / f"db-{time.time_ns()}.sqlite3"),
        GMAIL_QUEUE_CLOCK=str(directory / "clock"),
        GMAIL_SANDBOX_PORT=str(sandbox.starttls_port),
        GMAIL_SANDBOX_CA=sandbox.ca_file,
    )

    def driver(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tests.queue_driver", *argv], env=env, cwd=ROOT, capture_output=True, check=True
        )
        return done.stdout.decode()

    driver("migrate")
    layout = [] if args.rq_defaults else ["--worker-class", "django_gmail_smtp.rq_worker.Worker", "--worker-ttl", "30"]
    logs, workers = [], []
    for number in (1, 2):
        log = directory / f"worker-{number}-{time.time_ns()}.log"
        argv = [sys.executable, "-m", "django", "rqworker", "default", "mail", "--job-class", "django_tasks_rq.Job"]
        argv += ["--with-scheduler", "--name", f"recovery-{number}-{time.time_ns()}", *layout]
        with log.open("wb") as out:
            workers.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
        logs.append(log)
        marker = "Acquired scheduler lock" if number == 1 else "Listening on"
        wait_for(f"worker {number} to start", lambda log=log, m=marker: m in log.read_text(errors="replace"), 60)
    try:
        kill_tree(workers[0])
        lost = time.monotonic()
        sandbox.inject("throttled")
        answer = json.loads(driver("request", json.dumps({"count": 1, "tag": "recovery"})))
        message_id = answer["messages"][0]["message_id"]
        delivered = wait_for(
            "the retry to be delivered",
            lambda: any(m.message["Message-ID"] == message_id for m in sandbox.messages),
            args.timeout,
        )
        text = logs[1].read_text(errors="replace")
        return {
            "delivered_s": delivered - lost,
            "takeover_seen": float("Acquired scheduler lock" in text),
        }
    finally:
        for worker in workers:
            kill_tree(worker)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rq-defaults", action="store_true", help="RQ's worker and django-rq's --worker-ttl 420")
    parser.add_argument("--timeout", type=float, default=1500.0, help="give up after this many seconds (1500)")
    args = parser.parse_args()
    reason = missing_redis()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    directory = Path(tempfile.mkdtemp(prefix="bench-rq-recovery-"))
    sandbox = GmailSandbox().start()
    redis = RedisServer().start()
    try:
        layout = (
            "RQ defaults (maintenance 600 s, --worker-ttl 420)"
            if args.rq_defaults
            else "rq_worker.Worker, --worker-ttl 30"
        )
        print(f"RQ scheduler recovery, {layout}")
        results = []
        for run in range(args.runs):
            result = one_run(args, sandbox, redis, directory)
            results.append(result["delivered_s"])
            took = "the survivor took the scheduler lock" if result["takeover_seen"] else "no take-over logged"
            print(
                f"  run {run + 1}: the delayed retry was delivered {result['delivered_s']:.1f} s after the loss ({took})"
            )
        print(f"  min {min(results):.1f} s, max {max(results):.1f} s")
        shutil.rmtree(directory, ignore_errors=True)  # kept only when a run failed, for the worker logs
        return 0
    finally:
        redis.stop()
        sandbox.stop()


if __name__ == "__main__":
    sys.exit(main())
