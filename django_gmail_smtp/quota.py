"""Gmail's daily sending limit, counted in the database so that every worker on every machine agrees.

Gmail lets a personal account send about 500 messages in any rolling 24 hours (Workspace: 2,000)
and answers more with ``550 5.4.5`` and a suspension of up to a day. This guard counts the
messages each account sends, in two small tables shared by all processes (``QuotaAccount``, one
row per account, and ``QuotaUse``, one row per message within the window), and refuses a message
that would go over the limit before Gmail sees it:

* :func:`reserve` takes a slot (or raises :class:`QuotaExceededError`). It first *updates* the
  account's row, which locks it (a row lock on PostgreSQL, MySQL and Oracle; the database's
  write lock on SQLite), then counts and inserts, all in one transaction: two processes can
  never both take the last slot, so the count cannot go over the limit.
* :func:`confirm` keeps the slot once the server accepted the message; :func:`release` gives
  it back when the message did not go out. A process that dies in between keeps the slot
  (counted, as Gmail may have accepted the message).
* :func:`block` records Gmail's own ``550 5.4.5`` (mail sent from elsewhere counts too): no
  slot is given until the block ends.

The queued backend holds a refused message (re-schedules it for when a slot frees up). The
synchronous ``EmailBackend`` uses the guard only when ``GMAIL_SMTP["QUOTA_SYNC"]`` is on (it
then costs a few queries per ``send_messages()`` call) through :func:`reserve_sync` and
:func:`settle`, and raises :class:`QuotaExceededError`.

Limits (``GMAIL_SMTP``): ``QUOTA_LIMIT`` (default 500) applies to ``smtp.gmail.com`` and
``smtp.googlemail.com``; ``QUOTA_LIMITS`` = ``{"you@example.com": 2000, "mailer-alias": 100}``
sets (or, with ``None``, lifts) the limit of one account, by its address or by the ``MAILERS``
alias that sends with it, for any host. ``QUOTA_WINDOW`` (seconds, 86,400), ``QUOTA_WARN_AT``
(fraction of the limit that logs a warning and sends :data:`quota_warning`, 0.8) and
``CLOCK`` (dotted path of a function returning an aware ``datetime``; for tests that run
workers in other processes) complete it. In one process, every function that reads the time
takes it as ``clock=`` instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import smtplib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, router, transaction
from django.db.models import F, Sum
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from .app_settings import app_setting, flag_setting, number_setting
from .causes import CATALOGUE
from .exceptions import GmailConfigError, GmailSMTPError, PickleByState, one_line
from .hosts import has_daily_limit
from .signals import quota_reached, quota_warning  # re-exported: quota.quota_warning keeps working

if TYPE_CHECKING:
    from .conf import SmtpConfig
    from .models import QuotaAccount

__all__ = [
    "QuotaExceededError",
    "Reservation",
    "Usage",
    "account_key",
    "block",
    "bypass",
    "confirm",
    "limit_for",
    "next_free",
    "now",
    "quota_reached",
    "quota_warning",
    "release",
    "reserve",
    "reserve_sync",
    "settle",
    "unblock",
    "usage",
]

logger = logging.getLogger("django_gmail_smtp.quota")


_bypass: contextvars.ContextVar[bool] = contextvars.ContextVar("gmail_smtp_quota_bypass", default=False)


class QuotaExceededError(PickleByState, GmailSMTPError, smtplib.SMTPException):
    """Not sent: the account's daily limit is used up (counted here, before Gmail refuses it).

    An ``SMTPException``, so ``fail_silently`` and ``except SMTPException`` treat it like
    Gmail's own ``550 5.4.5``. ``retry_at`` is when the next message can go.
    """

    cause = CATALOGUE["daily_quota"]
    stage = "quota"

    def __init__(self, message: str, *, account: str, used: int, limit: int | None, retry_at: datetime | None) -> None:
        super().__init__(message)
        self.account = account
        self.used = used
        self.limit = limit
        self.retry_at = retry_at


@dataclass(frozen=True)
class Reservation:
    """Slots taken by :func:`reserve`; settle it with :func:`confirm` or :func:`release`."""

    account: str
    use_id: int
    count: int


@dataclass(frozen=True)
class Usage:
    """An account's standing: messages counted in the window, its limit, when a slot frees up."""

    account: str
    used: int
    limit: int | None
    window: timedelta
    blocked_until: datetime | None
    next_free: datetime | None

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


# -- settings ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _import_clock(path: str) -> Callable[[], datetime]:
    clock = import_string(path)
    if not callable(clock):
        raise GmailConfigError(
            _("GMAIL_SMTP['CLOCK'] (%(path)s) is not a function.") % {"path": path},
            hint=_("Give the dotted path of a function that returns an aware datetime, or leave it unset."),
            check_id=None,
        )
    return clock  # type: ignore[no-any-return]


Clock = Callable[[], datetime]
"""What every function here takes as ``clock=``: an aware ``datetime`` now (default: :func:`now`)."""


def now() -> datetime:
    """The time the guard and the queue go by: ``GMAIL_SMTP["CLOCK"]``, else ``timezone.now()``.

    The setting reaches worker processes, which a test cannot hand a function to; in the same
    process, pass ``clock=`` to the functions of this module instead.
    """
    clock = app_setting("CLOCK")
    if clock is None:
        return timezone.now()
    function = _import_clock(clock) if isinstance(clock, str) else clock
    return function()


def window() -> timedelta:
    return timedelta(seconds=number_setting("QUOTA_WINDOW"))


def account_key(config: SmtpConfig) -> str:
    """What the limit is counted by: the signed-in address (lowercase), else ``@host``."""
    return config.username.strip().lower() or f"@{config.host.lower()}"


def limit_for(config: SmtpConfig) -> int | None:
    """The daily limit of the account ``config`` sends with; None: not limited."""
    limits = app_setting("QUOTA_LIMITS") or {}
    by_name = {str(name).strip().lower(): value for name, value in limits.items()}
    for name in (account_key(config), config.alias):
        if name is not None and name.lower() in by_name:
            return _limit_value(by_name[name.lower()], f"GMAIL_SMTP['QUOTA_LIMITS'][{name!r}]")
    if has_daily_limit(config.host):
        return _limit_value(app_setting("QUOTA_LIMIT"), "GMAIL_SMTP['QUOTA_LIMIT']")
    return None


def _limit_value(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GmailConfigError(
            _("%(where)s is %(value)r; it must be a whole number of messages (or None for no limit).")
            % {"where": where, "value": value},
            hint=_("Gmail allows about 500 messages a day for personal accounts and 2,000 for Workspace."),
            check_id=None,
        )
    return value


# -- the tables -------------------------------------------------------------------------------


def _db() -> str:
    from .models import QuotaAccount

    return router.db_for_write(QuotaAccount)


def _account(key: str) -> QuotaAccount:
    from .models import QuotaAccount

    db = _db()
    try:
        account, _created = QuotaAccount.objects.using(db).get_or_create(key=key)
    except IntegrityError:  # created meanwhile by another process
        account = QuotaAccount.objects.using(db).get(key=key)
    return account


def _used(account_pk: int, since: datetime, db: str) -> int:
    from .models import QuotaUse

    total = QuotaUse.objects.using(db).filter(account_id=account_pk, at__gt=since).aggregate(total=Sum("count"))
    return int(total["total"] or 0)


def _refusal(key: str, used: int, limit: int | None, retry_at: datetime | None, blocked: bool) -> QuotaExceededError:
    when = retry_at.isoformat(timespec="seconds") if retry_at is not None else _("unknown")
    if blocked:
        text = _(
            "Not sent: Gmail refused mail from %(account)s for exceeding its daily limit (550 5.4.5); "
            "nothing more is sent with it until %(when)s."
        ) % {"account": key, "when": when}
    else:
        text = _(
            "Not sent: %(account)s has sent %(used)d of its %(limit)d messages in the last %(hours)g hours "
            "(GMAIL_SMTP['QUOTA_LIMITS'] / ['QUOTA_LIMIT']); one more now would make Gmail suspend it. "
            "The next message can go at %(when)s."
        ) % {"account": key, "used": used, "limit": limit or 0, "hours": window().total_seconds() / 3600, "when": when}
    return QuotaExceededError(text, account=key, used=used, limit=limit, retry_at=retry_at)


def reserve(key: str, count: int = 1, *, limit: int | None, clock: Clock | None = None) -> Reservation:
    """Take ``count`` slots of the account ``key``; :class:`QuotaExceededError` if they would go over.

    Safe when many processes reserve at once: the account's row is locked (by updating it)
    before counting. ``limit=None`` counts without refusing.
    """
    from .models import QuotaAccount, QuotaUse

    account = _account(key)
    db = _db()
    span = window()
    with transaction.atomic(using=db):
        # Updating first takes the lock: a row lock, or SQLite's write lock, before anything is read.
        QuotaAccount.objects.using(db).filter(pk=account.pk).update(lock_version=F("lock_version") + 1)
        account = QuotaAccount.objects.using(db).get(pk=account.pk)
        current = (clock or now)()
        since = current - span
        QuotaUse.objects.using(db).filter(account_id=account.pk, at__lte=since).delete()
        used = _used(account.pk, since, db)
        if account.blocked_until is not None and account.blocked_until > current:
            raise _refusal(key, used, limit, account.blocked_until, blocked=True)
        if limit is not None and used + count > limit:
            raise _refusal(key, used, limit, _next_free(account, limit, count, 0, current, db), blocked=False)
        use = QuotaUse.objects.using(db).create(account_id=account.pk, at=current, count=count)
    after = used + count
    if limit:
        _announce(key, used, after, limit, current, account, db)
    return Reservation(key, use.pk, count)


def _announce(key: str, before: int, after: int, limit: int, current: datetime, account: Any, db: str) -> None:
    warn_at = number_setting("QUOTA_WARN_AT", allow_none=True)
    if warn_at is not None:
        mark = max(1, math.ceil(limit * warn_at))
        if before < mark <= after:
            logger.warning(
                "Gmail daily quota: %s has sent %d of %d messages in the last %g hours.",
                key,
                after,
                limit,
                window().total_seconds() / 3600,
            )
            quota_warning.send(sender=Reservation, account=key, used=after, limit=limit)
    if before < limit <= after:
        until = _next_free(account, limit, 1, 0, current, db)
        logger.warning("Gmail daily quota: %s has used all %d messages; the next can go at %s.", key, limit, until)
        quota_reached.send(sender=Reservation, account=key, used=after, limit=limit, until=until)


def confirm(reservation: Reservation | None, sent: int | None = None) -> None:
    """Keep the slots of messages the server accepted (``sent`` of them; default all)."""
    if reservation is None:
        return
    from .models import QuotaUse

    sent = reservation.count if sent is None else max(0, min(sent, reservation.count))
    uses = QuotaUse.objects.using(_db()).filter(pk=reservation.use_id)
    if sent == 0:
        uses.delete()
    elif sent != reservation.count:
        uses.update(count=sent)


def release(reservation: Reservation | None) -> None:
    """Give the slots back: the messages did not go out."""
    confirm(reservation, 0)


def block(key: str, *, until: datetime | None = None, reason: str = "", clock: Clock | None = None) -> datetime:
    """Gmail said ``550 5.4.5``: give no slot to ``key`` until ``until`` (default: one window from now)."""
    from .models import QuotaAccount

    account = _account(key)
    until = until or (clock or now)() + window()
    QuotaAccount.objects.using(_db()).filter(pk=account.pk).update(blocked_until=until, blocked_reason=reason[:1000])
    logger.warning("Gmail daily quota: %s is blocked until %s (%s).", key, until.isoformat(), reason or "550 5.4.5")
    quota_reached.send(sender=Reservation, account=key, used=None, limit=None, until=until)
    return until


def unblock(key: str) -> bool:
    """Lift a :func:`block` early (e.g. after checking in Gmail that sending works again)."""
    from .models import QuotaAccount

    return bool(
        QuotaAccount.objects.using(_db())
        .filter(key=key, blocked_until__isnull=False)
        .update(blocked_until=None, blocked_reason="")
    )


def _next_free(account: Any, limit: int, count: int, ahead: int, current: datetime, db: str) -> datetime:
    """When ``count`` slots are free for a message with ``ahead`` messages waiting before it."""
    from .models import QuotaUse

    span = window()
    blocked = account.blocked_until if account.blocked_until and account.blocked_until > current else None
    uses = list(
        QuotaUse.objects.using(db)
        .filter(account_id=account.pk, at__gt=current - span)
        .order_by("at", "pk")
        .values_list("at", "count")
    )
    # Free enough: used - expired + ahead + count <= limit. Walk the uses from the oldest.
    excess = sum(c for _, c in uses) + ahead + count - limit
    when = current
    for at, used in uses:
        if excess <= 0:
            break
        excess -= used
        when = at + span
    if excess > 0:  # more waiting than the window holds: at least a full window
        when = current + span
    return max(when, blocked) if blocked is not None else when


def next_free(key: str, limit: int | None, *, ahead: int = 0, count: int = 1, clock: Clock | None = None) -> datetime:
    """When a message of ``key`` (with ``ahead`` others waiting before it) can have a slot."""
    account = _account(key)
    current = (clock or now)()
    if limit is None:
        return max(current, account.blocked_until) if account.blocked_until else current
    return _next_free(account, limit, count, ahead, current, _db())


def usage(key: str, limit: int | None, *, clock: Clock | None = None) -> Usage:
    """``key``'s standing now (read-only)."""
    from .models import QuotaAccount

    db = _db()
    current = (clock or now)()
    account = QuotaAccount.objects.using(db).filter(key=key).first()
    if account is None:
        return Usage(key, 0, limit, window(), None, current)
    used = _used(account.pk, current - window(), db)
    blocked = account.blocked_until if account.blocked_until and account.blocked_until > current else None
    free = _next_free(account, limit, 1, 0, current, db) if limit is not None else (blocked or current)
    return Usage(key, used, limit, window(), blocked, free)


# -- the synchronous backend ------------------------------------------------------------------


@contextlib.contextmanager
def bypass() -> Iterator[None]:
    """Within this block :func:`reserve_sync` does nothing (the caller reserved already)."""
    token = _bypass.set(True)
    try:
        yield
    finally:
        _bypass.reset(token)


def reserve_sync(config: SmtpConfig, count: int, *, clock: Clock | None = None) -> Reservation | None:
    """For ``EmailBackend.send_messages()``: take ``count`` slots, or raise :class:`QuotaExceededError`.

    None (and no query) unless ``GMAIL_SMTP["QUOTA_SYNC"]`` is on and the account has a limit.
    """
    if count <= 0 or _bypass.get() or not flag_setting("QUOTA_SYNC"):
        return None
    limit = limit_for(config)
    if limit is None:
        return None
    return reserve(account_key(config), count, limit=limit, clock=clock)


def settle(reservation: Reservation | None, sent: int, error: BaseException | None = None) -> None:
    """After sending: keep the slots of the ``sent`` messages, give back the rest.

    ``error`` is what stopped the batch, if anything: Gmail's own ``550 5.4.5`` blocks the
    account (:func:`block`) so that no process tries again before the window has passed.
    """
    if reservation is None:
        return
    confirm(reservation, sent)
    found = getattr(error, "cause", None)
    if (
        error is not None
        and found is not None
        and found.id == "daily_quota"
        and not isinstance(error, QuotaExceededError)
    ):
        block(reservation.account, reason=one_line(error))
