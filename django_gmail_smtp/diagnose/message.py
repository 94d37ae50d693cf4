"""The test message of ``--send-to`` and the admin's "Send test email", built as the backend
builds mail; its text says where it was sent from."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

from django.utils.translation import gettext as _

from ..conf import SmtpConfig
from ..envelope import build_envelope

__all__ = ["build_message"]


def build_message(
    config: SmtpConfig, send_to: Sequence[str], from_email: str | None, *, from_admin: bool = False
) -> tuple[str, list[str], bytes]:
    """The envelope and bytes of the test message, built exactly as the backend builds mail.

    It says where it was sent from: ``manage.py gmail_check``, or the admin's “Send test email”.
    """
    from django.conf import settings
    from django.core.mail import EmailMessage

    sender = from_email or (config.username if "@" in config.username else settings.DEFAULT_FROM_EMAIL)
    if from_admin:
        subject = _("Test email from the Django admin")
        body = _(
            "This message was sent from the Django admin (“Send test email” on a Gmail account) to test "
            "sending through %(host)s:%(port)s as %(username)s, from the machine %(machine)s at %(time)s.\n\n"
            "If you can read it, Django can send mail with this account."
        )
    else:
        subject = _("gmail_check test message")
        body = _(
            "This message was sent by 'manage.py gmail_check' to test sending through "
            "%(host)s:%(port)s as %(username)s, from the machine %(machine)s at %(time)s.\n\n"
            "If you can read it, Django can send mail with this configuration."
        )
    body %= {
        "host": config.host,
        "port": config.port,
        "username": config.username or "-",
        "machine": socket.gethostname(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    # Built like the backend builds mail, without creating a backend (which would resolve,
    # and possibly look up a stored account, on its own).
    return build_envelope(EmailMessage(subject, body, sender, list(send_to)))
