"""Stored Gmail accounts for the resolver, cached so that sending costs no database query.

:func:`account_options` is what :func:`django_gmail_smtp.conf.resolve` calls when the
configuration names an account (``account="shop"``, ``MAILERS`` OPTIONS ``"account"``, or
``GMAIL_SMTP["ACCOUNT"]``). Its values rank below keyword arguments / OPTIONS and above
settings, the environment and defaults.

Caching, through Django's cache framework (the ``default`` cache), so that it also works across
processes that share a cache (Redis, Memcached, database, file):

* ``gmail_smtp:accounts:v1:generation`` holds a random token, replaced whenever an account is
  saved or deleted, and again when that transaction commits;
* ``gmail_smtp:accounts:v1:<token>`` holds a snapshot of every account, secrets still
  encrypted (the plaintext never enters the cache).

A lookup is two cache reads and one Fernet decryption; after a change, the first lookup reads
all accounts in one query. A process that reads the snapshot while another saves can only
store it under the old token, which nobody asks for any more. With a per-process cache
(``LocMemCache``, Django's default) other processes see a change only when their entry expires
(the cache's ``TIMEOUT``, 300 s by default): use a shared cache when several processes send.
Updates made with ``QuerySet.update()`` send no signal: call :func:`invalidate` after them.

Name ``"default"``: an account called ``default`` if there is one, else the account marked
*default account* (``is_default``; at most one is).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.db import DatabaseError, connections, router, transaction
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from .exceptions import GmailConfigError
from .models import GmailAccount, decrypt_secret

__all__ = [
    "DEFAULT_NAME",
    "account_options",
    "connect_signals",
    "find_account",
    "invalidate",
    "snapshot",
    "stored_name",
]

logger = logging.getLogger("django_gmail_smtp")

DEFAULT_NAME = "default"
CACHE_ALIAS = DEFAULT_CACHE_ALIAS
KEY_PREFIX = "gmail_smtp:accounts:v1"
GENERATION_KEY = f"{KEY_PREFIX}:generation"
# Set on a connection whose open transaction changed accounts: what it reads then may be
# rolled back, so it is not cached until the transaction ends.
_DIRTY = "_gmail_smtp_accounts_changed"

FIELDS = (
    "name",
    "username",
    "auth_method",
    "encrypted_secret",
    "host",
    "port",
    "security",
    "timeout",
    "enabled",
    "is_default",
    "from_aliases",
)

Snapshot = dict[str, Any]  # {"accounts": {name: {field: value}}, "default": name | None}


# -- the cache ------------------------------------------------------------------------------


def _generation(create: bool = True) -> str | None:
    """The current generation token; None when the cache stores nothing (DummyCache) or fails."""
    cache = caches[CACHE_ALIAS]
    try:
        token = cache.get(GENERATION_KEY)
        if token is None and create:
            cache.add(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
            token = cache.get(GENERATION_KEY)
    except Exception:  # a cache outage must not stop mail: read the database instead
        logger.warning("Gmail accounts: the cache is not available; reading the database.", exc_info=True)
        return None
    return token if isinstance(token, str) else None


def invalidate() -> None:
    """Make every process read the accounts from the database again (on its next lookup)."""
    try:
        caches[CACHE_ALIAS].set(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception:
        logger.warning("Gmail accounts: could not invalidate the cached accounts.", exc_info=True)


def _on_change(sender: type[GmailAccount], using: str = "default", **kwargs: Any) -> None:
    """post_save / post_delete: invalidate now, and again once the transaction commits."""
    connection = connections[using]
    if connection.in_atomic_block:
        setattr(connection, _DIRTY, True)
    invalidate()
    transaction.on_commit(invalidate, using=using)


def connect_signals() -> None:
    """Wire the invalidation to saves and deletes (called from ``AppConfig.ready()``)."""
    post_save.connect(_on_change, sender=GmailAccount, dispatch_uid="gmail_smtp.accounts.save")
    post_delete.connect(_on_change, sender=GmailAccount, dispatch_uid="gmail_smtp.accounts.delete")


# -- reading --------------------------------------------------------------------------------


def _table_exists(alias: str) -> bool:
    connection = connections[alias]
    with connection.cursor() as cursor:
        return GmailAccount._meta.db_table in connection.introspection.table_names(cursor)


def _load(alias: str) -> Snapshot | None:
    """Every account in one query; None when the table does not exist yet (before migrate)."""
    connection = connections[alias]
    # Inside a transaction a failed query would break it: isolate it in a savepoint.
    guard = transaction.atomic(using=alias) if connection.in_atomic_block else contextlib.nullcontext()
    try:
        with guard:
            rows = list(GmailAccount.objects.using(alias).values(*FIELDS))
    except DatabaseError:
        if _table_exists(alias):
            raise
        logger.warning(
            "Gmail accounts: the table %s does not exist (run 'manage.py migrate'); "
            "using the settings instead of a stored account.",
            GmailAccount._meta.db_table,
        )
        return None
    default = next((row["name"] for row in rows if row["is_default"]), None)
    return {"accounts": {row["name"]: row for row in rows}, "default": default}


def snapshot() -> Snapshot | None:
    """Every stored account (secrets encrypted), from the cache when possible.

    None before migrations have run.
    """
    alias = router.db_for_read(GmailAccount)
    connection = connections[alias]
    if not connection.in_atomic_block and getattr(connection, _DIRTY, False):
        setattr(connection, _DIRTY, False)  # that transaction is over, committed or not
    cacheable = not getattr(connection, _DIRTY, False)
    token = _generation() if cacheable else None
    cache = caches[CACHE_ALIAS]
    key = f"{KEY_PREFIX}:{token}"
    if token is not None:
        try:
            cached = cache.get(key)
        except Exception:
            cached, token = None, None
        if isinstance(cached, dict):
            return cached
    data = _load(alias)
    if data is not None and token is not None:
        with contextlib.suppress(Exception):
            cache.set(key, data)
    return data


def _where(name: str) -> str:
    return _("account=%(name)r, MAILERS OPTIONS 'account' or GMAIL_SMTP['ACCOUNT']") % {"name": name}


def find_account(name: str, data: Snapshot) -> dict[str, Any]:
    """The snapshot entry ``name`` refers to; :class:`GmailConfigError` if there is none."""
    accounts = data["accounts"]
    if name in accounts:
        return dict(accounts[name])
    if name == DEFAULT_NAME and data["default"] in accounts:
        return dict(accounts[data["default"]])
    names = ", ".join(repr(n) for n in sorted(accounts)) or _("none")
    if name == DEFAULT_NAME:
        message = _(
            "The configuration asks for the stored Gmail account 'default' (%(where)s), but no account "
            "is called 'default' and none is marked as the default account."
        ) % {"where": _where(name)}
    else:
        message = _("The configuration asks for the stored Gmail account %(name)r (%(where)s), but there is none.") % {
            "name": name,
            "where": _where(name),
        }
    raise GmailConfigError(
        message,
        hint=_(
            "Add the account in the admin (Gmail SMTP, Gmail accounts) or correct the name; stored accounts: %(names)s."
        )
        % {"names": names},
        check_id="gmail_smtp.E022",
    )


@sensitive_variables()
def account_options(name: str) -> dict[str, Any] | None:
    """Resolver options of a stored account: host, port, username, use_tls, use_ssl, timeout,
    auth_method, and the password or the oauth_client_id/_secret/_refresh_token.

    None before migrations have run (the resolver then uses the settings). Raises
    :class:`GmailConfigError` for an unknown account (``gmail_smtp.E022``), a disabled one
    (E023) or an app-password account without its password (E024),
    :class:`~django_gmail_smtp.exceptions.SecretDecryptionError` (E025) when its secret cannot
    be decrypted, and :class:`~django_gmail_smtp.exceptions.SecretDestinationError` (E020,
    E021) when it was entered for another host, port, security, username or token endpoint (or
    for none). An OAuth2 account's missing parts are left to the OAuth2 rules (E015, E016), an
    unknown sign-in method to the resolver (E017). Costs no database query once cached.
    """
    data = snapshot()
    if data is None:
        return None
    entry = find_account(name, data)
    account = entry["name"]
    if not entry["enabled"]:
        raise GmailConfigError(
            _("The stored Gmail account %(name)r is disabled, so no mail can be sent with it.") % {"name": account},
            hint=_("Enable it in the admin (Gmail SMTP, Gmail accounts), or configure another account."),
            check_id="gmail_smtp.E023",
        )
    server = {
        "host": entry["host"],
        "port": entry["port"],
        "username": entry["username"],
        "use_tls": entry["security"] == GmailAccount.Security.STARTTLS,
        "use_ssl": entry["security"] == GmailAccount.Security.SSL,
        "timeout": entry["timeout"],
    }
    # Checked here, where it is decrypted, against the very values the backend will use: a cached
    # snapshot cannot carry a secret to a host it was not entered for.
    secret = decrypt_secret(
        account,
        entry["encrypted_secret"],
        host=entry["host"],
        port=entry["port"],
        security=entry["security"],
        username=entry["username"],
    )
    if entry["auth_method"] == GmailAccount.AuthMethod.OAUTH2:
        # What is missing (client, refresh token) is reported by the OAuth2 rules (E015, E016),
        # with the same words as for settings, when the backend starts.
        return server | {
            "auth_method": GmailAccount.AuthMethod.OAUTH2.value,
            "oauth_client_id": secret.get("client_id", ""),
            "oauth_client_secret": secret.get("client_secret", ""),
            "oauth_refresh_token": secret.get("refresh_token", ""),
        }
    if entry["auth_method"] != GmailAccount.AuthMethod.APP_PASSWORD:
        return server | {"auth_method": entry["auth_method"]}  # the resolver's E017 names it
    password = secret.get("password", "")
    if not password:
        raise GmailConfigError(
            _("The stored Gmail account %(name)r has no app password.") % {"name": account},
            hint=_("Enter its app password on the account's admin page (Gmail SMTP, Gmail accounts)."),
            check_id="gmail_smtp.E024",
        )
    return server | {"password": password, "auth_method": GmailAccount.AuthMethod.APP_PASSWORD.value}


def stored_name(name: str) -> str:
    """The name of the stored account ``name`` refers to (``"default"``: the one marked so); ``name`` if none."""
    data = snapshot()
    if data is None:
        return name
    try:
        return str(find_account(name, data)["name"])
    except GmailConfigError:
        return name
