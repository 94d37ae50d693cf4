"""The round trip: prove that a message sent through SMTP arrives, and say how it arrived.

``gmail_check --round-trip`` (and the admin's "Send test email and confirm delivery") pass a
:class:`RoundTrip` to :func:`~django_gmail_smtp.diagnose.run_check`. After the SMTP steps it
has sent one uniquely tagged message from the configured From (``DEFAULT_FROM_EMAIL`` or
``--from``) to the account's own address; then it signs in to the account's mailbox with the
same credentials and adds these steps:

``imap_connect`` -> ``imap_auth`` -> ``imap_folders`` (special-use flags) ->
``round_trip_arrival`` (found by Message-ID; seconds since the 250) -> ``round_trip_folder``
(Spam fails) -> ``round_trip_from`` (rewritten by Gmail?) -> ``round_trip_authentication``
(SPF/DKIM/DMARC) -> ``round_trip_tls`` (the receiving hop) -> ``round_trip_cleanup`` ->
``imap_logout``

or, over POP3 (``via="pop3"``), ``pop_connect`` -> ``pop_auth`` -> the same round-trip steps ->
``pop_quit``. Every step is bounded (:mod:`.bounded_io`); the wait for the message by the round
trip's own timeout, counted from the server's 250.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, make_msgid
from typing import TYPE_CHECKING, Any, TypeVar

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import conf, rules
from .app_settings import app_setting
from .causes import CATALOGUE, Cause
from .conf import SmtpConfig
from .deadline import Deadline
from .envelope import build_envelope
from .exceptions import GmailConfigError, MailboxError, describe_error, explain_exception
from .session import Transcript

if TYPE_CHECKING:
    from .diagnosis import Run, Step
    from .imap import ImapClient, ImapFolder
    from .mailbox_session import MailboxSession
    from .pop import PopClient

Client = TypeVar("Client", bound="MailboxSession")

__all__ = [
    "IMAP",
    "POP3",
    "ROUND_TRIP_STEPS",
    "VIA",
    "Delivered",
    "RoundTrip",
    "auth_results",
    "receiving_hop",
]

IMAP, POP3 = "imap", "pop3"
VIA = (IMAP, POP3)
DEFAULT_TIMEOUT = 60.0
SUBJECT_PREFIX = "gmail_check round trip"

#: Every step the round trip adds, in order (the IMAP ones or the POP3 ones).
ROUND_TRIP_STEPS = (
    "round_trip_send",
    "imap_connect",
    "pop_connect",
    "imap_auth",
    "pop_auth",
    "imap_folders",
    "round_trip_arrival",
    "round_trip_folder",
    "round_trip_from",
    "round_trip_authentication",
    "round_trip_tls",
    "round_trip_cleanup",
    "imap_logout",
    "pop_quit",
)

STEP_TITLES = {
    "round_trip_send": gettext_lazy("Round-trip message"),
    "imap_connect": gettext_lazy("IMAP connection"),
    "pop_connect": gettext_lazy("POP3 connection"),
    "imap_auth": gettext_lazy("Mailbox sign-in"),
    "pop_auth": gettext_lazy("Mailbox sign-in"),
    "imap_folders": gettext_lazy("Mailbox folders"),
    "round_trip_arrival": gettext_lazy("Arrival of the test message"),
    "round_trip_folder": gettext_lazy("Folder it arrived in"),
    "round_trip_from": gettext_lazy("From address as delivered"),
    "round_trip_authentication": gettext_lazy("SPF, DKIM and DMARC"),
    "round_trip_tls": gettext_lazy("TLS of the receiving hop"),
    "round_trip_cleanup": gettext_lazy("Deleting the test message"),
    "imap_logout": gettext_lazy("IMAP LOGOUT"),
    "pop_quit": gettext_lazy("POP3 QUIT"),
}

FIRST_PAUSE = 1.0
"""Seconds between the first searches; the pause grows to :data:`LONGEST_PAUSE` (polite polling)."""
LONGEST_PAUSE = 5.0
POP_PAUSE = 5.0
POP_NEWEST = 20
"""Messages of the first POP3 listing whose header is read (newest first); later listings: every new one."""
"""Seconds between POP3 sessions (each poll signs in again: POP3 sees the mailbox as it was at sign-in)."""

FAILED_VERDICTS = frozenset({"fail", "softfail", "permerror", "temperror"})


# -- what the delivered header says (pure functions) ------------------------------------------


def _header(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _text(value: Any) -> str:
    """A header value as text (encoded words decoded), on one line."""
    if value is None:
        return ""
    decoded = email.header.decode_header(str(value))
    parts = []
    for chunk, charset in decoded:
        if isinstance(chunk, bytes):
            parts.append(chunk.decode(charset or "ascii", "replace"))
        else:
            parts.append(chunk)
    return re.sub(r"\s+", " ", "".join(parts)).strip()


def address_of(value: str) -> str:
    """The bare address of a From header (lower case)."""
    found = getaddresses([value])
    return found[0][1].strip().lower() if found else ""


_VERDICT = re.compile(r"\b(spf|dkim|dmarc|arc)\s*=\s*([a-z]+)", re.IGNORECASE)


def auth_results(values: Sequence[str]) -> dict[str, str | None]:
    """The spf/dkim/dmarc verdicts of the newest ``Authentication-Results`` header (RFC 8601).

    ``values`` are the header's values, newest (topmost) first. The first verdict of each
    method counts (a message can carry several DKIM signatures; the first is the author's).
    """
    verdicts: dict[str, str | None] = {"spf": None, "dkim": None, "dmarc": None}
    if not values:
        return verdicts
    for method, result in _VERDICT.findall(values[0]):
        method = method.lower()
        if method in verdicts and verdicts[method] is None:
            verdicts[method] = result.lower()
    return verdicts


_WITH = re.compile(r"\bwith\s+([A-Za-z0-9]+)", re.IGNORECASE)
_GOOGLE_TLS = re.compile(r"version=(?P<version>[A-Za-z0-9_.]+)\s+cipher=(?P<cipher>[A-Za-z0-9_-]+)")
_POSTFIX_TLS = re.compile(r"using\s+(?P<version>TLSv?[0-9.]+)\s+with\s+cipher\s+(?P<cipher>[A-Za-z0-9_-]+)")


def receiving_hop(values: Sequence[str]) -> dict[str, Any] | None:
    """What the server that took the message from the client recorded: the oldest ``Received``
    header with an SMTP ``with`` clause (``values`` newest first, as they appear).

    Returns ``{"received", "protocol", "tls", "tls_version", "cipher"}``; ``tls`` is True when the
    header shows TLS (ESMTPS/ESMTPSA, Gmail's ``version=... cipher=...``, Postfix's ``using TLS``),
    False when it shows plain SMTP, None when it does not say. None when there is no such header.
    """
    for value in reversed(values):
        text = re.sub(r"\s+", " ", value).strip()
        protocols = [word.upper() for word in _WITH.findall(text) if "SMTP" in word.upper()]
        if not protocols:  # "with LMTP" (local delivery), "with cipher ..." alone: not the hop
            continue
        protocol = protocols[0]
        details = _GOOGLE_TLS.search(text) or _POSTFIX_TLS.search(text)
        tls: bool | None = None
        if details is not None or protocol in ("ESMTPS", "ESMTPSA", "UTF8SMTPS", "UTF8SMTPSA"):
            tls = True
        elif protocol in ("SMTP", "ESMTP", "ESMTPA", "UTF8SMTP", "UTF8SMTPA"):
            tls = False
        return {
            "received": text[:500],
            "protocol": protocol,
            "tls": tls,
            "tls_version": details["version"] if details else None,
            "cipher": details["cipher"] if details else None,
        }
    return None


@dataclass
class Delivered:
    """The found message: where, when, and its header."""

    folder: str
    role: str
    seconds: float
    header: bytes = field(repr=False)
    internaldate: float | None = None
    uids: list[int] = field(default_factory=list)
    pop_number: int = 0
    imap_folder: ImapFolder | None = None


# -- the round trip ----------------------------------------------------------------------------


class RoundTrip:
    """What the round trip needs to know and what it found. One object per run.

    ``via``: ``"imap"`` (default) or ``"pop3"``. ``timeout``: seconds to wait for the message,
    counted from the server's 250. ``keep``: leave the message in the mailbox. ``from_email``:
    the From to send with (default ``DEFAULT_FROM_EMAIL``). ``sleep`` and ``clock`` are
    injectable for tests.
    """

    def __init__(
        self,
        *,
        via: str = IMAP,
        timeout: float = DEFAULT_TIMEOUT,
        keep: bool = False,
        from_email: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if via not in VIA:
            raise ValueError(f"via must be one of {VIA}, not {via!r}")
        self.via = via
        self.timeout = float(timeout)
        self.keep = keep
        self.from_email = from_email
        self.sleep = sleep
        self.clock = clock
        self.token = secrets.token_hex(8)
        self.message_id = ""
        self.sender = ""
        self.recipient = ""
        self.sent_at: float | None = None
        self.summary: dict[str, Any] = {"via": via}

    # -- hooks called by diagnose --
    def config_cause(self, config: SmtpConfig) -> Cause | None:
        """A reason the round trip cannot run with ``config`` (checked before any network use)."""
        if "@" not in config.username:
            return CATALOGUE["round_trip_no_address"]
        return None

    def message(self, config: SmtpConfig) -> tuple[str, list[str], bytes]:
        """The envelope and bytes of the tagged test message (built as the backend builds mail)."""
        from django.conf import settings
        from django.core.mail import EmailMessage
        from django.core.mail.utils import DNS_NAME

        self.sender = self.from_email or str(settings.DEFAULT_FROM_EMAIL)
        self.recipient = config.username
        self.message_id = make_msgid(idstring=f"gmail-check-{self.token}", domain=str(DNS_NAME))
        body = _(
            "This message was sent by 'manage.py gmail_check --round-trip' to prove delivery to "
            "%(to)s through %(host)s:%(port)s, from the machine %(machine)s at %(time)s. It is "
            "deleted once found, unless --keep was given."
        ) % {
            "to": self.recipient,
            "host": config.host,
            "port": config.port,
            "machine": socket.gethostname(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        }
        message = EmailMessage(
            f"{SUBJECT_PREFIX} {self.token}",
            body,
            self.sender,
            [self.recipient],
            headers={"Message-ID": self.message_id, "X-Gmail-Check-Round-Trip": self.token},
        )
        sender, recipients, data = build_envelope(message)
        self.summary.update(
            message_id=self.message_id, from_sent=address_of(self.sender) or self.sender, to=self.recipient
        )
        return sender, recipients, data

    def sent(self) -> None:
        """The server answered 250: the wait is counted from now."""
        self.sent_at = self.clock()

    # -- the mailbox steps --
    def receive(self, run: Run, config: SmtpConfig, timeout: float) -> None:
        """Sign in to the mailbox and add the round-trip steps to ``run``."""
        config = config if config.imap_host else conf.with_mailbox(config)
        host, port = (config.imap_host, config.imap_port) if self.via == IMAP else (config.pop_host, config.pop_port)
        self.summary.update(host=host, port=port, arrived=False, kept=self.keep)
        if self.sent_at is None:
            self.sent_at = self.clock()
        # The whole mailbox conversation: the wait plus a few step timeouts for sign-in and cleanup.
        deadline = Deadline(self.timeout + 4 * timeout, "overall", clock=self.clock)
        transcript = run.diagnosis.mailbox_transcript
        if self.via == IMAP:
            _ImapRound(self, run, config, timeout, deadline, transcript).walk()
        else:
            _PopRound(self, run, config, timeout, deadline, transcript).walk()

    def arrival_deadline(self) -> float:
        assert self.sent_at is not None
        return self.sent_at + self.timeout


def _title(name: str) -> str:
    return str(STEP_TITLES[name])


def describe_mailbox_error(exc: BaseException) -> str:
    """The server's words (or the error's), for the step's error field."""
    if isinstance(exc, MailboxError):
        return exc.reply or (str(exc.args[0]) if exc.args else type(exc).__name__)
    return describe_error(exc)


def _access_token(config: SmtpConfig) -> Callable[[bool], tuple[str, bool]] | None:
    if not config.uses_oauth2:
        return None

    def get(force: bool) -> tuple[str, bool]:
        from . import oauth

        token = oauth.access_token(config, force=force)
        return token.token, token.cached

    return get


class _Round:
    """Steps shared by IMAP and POP3: the analysis of what arrived."""

    protocol = ""

    def __init__(
        self,
        trip: RoundTrip,
        run: Run,
        config: SmtpConfig,
        timeout: float,
        deadline: Deadline,
        transcript: Transcript,
    ) -> None:
        self.trip = trip
        self.run = run
        self.config = config
        self.timeout = timeout
        self.deadline = deadline
        self.transcript = transcript

    def open(self, kind: type[Client]) -> Client:
        """A client of ``kind`` for this round trip (not connected yet)."""
        return kind(
            self.config,
            deadline=self.deadline,
            timeout=self.timeout,
            transcript=self.transcript,
            access_token=_access_token(self.config),
            redactor=self.run.diagnosis.redactor,
        )

    # -- failures --
    def _connect_cause(self, exc: BaseException, unreachable: str) -> Cause:
        found = getattr(exc, "cause", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
        if isinstance(exc, ssl.SSLCertVerificationError):
            found = explain_exception(exc, stage="tls")
        return found or CATALOGUE[unreachable]

    def _mailbox_cause(self, exc: BaseException, protocol_cause: str) -> Cause:
        found = getattr(exc, "cause", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
        if isinstance(exc, TimeoutError) and self.deadline.remaining() <= 0:
            return CATALOGUE["round_trip_timeout"]
        return CATALOGUE[protocol_cause]

    # -- the connection --
    def connect_step(self, name: str, client: ImapClient | PopClient, host: str, port: int, unreachable: str) -> bool:
        from .diagnosis import tls_facts
        from .session import make_ssl_context

        step = self.run.begin(
            name,
            _("%(protocol)s connection to %(host)s:%(port)s (implicit TLS)")
            % {"protocol": self.protocol, "host": host, "port": port},
        )
        try:
            greeting = client.connect()
        except Exception as exc:
            step.data = {"host": host, "port": port, "stage": getattr(exc, "stage", "") or client.stage}
            if isinstance(exc, ssl.SSLCertVerificationError):
                step.details.append(
                    _("Verified with the CA file %(file)s.") % {"file": self.config.ssl_cafile}
                    if self.config.ssl_cafile
                    else _("Verified with the system's CA certificates (no SSL_CAFILE set).")
                )
            self.run.fail(step, self._connect_cause(exc, unreachable), describe_mailbox_error(exc))
            return False
        sock = client.tls_socket
        if sock is not None:
            tls_facts(step, sock, self.config, make_ssl_context(self.config), host=host)
        step.details.insert(0, greeting)
        step.data.update(host=host, port=port, greeting=greeting)
        self.run.end(step)
        return True

    def auth_step(self, name: str, client: ImapClient | PopClient) -> bool:
        step = self.run.begin(name, _("Mailbox sign-in as %(username)s") % {"username": self.config.username})
        try:
            text = client.login()
        except GmailConfigError as exc:
            self.run.fail(
                step, CATALOGUE["oauth_extra_missing"] if exc.check_id == "gmail_smtp.E014" else None, exc.message
            )
            return False
        except Exception as exc:
            step.data = {"mechanism": client.mechanism}
            self.run.fail(step, self._mailbox_cause(exc, "imap_bad_credentials"), describe_mailbox_error(exc))
            return False
        step.details.append(text)
        step.details.append(_("method: %(mechanism)s") % {"mechanism": client.mechanism})
        step.data = {"username": self.config.username, "mechanism": client.mechanism, "reply": text}
        self.run.end(step)
        return True

    def not_arrived(self, step: Step, searched: Sequence[str]) -> None:
        step.details.append(
            _("Not found after %(seconds).1f s (searched: %(folders)s).")
            % {"seconds": self.trip.timeout, "folders": ", ".join(searched) or "-"}
        )
        step.data.update(arrived=False, searched=list(searched))
        self.run.fail(step, CATALOGUE["round_trip_timeout"], str(CATALOGUE["round_trip_timeout"].summary))

    def arrived(self, step: Step, found: Delivered) -> None:
        trip = self.trip
        step.details.append(
            _("Found %(seconds).1f s after the server's 250, in %(folder)s.")
            % {"seconds": found.seconds, "folder": found.folder}
        )
        step.details.append(_("Message-ID: %(id)s") % {"id": trip.message_id})
        delay = None
        if found.internaldate is not None:
            step.details.append(
                _("The server recorded its arrival at %(time)s.")
                % {"time": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(found.internaldate))}
            )
            delay = found.internaldate
        step.data.update(arrived=True, seconds=round(found.seconds, 3), folder=found.folder, internaldate=delay)
        trip.summary.update(arrived=True, seconds=round(found.seconds, 3), folder=found.folder, folder_role=found.role)
        self.run.end(step)

    # -- what arrived --
    def folder_step(self, found: Delivered) -> None:
        step = self.run.begin("round_trip_folder", _title("round_trip_folder"))
        step.data = {"folder": found.folder, "role": found.role}
        if found.role == "inbox":
            step.details.append(_("In the inbox (%(folder)s).") % {"folder": found.folder})
            if self.protocol == "POP3":
                step.details.append(_("POP3 shows only the inbox: a message in Spam would never have been seen."))
            self.run.end(step)
        elif found.role == "junk":
            step.details.append(_("In Spam (%(folder)s).") % {"folder": found.folder})
            self.run.fail(step, CATALOGUE["round_trip_spam"], str(CATALOGUE["round_trip_spam"].summary))
        else:
            step.details.append(_("Not in the inbox: found in %(folder)s.") % {"folder": found.folder})
            step.cause = CATALOGUE["round_trip_not_in_inbox"]
            self.run.end(step, "warning")

    def from_step(self, header: Message) -> None:
        trip = self.trip
        step = self.run.begin("round_trip_from", _title("round_trip_from"))
        delivered_text = _text(header.get("From"))
        delivered = address_of(delivered_text)
        sent = address_of(trip.sender) or trip.sender.lower()
        original = _text(header.get("X-Google-Original-From"))
        rewritten = bool(delivered) and delivered != sent
        step.data = {"sent": sent, "delivered": delivered, "rewritten": rewritten, "original_from": original or None}
        trip.summary.update(from_delivered=delivered or None, from_rewritten=rewritten)
        step.details.append(_("sent as: %(address)s") % {"address": sent})
        step.details.append(_("delivered as: %(address)s") % {"address": delivered_text or "-"})
        if original:
            step.details.append(_("X-Google-Original-From: %(value)s") % {"value": original})
        if not rewritten:
            self.run.end(step)
            return
        step.cause = CATALOGUE["round_trip_from_rewritten"]
        from django.conf import settings

        aliases = app_setting("FROM_ALIASES")
        for problem in rules.check_default_from_email(self.config, str(settings.DEFAULT_FROM_EMAIL), aliases):
            if address_of(str(settings.DEFAULT_FROM_EMAIL)) == sent:
                step.details.append(f"{problem.id}: {problem.message}")
        self.run.end(step, "warning")

    def authentication_step(self, header: Message) -> None:
        step = self.run.begin("round_trip_authentication", _title("round_trip_authentication"))
        values = [_text(value) for value in header.get_all("Authentication-Results") or []]
        verdicts = auth_results(values)
        self.trip.summary["authentication_results"] = verdicts
        step.data = {"verdicts": verdicts, "header": values[0][:1000] if values else None}
        if not values:
            step.details.append(
                _(
                    "No Authentication-Results header: the message did not pass a receiving mail "
                    "exchanger that checks SPF, DKIM and DMARC (usual for mail to the sending account itself)."
                )
            )
            self.run.end(step, "skipped")
            return
        shown = ", ".join(f"{method}={verdict or '-'}" for method, verdict in verdicts.items())
        step.details.append(shown)
        if any(verdict in FAILED_VERDICTS for verdict in verdicts.values()):
            step.cause = CATALOGUE["round_trip_auth_failed"]
            self.run.end(step, "warning")
            return
        self.run.end(step)

    def tls_step(self, header: Message) -> None:
        step = self.run.begin("round_trip_tls", _title("round_trip_tls"))
        hop = receiving_hop([_text(value) for value in header.get_all("Received") or []])
        self.trip.summary["tls"] = hop
        step.data = {"hop": hop}
        if hop is None:
            step.details.append(_("No Received header with an SMTP hop: the receiving side does not say."))
            self.run.end(step, "skipped")
            return
        shown = re.split(r"\s+id\s+|;", hop["received"])[0]  # "from ... by ... with ESMTPSA"
        step.details.append(shown if len(shown) <= 160 else shown[:159] + "…")
        if hop["tls"] is True:
            version = hop["tls_version"] or hop["protocol"]
            step.details.append(
                _("received over TLS (%(version)s%(cipher)s)")
                % {"version": version, "cipher": f", {hop['cipher']}" if hop["cipher"] else ""}
            )
            self.run.end(step)
        elif hop["tls"] is False:
            step.details.append(_("received without TLS (%(protocol)s)") % {"protocol": hop["protocol"]})
            step.cause = CATALOGUE["round_trip_no_tls"]
            self.run.end(step, "warning")
        else:
            step.details.append(_("The header does not say whether TLS was used (%(protocol)s).") % hop)
            self.run.end(step, "skipped")

    def cleanup_step(self, kept: str, delete: Callable[[], str]) -> None:
        """Delete the test message (``delete()`` says what it did), or keep it with ``--keep``.
        A failure is a warning: the message was delivered, it only stays behind."""
        trip = self.trip
        trip.summary["deleted"] = False
        if trip.keep:
            self.run.skip("round_trip_cleanup", _title("round_trip_cleanup"), kept)
            return
        step = self.run.begin("round_trip_cleanup", _title("round_trip_cleanup"))
        try:
            done = delete()
        except Exception as exc:
            step.error = describe_mailbox_error(exc)
            step.cause = CATALOGUE["round_trip_cleanup_failed"]
            self.run.end(step, "warning")
            return
        step.details.append(done)
        step.data = {"done": done}
        trip.summary["deleted"] = True
        self.run.end(step)

    def analyse(self, found: Delivered) -> None:
        header = _header(found.header)
        self.folder_step(found)
        self.from_step(header)
        self.authentication_step(header)
        self.tls_step(header)

    def pause(self, number: int, longest: float) -> float:
        """How long to wait before search ``number`` + 1: growing, and never past the arrival deadline."""
        left = self.trip.arrival_deadline() - self.trip.clock()
        return max(0.0, min(FIRST_PAUSE * (1.5**number), longest, left))


class _ImapRound(_Round):
    protocol = "IMAP"

    def walk(self) -> None:
        from .imap import ImapClient

        client = self.open(ImapClient)
        try:
            if not self.connect_step(
                "imap_connect", client, self.config.imap_host, self.config.imap_port, "imap_unreachable"
            ):
                return
            if not self.auth_step("imap_auth", client):
                return
            folders = self.folders_step(client)
            if folders is None:
                return
            found = self.wait(client, folders)
            if found is None:
                return
            self.analyse(found)
            self.cleanup(client, found, folders)
            self.logout(client)
        finally:
            client.abort()

    def folders_step(self, client: ImapClient) -> dict[str, ImapFolder] | None:
        from .imap import ImapFolder

        step = self.run.begin("imap_folders", _title("imap_folders"))
        try:
            listed = client.folders()
        except Exception as exc:
            self.run.fail(step, self._mailbox_cause(exc, "imap_no_folder"), describe_mailbox_error(exc))
            return None
        roles: dict[str, ImapFolder] = {}
        for folder in listed:
            role = folder.role
            if role and role not in roles and folder.selectable:
                roles[role] = folder
        roles.setdefault("inbox", ImapFolder(wire="INBOX", name="INBOX"))
        for role, label in (
            ("inbox", _("inbox")),
            ("junk", _("Spam (\\Junk)")),
            ("all", _("All Mail (\\All)")),
            ("trash", _("Trash (\\Trash)")),
        ):
            shown = roles[role].name if role in roles else _("(none)")
            step.details.append(_("%(role)s: %(folder)s") % {"role": label, "folder": shown})
        step.data = {
            "count": len(listed),
            "special_use": {role: folder.name for role, folder in roles.items()},
            "capabilities": sorted(client.capabilities),
        }
        self.trip.summary["folders"] = dict(step.data["special_use"])
        self.run.end(step)
        return roles

    def wait(self, client: ImapClient, roles: dict[str, ImapFolder]) -> Delivered | None:
        trip = self.trip
        step = self.run.begin(
            "round_trip_arrival",
            _("Waiting for the test message (up to %(seconds)s s)") % {"seconds": f"{trip.timeout:g}"},
        )
        order = [roles[role] for role in ("inbox", "junk", "all") if role in roles]
        searched = [folder.name for folder in order]
        step.data = {"message_id": trip.message_id, "searched": searched, "idle": client.offers_idle, "searches": 0}
        number = 0
        try:
            while True:
                step.data["searches"] = number + 1
                for folder in order:
                    client.select(folder)
                    uids = client.search_message_id(trip.message_id)
                    if uids:
                        seconds = max(0.0, trip.clock() - (trip.sent_at or 0.0))
                        fetched = client.fetch(uids[0])
                        found = Delivered(
                            folder=folder.name,
                            role=folder.role or "other",
                            seconds=seconds,
                            header=fetched.header,
                            internaldate=fetched.internaldate,
                            uids=uids,
                            imap_folder=folder,
                        )
                        self.arrived(step, found)
                        return found
                wait = self.pause(number, LONGEST_PAUSE)
                if wait <= 0:
                    self.not_arrived(step, searched)
                    return None
                number += 1
                if client.offers_idle:
                    client.select(order[0])
                    client.idle(wait)
                else:
                    trip.sleep(wait)
        except Exception as exc:
            self.run.fail(step, self._mailbox_cause(exc, "imap_protocol"), describe_mailbox_error(exc))
            return None

    def cleanup(self, client: ImapClient, found: Delivered, roles: dict[str, ImapFolder]) -> None:
        assert found.imap_folder is not None
        folder = found.imap_folder
        self.cleanup_step(
            _("--keep: the test message stays in %(folder)s.") % {"folder": found.folder},
            lambda: client.delete(folder, found.uids, self.trip.message_id, roles.get("trash")),
        )

    def logout(self, client: ImapClient) -> None:
        step = self.run.begin("imap_logout", _title("imap_logout"))
        try:
            text = client.logout()
        except Exception as exc:
            step.error = describe_mailbox_error(exc)
            self.run.end(step, "warning")
            return
        if text:
            step.details.append(text)
        self.run.end(step)


class _PopRound(_Round):
    protocol = "POP3"

    def client(self) -> PopClient:
        from .pop import PopClient

        return self.open(PopClient)

    def walk(self) -> None:
        client = self.client()
        try:
            if not self.connect_step(
                "pop_connect", client, self.config.pop_host, self.config.pop_port, "pop_unreachable"
            ):
                return
            if not self.auth_step("pop_auth", client):
                return
            result = self.wait(client)
            if result is None:
                return
            client, found = result
            self.analyse(found)
            self.cleanup(client, found)
            self.quit(client)
        finally:
            client.abort()

    def wait(self, client: PopClient) -> tuple[PopClient, Delivered] | None:
        trip = self.trip
        step = self.run.begin(
            "round_trip_arrival",
            _("Waiting for the test message (up to %(seconds)s s)") % {"seconds": f"{trip.timeout:g}"},
        )
        step.data = {"message_id": trip.message_id, "searched": ["INBOX"], "searches": 0, "sessions": 1}
        seen: set[str] | None = None
        number = 0
        try:
            while True:
                step.data["searches"] = number + 1
                listed = client.message_ids()
                if seen is None:
                    # Only the newest messages of the first listing can be ours; later ones are new.
                    seen = {uid for _number, uid in listed[POP_NEWEST:]}
                for message_number, uid in listed:
                    if uid in seen:
                        continue
                    header = client.header(message_number)
                    seen.add(uid)
                    if trip.message_id in _message_ids(header):
                        found = Delivered(
                            folder="INBOX",
                            role="inbox",
                            seconds=max(0.0, trip.clock() - (trip.sent_at or 0.0)),
                            header=header,
                            pop_number=message_number,
                        )
                        self.arrived(step, found)
                        return client, found
                wait = self.pause(number, POP_PAUSE)
                if wait <= 0:
                    client.quit()
                    self.not_arrived(step, ["INBOX"])
                    return None
                number += 1
                client.quit()  # POP3 sees the maildrop as it was at sign-in: sign in again
                trip.sleep(wait)
                client = self.client()
                client.connect()
                client.login()
                step.data["sessions"] += 1
        except Exception as exc:
            client.abort()
            self.run.fail(step, self._mailbox_cause(exc, "pop_protocol"), describe_mailbox_error(exc))
            return None

    def cleanup(self, client: PopClient, found: Delivered) -> None:
        def delete() -> str:
            reply = client.delete(found.pop_number)
            return _("DELE %(number)s: %(reply)s (removed at QUIT)") % {"number": found.pop_number, "reply": reply}

        self.cleanup_step(_("--keep: the test message stays in the mailbox."), delete)

    def quit(self, client: PopClient) -> None:
        step = self.run.begin("pop_quit", _title("pop_quit"))
        try:
            text = client.quit()
        except Exception as exc:
            step.error = describe_mailbox_error(exc)
            if self.trip.summary.get("deleted"):
                step.cause = CATALOGUE["round_trip_cleanup_failed"]  # DELE takes effect only at QUIT
                self.trip.summary["deleted"] = False
            self.run.end(step, "warning")
            return
        step.details.append(text)
        self.run.end(step)


def _message_ids(header: bytes) -> list[str]:
    parsed = _header(header)
    return [str(value).strip() for value in parsed.get_all("Message-ID") or []]
