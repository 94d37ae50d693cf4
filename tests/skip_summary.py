"""The end of a test run, short: skipped tests counted by reason, one line per reason.

Replaces pytest's ``-ra`` list (one ``SKIPPED`` line per test, dozens of them on Django 5.2
for the ``MAILERS`` tests), which buried the result. Failures and errors are still listed by
pytest itself. Loaded by ``tests/conftest.py``; ``-p tests.skip_summary`` loads it elsewhere.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def skip_reason(report: Any) -> str:
    """The reason a test was skipped, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ").strip()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    reports = [report for report in terminalreporter.stats.get("skipped", []) if report.skipped]
    if not reports:
        return
    counts = Counter(skip_reason(report) for report in reports)
    terminalreporter.section(f"{len(reports)} skipped, by reason", sep="-")
    for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        terminalreporter.write_line(f"{count:>4}  {reason}")
