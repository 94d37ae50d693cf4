"""What the queued backend costs a request, and how fast N workers deliver (issue #16).

    .venv/bin/python benchmarks/bench_queue.py                       # SQLite and PostgreSQL, db_worker, ~2 min
    .venv/bin/python benchmarks/bench_queue.py --tasks db,rq         # also RQ workers on Redis
    .venv/bin/python benchmarks/bench_queue.py --engines postgresql --workers 1,4 --messages 400

For each database engine (a SQLite file; Debian's PostgreSQL with its default, durable settings,
started on a free loopback port) and Tasks backend (django-tasks-db's ``db_worker``; RQ's
``rqworker`` on Redis):

* **enqueue**: ``send_mail()`` of one small message with ``QueuedEmailBackend``, as a view does:
  wall time p50/p99 and CPU time per call, and the SQL queries it runs; once in autocommit (the
  call commits its own transaction) and once inside an open transaction (``ATOMIC_REQUESTS``:
  the request's commit, which it pays anyway, carries the queue's rows);
* **throughput**: M messages queued, then N worker processes (1, 2, 4) deliver them to the Gmail
  sandbox behind a latency proxy (20 ms RTT, bench_send.py's); messages per second from the first
  delivery to the last.

Everything stays on 127.0.0.1. Exit status 0 when the goals of issue #16 are met: enqueueing
adds at most 2 ms and 3 queries to a request (inside its transaction), and 4 workers deliver at
least 3x what one does. Numbers vary with the machine's load: run it more than once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"enqueue_ms": 2.0, "queries": 3, "scaling": 3.0}
RQ_WORKER = "django_gmail_smtp.rq_worker.Worker"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


# -- the child: one engine and Tasks backend (Django is set up once per process) ----------------


def send_one(number: int) -> None:
    from django.core import mail

    from django_gmail_smtp.sandbox.constants import SANDBOX_USER

    sent = mail.send_mail(f"Order {number}", "Thank you for your order.\n", SANDBOX_USER, [f"to{number}@example.com"])
    assert sent == 1


def enqueue_cost(count: int) -> dict[str, Any]:
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    for number in range(20):  # warm up: imports, the Tasks backend, prepared statements
        send_one(number)
    result: dict[str, Any] = {}
    for mode in ("autocommit", "in_transaction"):
        walls, cpus = [], []
        for number in range(count):
            # Inside a transaction, its commit is timed too: RQ's tasks are enqueued then (on_commit).
            inside = transaction.atomic() if mode == "in_transaction" else contextlib.nullcontext()
            cpu, start = time.thread_time(), time.perf_counter()
            with inside:
                send_one(number)
            walls.append(time.perf_counter() - start)
            cpus.append(time.thread_time() - cpu)
        inside = transaction.atomic() if mode == "in_transaction" else contextlib.nullcontext()
        with inside, CaptureQueriesContext(connection) as queries:
            send_one(0)
        result[mode] = {
            "p50_ms": percentile(walls, 0.5) * 1000,
            "p99_ms": percentile(walls, 0.99) * 1000,
            "cpu_ms": statistics.mean(cpus) * 1000,
            "queries": len(queries),
            "sql": [q["sql"][:60] for q in queries.captured_queries],
        }
    return result


def _reset(tasks: str) -> None:
    from django_gmail_smtp.models import DeliveryLog, QuotaAccount, QuotaUse

    DeliveryLog.objects.all().delete()
    QuotaUse.objects.all().delete()
    QuotaAccount.objects.all().delete()
    if tasks == "rq":
        import django_rq

        django_rq.get_connection("mail").flushdb()
    else:
        from django_tasks_db.models import DBTaskResult

        DBTaskResult.objects.all().delete()


def _worker_argv(tasks: str, number: int) -> list[str]:
    if tasks == "rq":
        return [
            "rqworker", "mail", "--job-class", "django_tasks_rq.Job", "--worker-class",
            os.environ.get("BENCH_RQ_WORKER", RQ_WORKER), "--worker-ttl", "30", "--with-scheduler",
            "--name", f"bench-{number}",
        ]  # fmt: skip
    return ["db_worker", "--queue-name", "mail", "--no-reload", "--no-startup-delay", "--worker-id", f"bench-{number}"]


def _machine_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), sum(fields) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: set[int]) -> float:
    """User + system CPU seconds used so far by these processes."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


PROFILED = """
import cProfile, runpy, sys, time
profile = cProfile.Profile(time.process_time)
sys.argv[0] = "django"
try:
    profile.runcall(runpy.run_module, "django", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.dump_stats({path!r})
"""


def _stop(process: subprocess.Popen[bytes], profiled: bool) -> None:
    """SIGKILL the worker's tree; a profiled worker first gets SIGTERM, so that it writes its profile."""
    if profiled and process.poll() is None:
        process.send_signal(signal.SIGTERM)  # db_worker and rqworker stop after the task they run
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
    from tests.engines import kill_tree

    kill_tree(process)


def throughput(tasks: str, workers: int, count: int, logs: Path, profile: bool = False) -> dict[str, Any]:
    from django.core import mail
    from django.core.mail import EmailMessage

    from django_gmail_smtp.models import DeliveryLog
    from django_gmail_smtp.sandbox.constants import SANDBOX_USER
    from tests.engines import descendants

    _reset(tasks)
    processes = []
    for number in range(workers):
        log = (logs / f"worker-{tasks}-{workers}-{number}.log").open("wb")
        launcher = ["-m", "django"]
        if profile:  # CPU time (not wall time: the worker mostly waits), written when it stops
            launcher = ["-c", PROFILED.format(path=str(logs / f"worker-{tasks}-{workers}-{number}.prof"))]
        processes.append(
            subprocess.Popen(
                [sys.executable, *launcher, *_worker_argv(tasks, number)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        )
        log.close()
    try:
        time.sleep(3)  # let them start (Python + Django: about a second each on a loaded machine)
        messages = [
            EmailMessage(f"Bench {n}", "A small message.\n", SANDBOX_USER, [f"to{n}@example.com"]) for n in range(count)
        ]
        import django

        backend = mail.mailers.default if django.VERSION >= (6, 1) else mail.get_connection()  # type: ignore[attr-defined]
        tree = descendants({p.pid for p in processes})
        machine, worker_cpu = _machine_times(), _cpu_seconds(tree)
        assert backend.send_messages(messages) == count
        deadline = time.monotonic() + 600
        while DeliveryLog.objects.filter(status="sent").count() < count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"workers did not deliver {count} messages; see {logs}")
            time.sleep(0.2)
        busy, total = (after - before for after, before in zip(_machine_times(), machine, strict=True))
        worker_ms = (_cpu_seconds(tree) - worker_cpu) / count * 1000
        times = sorted(DeliveryLog.objects.values_list("sent_at", flat=True))
        span = (times[-1] - times[0]).total_seconds()
        rate = (count - 1) / span if span else float("inf")
        return {"messages": count, "seconds": span, "rate": rate, "busy": busy / total, "worker_cpu_ms": worker_ms}
    finally:
        for process in processes:
            _stop(process, profile)


def child(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    result = {"enqueue": enqueue_cost(args.enqueue), "throughput": {}}
    for workers in [int(w) for w in args.workers.split(",")]:
        result["throughput"][str(workers)] = throughput(
            args.child, workers, args.messages, Path(args.logs), profile=args.profile is not None
        )
    print(json.dumps(result))
    return 0


# -- the parent: servers, one child per engine and Tasks backend, the table --------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="sqlite,postgresql", help="sqlite, postgresql (default both)")
    parser.add_argument("--tasks", default="db", help="db (db_worker), rq (rqworker on Redis); default db")
    parser.add_argument("--workers", default="1,2,4", help="numbers of worker processes (default 1,2,4)")
    parser.add_argument("--messages", type=int, default=200, help="messages per throughput run (default 200)")
    parser.add_argument("--enqueue", type=int, default=300, help="send_mail() calls timed per mode (default 300)")
    parser.add_argument("--rtt", type=float, default=20.0, help="round-trip time to the sandbox, ms (default 20)")
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=0,
        help="CONN_MAX_AGE of the database (default 0, Django's: a connection per task)",
    )
    parser.add_argument(
        "--rq-worker", default=RQ_WORKER, help=f"RQ worker class (default {RQ_WORKER}; RQ's own: rq.worker.Worker)"
    )
    parser.add_argument(
        "--rq-pool",
        action="store_true",
        help="RQ_QUEUES share one Redis connection pool (REDIS_CLIENT_KWARGS) instead of a URL, with "
        "which django-rq opens a new connection for each task enqueued",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run the workers under cProfile, write their profiles (worker-TASKS-N-I.prof) to DIR and show "
        "the functions that cost the most CPU per message",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--logs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        return child(args)

    from tests.engines import PostgresServer, RedisServer, missing_postgresql, missing_redis

    server = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "bench_send.py"), "--serve", "--rtt", f"{args.rtt:g}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    logs = Path(args.profile) if args.profile else Path(tempfile.mkdtemp(prefix="bench-queue-"))
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        port = info["proxies"][str(args.rtt)] if args.rtt > 0 else info["direct"][1]
        import django

        print(f"django-gmail-smtp queue benchmark: Python {sys.version.split()[0]}, Django {django.get_version()}")
        print(f"Gmail sandbox behind a {args.rtt:g} ms RTT proxy; {args.messages} messages per throughput run")
        print(f"CONN_MAX_AGE {args.conn_max_age}; machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        if "rq" in args.tasks:
            print(f"RQ worker class: {args.rq_worker}")

        def available(missing: Callable[[], str | None], what: str) -> bool:
            reason = missing()
            if reason:
                print(f"skipping {what}: {reason}")
            return reason is None

        for engine in args.engines.split(","):
            if engine == "postgresql":
                if not available(missing_postgresql, "PostgreSQL"):
                    continue
                postgres = postgres or PostgresServer(durable=True).start()
            for tasks in args.tasks.split(","):
                if tasks == "rq":
                    if not available(missing_redis, "RQ"):
                        continue
                    redis = redis or RedisServer().start()
                name = f"bench_{engine}_{tasks}_{int(time.time())}"
                if engine == "postgresql":
                    assert postgres is not None
                    postgres.create_database(name)
                    database = postgres.settings(name)
                    database["CONN_MAX_AGE"] = args.conn_max_age
                else:
                    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(logs / f"{name}.sqlite3")}
                    database["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
                    database["CONN_MAX_AGE"] = args.conn_max_age
                env = dict(
                    os.environ,
                    DJANGO_SETTINGS_MODULE="benchmarks.queue_settings",
                    PYTHONPATH=str(ROOT),
                    BENCH_DATABASE=json.dumps(database),
                    BENCH_TASKS=tasks,
                    BENCH_REDIS=redis.url if redis else "",
                    BENCH_SMTP_PORT=str(port),
                    BENCH_SMTP_CA=info["ca_file"],
                    BENCH_RQ_WORKER=args.rq_worker,
                    BENCH_RQ_POOL="1" if args.rq_pool else "",
                )
                argv = [sys.executable, __file__, "--child", tasks, "--logs", str(logs), "--workers", args.workers]
                argv += ["--messages", str(args.messages), "--enqueue", str(args.enqueue)]
                argv += ["--profile", str(logs)] if args.profile else []
                done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{engine}/{tasks} failed:\n{done.stderr[-3000:]}")
                    return 2
                rows.append((engine, tasks, json.loads(done.stdout.strip().splitlines()[-1])))
        status = report(rows, args)
        if args.profile:
            profile_report(logs, args.messages)
        else:
            shutil.rmtree(logs, ignore_errors=True)  # kept only when a run failed, for its worker logs
        return status
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(10)
        if postgres is not None:
            postgres.stop()
        if redis is not None:
            redis.stop()


def report(rows: list[tuple[str, str, dict[str, Any]]], args: argparse.Namespace) -> int:
    print("\nenqueue: one send_mail() with QueuedEmailBackend (wall p50 / p99, CPU mean, SQL queries)")
    print(f"  {'engine / tasks':24}{'autocommit':>34}{'in a transaction, its commit included':>40}")
    checks = []
    for engine, tasks, result in rows:
        cells = []
        for mode in ("autocommit", "in_transaction"):
            e = result["enqueue"][mode]
            cells.append(f"{e['p50_ms']:6.2f} /{e['p99_ms']:6.2f} ms, CPU {e['cpu_ms']:5.2f} ms, {e['queries']} q")
        print(f"  {engine + ' / ' + tasks:24}{cells[0]:>34}{cells[1]:>40}")
        inside = result["enqueue"]["in_transaction"]
        checks.append(
            (f"{engine}/{tasks}: enqueue <= 2 ms (p50)", inside["p50_ms"] <= GOALS["enqueue_ms"], inside["p50_ms"])
        )
        checks.append(
            (f"{engine}/{tasks}: enqueue <= 3 queries", inside["queries"] <= GOALS["queries"], inside["queries"])
        )
    workers = [int(w) for w in args.workers.split(",")]
    print(f"\nthroughput: messages per second delivered at {args.rtt:g} ms RTT, by number of workers")
    print(f"  {'engine / tasks':24}" + "".join(f"{n:>10}" for n in workers) + f"{'ratio':>10}")
    for engine, tasks, result in rows:
        rates = [result["throughput"][str(n)]["rate"] for n in workers]
        ratio = rates[-1] / rates[0]
        print(f"  {engine + ' / ' + tasks:24}" + "".join(f"{r:10.1f}" for r in rates) + f"{ratio:9.2f}x")
        busy = [result["throughput"][str(n)]["busy"] * 100 for n in workers]
        print(f"  {'  machine CPU busy %':24}" + "".join(f"{b:10.0f}" for b in busy))
        cpu = [result["throughput"][str(n)]["worker_cpu_ms"] for n in workers]
        print(f"  {'  worker CPU ms/msg':24}" + "".join(f"{c:10.1f}" for c in cpu))
        if 1 in workers and 4 in workers:
            scaling = result["throughput"]["4"]["rate"] / result["throughput"]["1"]["rate"]
            checks.append((f"{engine}/{tasks}: 4 workers >= 3x one", scaling >= GOALS["scaling"], scaling))
    print("\ngoals:")
    for label, ok, value in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}  ({value:.2f})")
    for engine, tasks, result in rows:
        print(f"\nqueries of one enqueue inside a transaction ({engine}/{tasks}):")
        for sql in result["enqueue"]["in_transaction"]["sql"]:
            print(f"  {sql}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def profile_report(directory: Path, messages: int, top: int = 25) -> None:
    """The functions that cost the profiled workers the most, in ms per delivered message.

    The profile covers the whole worker process: its start (Python, Django, imports) shows up in
    the cumulative column too, under ``<module>`` and ``setup``; what runs once per message is the
    rest. cProfile slows small Python functions down more than C code: compare shares, not totals.
    """
    import pstats

    for path in sorted(directory.glob("worker-*-1-0.prof")):
        stats = pstats.Stats(str(path))
        rows = stats.stats  # type: ignore[attr-defined]
        print(f"\nprofile of {path.name} (one worker; ms per message; calls per message)")
        for title, column in (("own time", 2), ("cumulative", 3)):
            print(f"  by {title}:")
            ranked = sorted(rows.items(), key=lambda item: item[1][column], reverse=True)
            shown = 0
            for (filename, line, function), (_calls, ncalls, tottime, cumtime, _callers) in ranked:
                if column == 3 and (
                    "importlib" in filename or function in ("<module>", "<built-in method builtins.exec>")
                ):
                    continue
                where = filename.split("site-packages/")[-1].split("/work/")[-1]
                spent = (tottime if column == 2 else cumtime) / messages * 1000
                print(f"    {spent:7.3f} ms  {ncalls / messages:7.2f}  {function} ({where}:{line})")
                shown += 1
                if shown >= top:
                    break


if __name__ == "__main__":
    sys.exit(main())
