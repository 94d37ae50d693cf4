"""The public paths of this app's backends, as ``EMAIL_BACKEND`` and ``MAILERS`` name them.

* ``django_gmail_smtp.backend.EmailBackend``: sends through Gmail at once
  (:class:`~django_gmail_smtp.smtp_backend.EmailBackend`);
* ``django_gmail_smtp.backend.QueuedEmailBackend``: sends in the background with Django's Tasks
  framework (:class:`~django_gmail_smtp.queued.QueuedEmailBackend`, README.md#background-sending);
* :func:`build_envelope` and :func:`prep_address` (:mod:`.envelope`), as before.

Nothing is defined here: this module sits on top of the modules that define them, so neither of
them imports it (the queue's worker imports the SMTP backend from :mod:`.smtp_backend`).
"""

from __future__ import annotations

from .envelope import build_envelope, prep_address
from .queued import QueuedEmailBackend
from .smtp_backend import EmailBackend

__all__ = ["EmailBackend", "QueuedEmailBackend", "build_envelope", "prep_address"]
