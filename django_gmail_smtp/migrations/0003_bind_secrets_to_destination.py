"""Bind every stored secret to the destination it is stored with (README.md#security), once.

Before this migration a secret was encrypted alone; from now on it is encrypted together with the
host, port, security mode and username (and, for OAuth2 parts, the token endpoint) it may be sent
to, and a secret bound to nothing is never used. This is the one place where a secret gets bound
to the values its row holds without being typed again: the row's values at upgrade time are the
ones the secret was being used with.

A secret the configured keys cannot decrypt now is left as it is: the admin reports it as before,
and once readable again (old key put back) it must be entered again (``gmail_smtp.E021``). Going
back to 0002 removes the binding, so that the previous version reads the secrets as it did.
"""

from typing import Any

from django.db import migrations


def bind_existing_secrets(apps: Any, schema_editor: Any) -> None:
    from django_gmail_smtp import binding, crypto

    account_model = apps.get_model("gmail_smtp", "GmailAccount")
    alias = schema_editor.connection.alias
    changed = False
    for account in account_model.objects.using(alias).exclude(encrypted_secret="").order_by("pk"):
        try:
            sealed = binding.unseal(crypto.decrypt(account.encrypted_secret))
        except (crypto.InvalidToken, ValueError, UnicodeError):
            continue  # unreadable now: stays unbound, reported as today
        if sealed.destination is not None:
            continue
        destination = binding.destination_for(
            sealed.secret,
            host=account.host,
            port=account.port,
            security=account.security,
            username=account.username,
        )
        account.encrypted_secret = crypto.encrypt(binding.seal(sealed.secret, destination))
        account.save(update_fields=["encrypted_secret"])
        changed = True
    if changed:
        _forget_cached_accounts()


def unbind_secrets(apps: Any, schema_editor: Any) -> None:
    import json

    from django_gmail_smtp import binding, crypto

    account_model = apps.get_model("gmail_smtp", "GmailAccount")
    alias = schema_editor.connection.alias
    for account in account_model.objects.using(alias).exclude(encrypted_secret="").order_by("pk"):
        try:
            sealed = binding.unseal(crypto.decrypt(account.encrypted_secret))
        except (crypto.InvalidToken, ValueError, UnicodeError):
            continue
        if sealed.destination is None:
            continue
        account.encrypted_secret = crypto.encrypt(json.dumps(sealed.secret, sort_keys=True))
        account.save(update_fields=["encrypted_secret"])
    _forget_cached_accounts()


def _forget_cached_accounts() -> None:
    """Processes that cached the accounts before the migration read them again (this model sends no signal)."""
    from django_gmail_smtp.accounts import invalidate

    invalidate()


class Migration(migrations.Migration):
    dependencies = [
        ("gmail_smtp", "0002_delivery_log_and_quota"),
    ]

    operations = [
        migrations.RunPython(bind_existing_secrets, unbind_secrets, elidable=False),
    ]
