from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class GmailSmtpConfig(AppConfig):
    name = "django_gmail_smtp"
    label = "gmail_smtp"
    verbose_name = _("Gmail SMTP")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import register_checks

        register_checks()

        from .accounts import connect_signals

        connect_signals()
