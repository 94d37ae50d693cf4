"""The app's signals: one per message after ``send_messages()`` has its outcome, and the
daily-limit guard's (:mod:`~django_gmail_smtp.quota`).

The per-message signals:

Both are sent with ``sender`` = the backend class and the keyword arguments
``message`` (the ``EmailMessage``) and ``status`` (its
:class:`~django_gmail_smtp.delivery.DeliveryStatus`, also on
``message.gmail_smtp_status``). Receivers run in the sending thread after the
batch; an exception in a receiver is logged, never raised (the mail has gone
already, and an exception would invite a resend).
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["message_failed", "message_sent", "quota_reached", "quota_warning"]

message_sent = Signal()
"""The server accepted the message for at least one recipient (status ``sent`` or ``partial``)."""

message_failed = Signal()
"""The message reached no recipient (status ``failed`` or ``not_sent``)."""

quota_warning = Signal()
"""An account's usage reached ``QUOTA_WARN_AT`` of its limit. Keyword arguments: ``account``
(the address), ``used``, ``limit``. Sent once each time the usage crosses that mark."""

quota_reached = Signal()
"""An account has no slot left: the last one was taken, or Gmail said ``550 5.4.5`` (:func:`block`).
Keyword arguments: ``account``, ``used``, ``limit`` (``None`` after a block), ``until``
(when the next slot frees up, or the block ends)."""
