"""``manage.py gmail_rotate_keys``: re-encrypt every stored account secret under the current key.

Run it after putting a new key first (``SECRET_KEY`` with the old one in ``SECRET_KEY_FALLBACKS``,
or a new first entry of ``GMAIL_SMTP["ENCRYPTION_KEYS"]``); the old key can be removed once it
has succeeded. Exit status 1 when a secret could not be decrypted with any configured key.

The destination each secret is bound to (README.md#stored-secrets-go-only-where-they-were-entered-for)
is part of the encrypted payload, so it is kept as it is. Secrets bound to no destination (stored
before the binding and unreadable when ``migrate`` bound the others) are named: they are never
used and must be entered again.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils.translation import gettext as _

from ... import binding, crypto
from ...exceptions import GmailConfigError
from ...models import GmailAccount


class Command(BaseCommand):
    help = "Re-encrypt the secrets of stored Gmail accounts under the current key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only report which secrets are not yet under the current key.",
        )
        parser.add_argument("--database", default="default", help="The database to use (default: 'default').")

    def handle(self, *args: Any, dry_run: bool = False, database: str = "default", **options: Any) -> None:
        verbosity = int(options.get("verbosity", 1))
        try:
            key_id = crypto.current_key_id()
        except GmailConfigError as exc:
            raise CommandError(str(exc)) from None
        if verbosity >= 1:
            self.stdout.write(f"Current key: {key_id}")
        rotated: list[str] = []
        current: list[str] = []
        unreadable: list[str] = []
        unbound: list[str] = []
        with transaction.atomic(using=database):
            accounts = GmailAccount.objects.using(database).select_for_update().exclude(encrypted_secret="")
            for account in accounts.order_by("name"):
                if verbosity >= 2:
                    self.stdout.write(f"{account.name}... ", ending="")
                try:
                    up_to_date = crypto.is_current(account.encrypted_secret)
                    token = account.encrypted_secret if dry_run else crypto.rotate(account.encrypted_secret)
                    if _is_unbound(token):
                        unbound.append(account.name)
                except crypto.InvalidToken:
                    unreadable.append(account.name)
                    if verbosity >= 2:
                        self.stdout.write(self.style.ERROR("CANNOT DECRYPT"))
                    continue
                (current if up_to_date else rotated).append(account.name)
                if not dry_run:
                    account.encrypted_secret = token
                    account.save(update_fields=["encrypted_secret"])  # signals invalidate the cache
                if verbosity >= 2:
                    self.stdout.write(self.style.SUCCESS("OK" if up_to_date else "RE-ENCRYPTED"))
        if verbosity >= 1:
            if dry_run:
                self.stdout.write(
                    f"{len(rotated)} secret(s) under an older key, {len(current)} under the current key "
                    "(dry run: nothing changed)."
                )
            else:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Re-encrypted {len(rotated) + len(current)} secret(s) under the current key "
                        f"({len(rotated)} were under an older key)."
                    )
                )
        if unbound:
            self.stdout.write(
                self.style.WARNING(
                    _(
                        "%(count)d secret(s) are bound to no server (stored by an older version and not upgraded "
                        "by 'manage.py migrate'), so they are never used: enter them again in the admin (%(names)s)."
                    )
                    % {"count": len(unbound), "names": ", ".join(repr(name) for name in unbound)}
                )
            )
        if unreadable:
            names = ", ".join(repr(name) for name in unreadable)
            raise CommandError(
                f"Cannot decrypt the secret of {len(unreadable)} account(s): {names}. None of the configured keys "
                "opens them: put the key they were saved with back into SECRET_KEY_FALLBACKS (or at the end of "
                "GMAIL_SMTP['ENCRYPTION_KEYS']) and run this again, or enter their app passwords again in the "
                "admin.",
                returncode=1,
            )


def _is_unbound(token: str) -> bool:
    """True for a readable secret stored without its destination (never used; see the module docstring)."""
    try:
        return binding.unseal(crypto.decrypt(token)).destination is None
    except ValueError:  # not a payload at all: nothing to bind either way
        return False
