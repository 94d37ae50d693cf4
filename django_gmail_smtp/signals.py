"""Signals sent once per message after ``send_messages()`` has its outcome.

Both are sent with ``sender`` = the backend class and the keyword arguments
``message`` (the ``EmailMessage``) and ``status`` (its
:class:`~django_gmail_smtp.delivery.DeliveryStatus`, also on
``message.gmail_smtp_status``). Receivers run in the sending thread after the
batch; an exception in a receiver is logged, never raised (the mail has gone
already, and an exception would invite a resend).
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["message_failed", "message_sent"]

message_sent = Signal()
"""The server accepted the message for at least one recipient (status ``sent`` or ``partial``)."""

message_failed = Signal()
"""The message reached no recipient (status ``failed`` or ``not_sent``)."""
