"""URLconf of tests/queue_settings.py: the view that queues messages, and the admin."""

from django.contrib import admin
from django.urls import path

from tests.queue_driver import send_view

urlpatterns = [path("queue-send/", send_view), path("admin/", admin.site.urls)]
