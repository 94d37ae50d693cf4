"""The send benchmark still runs end to end (a few messages; its numbers are not judged here).

Speed is measured by ``benchmarks/bench_send.py`` itself, never asserted in the suite: this
only checks that every row it prints is still produced, so a change to the backend cannot
leave the benchmark broken until the next time someone wants numbers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_send.py"


def test_bench_send_prints_every_row_and_the_bound_of_send_mail() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--rtt", "2,0", "--messages", "4", "--stock-send-mail", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    # 1 is "a target was missed": four messages say nothing about the targets.
    assert result.returncode in (0, 1), result.stderr
    out = result.stdout
    per_rtt = (
        "django-gmail-smtp (pooled)",
        "Django stock SMTP (reconnects)",
        "bytes built before the clock",
        "built per message, as send_mail()",
        "ours / built per message",
        "raw smtplib loop (one connection)",
    )
    for row in per_rtt:
        assert out.count(row) == 2, (row, out)  # once at 2 ms, once at 0 ms
    assert "CPU in our backend per message" in out
