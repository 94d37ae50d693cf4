"""Django's Tasks framework: ``django.tasks`` on Django 6.x, the ``django-tasks`` backport on 5.2.

Imported only by the queued backend when it is used, so that the rest of the app works without
either (install the ``tasks`` extra: ``pip install "django-gmail-smtp[tasks]"``).
"""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME, task_backends
    from django.tasks.base import Task

    SOURCE = "django.tasks"
except ImportError:  # Django 5.2: the backport, if installed
    from django_tasks import (  # type: ignore[no-redef,assignment,import-not-found,unused-ignore]
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        task_backends,
    )
    from django_tasks.base import Task  # type: ignore[no-redef,assignment,import-not-found,unused-ignore]

    SOURCE = "django_tasks"

__all__ = ["DEFAULT_TASK_BACKEND_ALIAS", "DEFAULT_TASK_QUEUE_NAME", "SOURCE", "Task", "task_backends"]

TaskBackend = Any
"""A Tasks backend instance (``BaseTaskBackend`` of whichever framework is in use)."""
