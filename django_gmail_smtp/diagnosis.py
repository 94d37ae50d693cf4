"""The result of a diagnosis: its steps, their statuses, the cause, the exit status.

What :mod:`.diagnose` (the SMTP steps of ``gmail_check`` and the admin's buttons) and
:mod:`.roundtrip` (the mailbox steps of ``--round-trip``) both fill in: :class:`Step` and
:class:`Diagnosis`, the :class:`Run` that opens and closes steps as they go, and
:func:`tls_facts`, what a TLS connection shows (for the SMTP server and for the mailbox alike).
Both modules build on this one; neither imports the other's internals.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from . import conf
from .causes import CATALOGUE, Cause
from .conf import SmtpConfig
from .exit_status import exit_code
from .redaction import Redactor
from .rules import Problem
from .session import Transcript

__all__ = [
    "FAILED",
    "OK",
    "SCHEMA_VERSION",
    "SKIPPED",
    "STATUSES",
    "WARNING",
    "Diagnosis",
    "Run",
    "Step",
    "StepCallback",
    "tls_facts",
]

OK, WARNING, FAILED, SKIPPED = "ok", "warning", "failed", "skipped"
STATUSES = (OK, WARNING, FAILED, SKIPPED)

#: The ``schema_version`` of :meth:`Diagnosis.to_dict` (and ``gmail_check --json``); it changes
#: whenever a field changes meaning or type. 2: typed configuration values, step ids, nulls.
SCHEMA_VERSION = 2


# -- results -------------------------------------------------------------------------------


@dataclass
class Step:
    """One step of the test: what was done, how long it took, and what came of it.

    ``details`` are human sentences (in the active language); ``data`` holds the
    same facts for machines (addresses, TLS version, capabilities, replies).
    """

    name: str
    title: str
    status: str = OK
    duration: float | None = None
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    cause: Cause | None = None
    id: str = ""
    """Unique within a run (:data:`STEP_IDS`); the name unless set."""

    def __post_init__(self) -> None:
        self.id = self.id or self.name

    @property
    def ok(self) -> bool:
        return self.status in (OK, WARNING, SKIPPED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "duration": None if self.duration is None else round(self.duration, 4),
            "details": list(self.details),
            "data": self.data,
            "error": self.error or None,
            "cause_id": self.cause.id if self.cause else None,
        }


@dataclass
class Diagnosis:
    """The outcome of one run: the configuration, the rule findings, the steps and the cause."""

    config: SmtpConfig | None
    problems: list[Problem] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    cause: Cause | None = None
    failed_step: str | None = None
    """The name of the step that failed (:data:`STEP_NAMES`; the exit status depends on it)."""
    failed_step_id: str | None = None
    """Its id (:data:`STEP_IDS`), unique within the run."""
    error: str = ""
    transcript: Transcript = field(default_factory=Transcript)
    language: str = ""
    duration: float = 0.0
    mailbox_transcript: Transcript = field(default_factory=Transcript)
    """The IMAP or POP3 conversation of the round trip (sign-in redacted)."""
    round_trip: dict[str, Any] | None = None
    """What the round trip found (``--round-trip``): folder, seconds, From, verdicts, TLS."""
    unexpected: str = ""
    """The traceback (secrets redacted) of an error no step expects: a bug; exit status 1."""
    redactor: Redactor = field(init=False, repr=False, compare=False)
    """Hides the configuration's secrets, and the access tokens fetched during the run."""

    def __post_init__(self) -> None:
        self.redactor = Redactor.for_config(self.config)

    @property
    def ok(self) -> bool:
        return self.failed_step is None

    @property
    def outcome(self) -> str:
        """``"ok"``, ``"config_error"`` (nothing was sent over the network) or ``"failed"``."""
        if self.failed_step is None:
            return "ok"
        return "config_error" if self.failed_step == "config" else "failed"

    @property
    def exit_code(self) -> int:
        """The exit status of ``gmail_check`` for this outcome (:mod:`.exit_status`)."""
        return exit_code(self.failed_step, self.cause.id if self.cause else "", unexpected=bool(self.unexpected))

    def redact(self, text: str) -> str:
        """``text`` without any secret of the configuration, in any encoding."""
        return self.redactor(text)

    def transcript_lines(self) -> list[tuple[str, str]]:
        """The SMTP conversation as ``(direction, text)``; credentials already hidden."""
        return [(direction, self.redactor(text)) for direction, text in self.transcript.lines]

    def mailbox_transcript_lines(self) -> list[tuple[str, str]]:
        """The IMAP or POP3 conversation of the round trip as ``(direction, text)``; sign-in hidden."""
        return [(direction, self.redactor(text)) for direction, text in self.mailbox_transcript.lines]

    def step(self, name: str) -> Step | None:
        """The last step called ``name``, if it ran."""
        for step in reversed(self.steps):
            if step.name == name:
                return step
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document, valid against :data:`JSON_SCHEMA`."""
        config: dict[str, Any] | None = None
        if self.config is not None:
            config = {
                "alias": self.config.alias,
                "security": self.config.security,
                "values": [
                    _config_value(self.config, *row)
                    for row in self.config.describe(mailbox=(self.round_trip or {}).get("via", ""))
                ],
            }
        return {
            "schema_version": SCHEMA_VERSION,
            "ok": self.ok,
            "outcome": self.outcome,
            "failed_step": self.failed_step_id,
            "exit_code": self.exit_code,
            "language": self.language,
            "duration": round(self.duration, 4),
            "config": config,
            "problems": [
                {"id": p.id, "level": p.level, "message": str(p.message), "hint": str(p.hint)} for p in self.problems
            ],
            "steps": [step.to_dict() for step in self.steps],
            "cause": None
            if self.cause is None
            else {
                "id": self.cause.id,
                "summary": str(self.cause.summary),
                "fix": str(self.cause.fix),
                "url": self.cause.url or None,
                "temporary": self.cause.temporary,
            },
            "error": self.error or None,
            "transcript": [{"direction": d, "text": t} for d, t in self.transcript_lines()],
            "round_trip": self.round_trip,
            "mailbox_transcript": [{"direction": d, "text": t} for d, t in self.mailbox_transcript_lines()],
        }


def _config_value(config: SmtpConfig, name: str, shown: str, value: conf.Value) -> dict[str, Any]:
    """One configuration row for JSON: the value with its own type, null when not set or secret."""
    raw = getattr(config, name)
    secret = name in conf.SECRET_OPTIONS
    given = raw not in (None, "")
    return {
        "name": name,
        "value": raw if given and not secret else None,
        "set": given,
        "secret": secret,
        "display": shown,
        "source": value.source,
        "origin": str(value.origin),
    }


# -- the run -------------------------------------------------------------------------------

StepCallback = Callable[[Step], None]


class Run:
    """Bookkeeping of one run: opens and closes steps and tells the caller as it goes."""

    def __init__(
        self,
        diagnosis: Diagnosis,
        on_step_start: StepCallback | None,
        on_step_end: StepCallback | None,
    ) -> None:
        self.diagnosis = diagnosis
        self.redact = diagnosis.redactor
        self.on_step_start = on_step_start
        self.on_step_end = on_step_end
        self.current: Step | None = None
        self._started: dict[int, float] = {}
        self.impostor: Cause | None = None
        """Set when a Gmail host greeted unlike Gmail: the cause of any failure after that."""

    def begin(self, name: str, title: str, *, started: float | None = None, step_id: str = "") -> Step:
        step = Step(name=name, title=title, id=step_id)
        self._started[id(step)] = time.perf_counter() if started is None else started
        self.current = step
        if self.on_step_start is not None:
            self.on_step_start(step)
        return step

    def end(self, step: Step, status: str | None = None, *, ended: float | None = None) -> Step:
        if status is not None:
            step.status = status
        finish = time.perf_counter() if ended is None else ended
        step.duration = max(0.0, finish - self._started.pop(id(step), finish))
        step.details = [self.redact(str(d)) for d in step.details]
        step.error = self.redact(step.error)
        self.diagnosis.steps.append(step)
        if self.current is step:
            self.current = None
        if self.on_step_end is not None:
            self.on_step_end(step)
        return step

    def skip(self, name: str, title: str, detail: str) -> Step:
        step = self.begin(name, title)
        step.details.append(detail)
        return self.end(step, SKIPPED)

    def fail(self, step: Step, cause: Cause | None, error: str = "", *, ended: float | None = None) -> None:
        cause = self.impostor or cause or CATALOGUE["unexpected_error"]
        step.cause = cause
        step.error = error
        self.diagnosis.cause = cause
        self.diagnosis.failed_step = step.name
        self.diagnosis.failed_step_id = step.id
        self.diagnosis.error = self.redact(error)
        self.end(step, FAILED, ended=ended)


# -- what a TLS connection shows -----------------------------------------------------------


def _name_text(name: Any) -> str:
    """``((('commonName', 'x'),), ...)`` from getpeercert() as ``CN=x, O=...``."""
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "countryName": "C",
        "organizationalUnitName": "OU",
        "localityName": "L",
        "stateOrProvinceName": "ST",
    }
    parts = []
    for rdn in name or ():
        for key, value in rdn:
            parts.append(f"{short.get(key, key)}={value}")
    return ", ".join(parts)


def tls_facts(step: Step, sock: ssl.SSLSocket, config: SmtpConfig, *, host: str | None = None) -> None:
    """The TLS facts of ``sock`` (a connection to ``host``, by default the SMTP host) on ``step``."""
    context = sock.context  # the one it was wrapped with: what it verified
    host = host or config.host
    cipher = sock.cipher()
    cert = sock.getpeercert() or {}
    data: dict[str, Any] = {
        "protocol": sock.version(),
        "cipher": cipher[0] if cipher else None,
        "bits": cipher[2] if cipher else None,
        "subject": _name_text(cert.get("subject")),
        "issuer": _name_text(cert.get("issuer")),
        "names": [str(entry[1]) for entry in cast(Sequence[Sequence[str]], cert.get("subjectAltName", ()))],
        "not_after": cert.get("notAfter"),
        "days_left": None,
        "hostname": host,
        "hostname_verified": bool(context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED),
        "ca_file": config.ssl_cafile or None,
    }
    step.details.append(
        _("%(protocol)s, cipher %(cipher)s (%(bits)s bits)")
        % {"protocol": data["protocol"], "cipher": data["cipher"], "bits": data["bits"]}
    )
    step.details.append(_("certificate subject: %(subject)s") % {"subject": data["subject"] or "-"})
    step.details.append(_("issued by: %(issuer)s") % {"issuer": data["issuer"] or "-"})
    if data["not_after"]:
        expires = ssl.cert_time_to_seconds(str(data["not_after"]))
        days = int((expires - time.time()) // 86400)
        data["days_left"] = days
        day_text = time.strftime("%Y-%m-%d", time.gmtime(expires))
        step.details.append(
            ngettext("expires %(date)s (in %(days)d day)", "expires %(date)s (in %(days)d days)", days)
            % {"date": day_text, "days": days}
        )
        if days < 14:
            step.status = WARNING
            step.details.append(_("The certificate expires soon."))
    if data["hostname_verified"]:
        step.details.append(_("host name %(host)s verified against the certificate") % {"host": host})
    step.details.append(
        _("trusted through the CA file %(file)s") % {"file": config.ssl_cafile}
        if config.ssl_cafile
        else _("trusted through the system's CA certificates")
    )
    step.data = data
