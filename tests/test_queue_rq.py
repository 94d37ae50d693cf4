"""RQ: delayed tasks survive the loss of the machine whose worker runs RQ's scheduler.

The other RQ guarantees are the shared worker tests (test_queue.py, test_quota.py), which run on
every site; this one is RQ's own: its scheduler runs in one worker at a time, under a lock.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.queue_support import SITES, QueueSite, Site

RQ_SITE = pytest.mark.parametrize(
    "queue_site",
    [
        pytest.param(site, marks=[] if site in SITES else [pytest.mark.skip(reason="not in GMAIL_TEST_SITES")])
        for site in [Site("rq", "postgresql")]
    ],
    indirect=True,
    ids=lambda s: s.name,
)


@RQ_SITE
def test_another_worker_takes_over_the_scheduler_when_its_machine_is_lost(
    queue_site: QueueSite, gmail_sandbox: Any
) -> None:
    first = queue_site.start_worker(rq_worker="tests.queue_rq.QuickWorker")
    queue_site.wait_for(
        "the first worker to run the scheduler",
        lambda: "Acquired scheduler lock for" in (queue_site.dir / "worker-1.log").read_text(errors="replace"),
        60,
    )
    queue_site.start_worker(rq_worker="tests.queue_rq.QuickWorker")
    queue_site.wait_until_listening()
    queue_site.kill(first)  # the machine is lost: worker, work horse and scheduler
    gmail_sandbox.inject("throttled")  # the first attempt gets 421: the retry is a delayed task
    answer = queue_site.driver("request", {"count": 2, "tag": "scheduler"})
    log_ids = [m["log_id"] for m in answer["messages"]]
    # The second message needs no scheduler: the surviving worker sends it at once.
    queue_site.wait_for(
        "the message without a delay to be sent",
        lambda: [r["status"] for r in queue_site.log(log_ids)].count("sent") == 1,
        60,
    )
    [waiting] = [r for r in queue_site.log(log_ids) if r["status"] != "sent"]
    assert (waiting["status"], waiting["generation"]) == ("queued", 2)  # its retry waits for a scheduler
    # The lock expires 61 s after the lost scheduler's last heartbeat; then the survivor takes it.
    rows = queue_site.wait_for_status(log_ids, "sent", timeout=150)
    assert "Acquired scheduler lock for" in (queue_site.dir / "worker-2.log").read_text(errors="replace")
    assert sorted(r["attempts"] for r in rows) == [1, 2]
    received = [m.message["Message-ID"] for m in gmail_sandbox.messages]
    assert sorted(received) == sorted(m["message_id"] for m in answer["messages"])
