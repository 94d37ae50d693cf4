"""An RQ worker for the scheduler take-over test: maintenance every 2 s instead of 30 s.

RQ's scheduler lock still expires 61 s after the lost worker's last heartbeat (not settable);
this only keeps the test from waiting for the surviving worker's next maintenance too.
"""

from django_gmail_smtp.rq_worker import Worker


class QuickWorker(Worker):
    maintenance_every = 2
