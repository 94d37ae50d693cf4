"""A staged connection test that names the step that failed, the cause and the fix.

Pure library (no printing), shared by ``manage.py gmail_check`` and the admin's
"Test connection" button. It walks the path the backend takes, one step at a
time, each bounded by the configuration's timeout:

``config`` (validator rules) -> ``dns`` -> ``connect`` (every address) ->
``greeting`` / ``tls`` (implicit TLS first, or STARTTLS after the first EHLO) ->
``ehlo`` -> ``token`` (OAuth2 only: a fresh access token) -> ``auth`` -> ``send``
(optional) -> ``quit``

and stops at the first failing step, explained from :mod:`~django_gmail_smtp.causes`.
Secrets never reach the result: the session redacts the transcript and the server's replies,
and every text in the result passes through the same
:class:`~django_gmail_smtp.redaction.Redactor` (the password, the OAuth2 client secret, refresh
and access tokens, in every encoding they travel in).

Typical use::

    from django_gmail_smtp import diagnose

    result = diagnose.check()                   # the legacy EMAIL_* settings
    result = diagnose.run_check(config)         # an already resolved SmtpConfig
    if not result.ok:
        print(result.failed_step, result.cause.id, result.cause.summary, result.cause.fix)
    document = result.to_dict()                 # valid against diagnose.JSON_SCHEMA
"""

from __future__ import annotations

import contextlib
import json
import smtplib
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import resources
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from django.core.mail.utils import DNS_NAME
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _

from . import conf, rules
from .causes import CATALOGUE, Cause
from .conf import SmtpConfig, is_loopback
from .deadline import Deadline, connect, handshake, set_timeout
from .diagnosis import (
    FAILED,
    OK,
    SCHEMA_VERSION,
    SKIPPED,
    WARNING,
    Diagnosis,
    Run,
    Step,
    StepCallback,
    tls_facts,
)
from .envelope import build_envelope
from .exceptions import GmailConfigError, describe_error, explain_exception, is_silent, reply_text
from .exit_status import EXIT_CODES, EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, ROUND_TRIP_EXIT_CODES
from .roundtrip import ROUND_TRIP_STEPS, receive
from .roundtrip import STEP_TITLES as ROUND_TRIP_TITLES
from .rules import Problem
from .sandbox.constants import SANDBOX_CA_ORGANIZATION
from .session import CLIENT, SERVER, BoundedSMTP, SMTPSession, Transcript, make_ssl_context

if TYPE_CHECKING:
    from .roundtrip import RoundTrip

__all__ = [
    "EXIT_CODES",
    "EXIT_OK",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "FAILED",
    "JSON_SCHEMA",
    "OK",
    "ROUND_TRIP_EXIT_CODES",
    "SCHEMA_VERSION",
    "SKIPPED",
    "STEP_IDS",
    "STEP_NAMES",
    "WARNING",
    "Diagnosis",
    "Step",
    "check",
    "config_error",
    "run_check",
]

# -- statuses, steps and exit codes --------------------------------------------------------


#: Every step name, in the order they can appear. ``ehlo`` appears twice with
#: STARTTLS (before and after TLS; ``data["tls"]`` tells which). With implicit TLS
#: ``tls`` comes before ``greeting``.
_SMTP_STEPS = ("config", "dns", "connect", "greeting", "tls", "ehlo", "token", "auth", "send", "quit")
STEP_NAMES = (*_SMTP_STEPS, *ROUND_TRIP_STEPS)  # the round trip's: django_gmail_smtp.roundtrip
#: Step ids, unique within a run: the name, except that an EHLO over TLS is ``ehlo_tls``.
STEP_IDS = (*_SMTP_STEPS[:6], "ehlo_tls", *_SMTP_STEPS[6:], *ROUND_TRIP_STEPS)


#: Ports where a server speaks TLS from the first byte (SMTPS, IMAPS, POP3S, HTTPS):
#: a STARTTLS or plain client waits only briefly for a greeting there.
IMPLICIT_TLS_PORTS = frozenset({465, 993, 995, 443})
#: How long to wait for a greeting on those ports (Gmail greets within a second).
QUICK_WAIT = 3.0
#: Bound for the extra probes that refine a diagnosis (is it TLS? is it plain SMTP?).
PROBE_WAIT = 3.0
#: Bound for the QUIT that ends a conversation after a failed step.
FAREWELL_WAIT = 2.0

STEP_TITLES: Mapping[str, Any] = {
    "config": gettext_lazy("Configuration"),
    "dns": gettext_lazy("DNS lookup"),
    "connect": gettext_lazy("TCP connection"),
    "greeting": gettext_lazy("Server greeting"),
    "tls": gettext_lazy("TLS"),
    "ehlo": gettext_lazy("EHLO"),
    "token": gettext_lazy("OAuth2 access token"),
    "auth": gettext_lazy("Sign-in"),
    "send": gettext_lazy("Test message"),
    "quit": gettext_lazy("QUIT"),
    **ROUND_TRIP_TITLES,
}

# Rule ids that have a catalogue entry saying the same thing with a stable cause id.
_RULE_CAUSES = {
    "gmail_smtp.E001": "tls_and_ssl",
    "gmail_smtp.E003": "plain_on_tls_port",
    "gmail_smtp.E004": "tls_on_starttls_port",
    "gmail_smtp.E005": "username_missing",
    "gmail_smtp.E007": "password_missing",
    "gmail_smtp.E014": "oauth_extra_missing",
}

_FAMILIES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


# -- results -------------------------------------------------------------------------------


# -- the run -------------------------------------------------------------------------------


def _title(name: str) -> str:
    return str(STEP_TITLES[name])


def _cause_of(exc: BaseException, stage: str, config: SmtpConfig) -> Cause:
    found = getattr(exc, "cause", None)
    if found is None:
        found = explain_exception(exc, stage=stage, port=config.port, use_ssl=config.use_ssl, host=config.host)
    if found is None:
        found = CATALOGUE["unexpected_reply" if isinstance(exc, smtplib.SMTPResponseException) else "unexpected_error"]
    return found


# -- step 0: the configuration -------------------------------------------------------------


def _problem_cause(problem: Problem) -> Cause:
    """The rule's own words (they name the setting and where its value came from), under
    the catalogue's stable id when there is one, else under the rule's id."""
    known = CATALOGUE.get(_RULE_CAUSES.get(problem.id, ""))
    if known is not None:
        return replace(known, summary=problem.message, fix=problem.hint or known.fix)
    return Cause(problem.id, problem.message, problem.hint)


def _credentials_cause(config: SmtpConfig, errors: Sequence[Problem]) -> Cause | None:
    """Django signs in only when both the username and the password are set."""
    ids = {problem.id for problem in errors}
    if config.uses_oauth2:  # the OAuth2 rules (E015, E016) name what is missing
        return CATALOGUE["username_missing"] if not config.username else None
    if {"gmail_smtp.E005", "gmail_smtp.E007"} <= ids:
        return CATALOGUE["credentials_missing"]
    if config.username and not config.password:
        return CATALOGUE["password_missing"]
    if config.password and not config.username:
        return CATALOGUE["username_missing"]
    return None


def _check_config(run: Run, config: SmtpConfig, round_trip: RoundTrip | None = None) -> bool:
    step = run.begin("config", _title("config"))
    problems = rules.unsilenced(rules.check_config(config))
    run.diagnosis.problems = problems
    errors = [p for p in problems if p.is_error]
    warnings = [p for p in problems if not p.is_error]
    step.data = {"errors": len(errors), "warnings": len(warnings), "security": config.security}
    for problem in problems:
        level = _("error") if problem.is_error else _("warning")
        step.details.append(f"{problem.id} ({level}): {problem.message}")
        step.details.append("    " + _("Hint: %(hint)s") % {"hint": problem.hint})
    missing = _credentials_cause(config, errors)
    if missing is None and round_trip is not None:
        missing = round_trip.config_cause(config)
    for problem in errors:  # the rule says the same, naming the setting: use its words
        if missing is not None and _RULE_CAUSES.get(problem.id) == missing.id:
            missing = _problem_cause(problem)
    if missing is not None and not errors:
        step.details.append(str(missing.summary))
    if errors or missing is not None:
        cause = missing if missing is not None else _problem_cause(errors[0])
        error = str(errors[0].message) if errors else str(cause.summary)
        run.fail(step, cause, error)
        return False
    run.end(step, WARNING if warnings else OK)
    return True


# -- step 1: DNS ---------------------------------------------------------------------------

AddrInfo = tuple[int, str, tuple[Any, ...]]  # family, address, sockaddr


def _resolve(host: str, port: int, timeout: float) -> list[AddrInfo]:
    """getaddrinfo() in a thread, abandoned after ``timeout`` (it cannot be cancelled)."""
    outcome: dict[str, Any] = {}

    def lookup() -> None:
        try:
            outcome["result"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=lookup, name="gmail_check-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(_("no answer within %(timeout)s s") % {"timeout": f"{timeout:g}"})
    if "error" in outcome:
        raise outcome["error"]
    seen: set[tuple[int, str]] = set()
    found: list[AddrInfo] = []
    for family, _type, _proto, _name, sockaddr in outcome["result"]:
        key = (family, str(sockaddr[0]))
        if key not in seen and family in _FAMILIES:
            seen.add(key)
            found.append((family, str(sockaddr[0]), tuple(sockaddr)))
    return found


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _dns(run: Run, config: SmtpConfig, timeout: float) -> list[AddrInfo] | None:
    step = run.begin("dns", _("DNS lookup of %(host)s") % {"host": config.host})
    try:
        addresses = _resolve(config.host, config.port, timeout)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "no IPv4 or IPv6 address")
    except TimeoutError as exc:
        step.details.append(_("The resolver did not answer within %(timeout)s s.") % {"timeout": f"{timeout:g}"})
        run.fail(step, CATALOGUE["dns_timeout"], describe_error(exc))
        return None
    except (OSError, UnicodeError) as exc:
        run.fail(step, CATALOGUE["dns_failure"], describe_error(exc))
        return None
    if _is_ip(config.host):
        step.details.append(_("%(host)s is an IP address: no lookup needed.") % {"host": config.host})
    for family, address, _sockaddr in addresses:
        record = "A" if family == socket.AF_INET else "AAAA"
        step.details.append(f"{record} {address}")
    step.data = {
        "host": config.host,
        "addresses": [{"family": _FAMILIES[f], "address": a} for f, a, _s in addresses],
    }
    run.end(step)
    return addresses


# -- step 2: TCP, every address ------------------------------------------------------------


def _connect_once(family: int, sockaddr: tuple[Any, ...], timeout: float) -> tuple[float, BaseException | None]:
    started = time.perf_counter()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except OSError as exc:
        return time.perf_counter() - started, exc
    finally:
        sock.close()
    return time.perf_counter() - started, None


def _error_rank(exc: BaseException) -> int:
    """Which failure tells the most: a silent port, then a refusal, then the rest."""
    if isinstance(exc, TimeoutError):
        return 0
    if isinstance(exc, ConnectionRefusedError):
        return 1
    return 2


def _connect(run: Run, config: SmtpConfig, addresses: list[AddrInfo], timeout: float) -> bool:
    """Try every address at once (a broken IPv6 route must not hide a working IPv4 one)."""
    step = run.begin("connect", _("TCP connection to port %(port)s") % {"port": config.port})
    results: dict[int, tuple[float, BaseException | None]] = {}

    def attempt(index: int, family: int, sockaddr: tuple[Any, ...]) -> None:
        results[index] = _connect_once(family, sockaddr, timeout)

    threads = [
        threading.Thread(target=attempt, args=(i, family, sockaddr), daemon=True, name="gmail_check-tcp")
        for i, (family, _address, sockaddr) in enumerate(addresses)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))

    attempts: list[dict[str, Any]] = []
    failures: list[BaseException] = []
    working: list[str] = []
    for i, (family, address, _sockaddr) in enumerate(addresses):
        elapsed, exc = results.get(i, (timeout, TimeoutError("timed out")))
        label = f"{address} ({_FAMILIES[family]})"
        if exc is None:
            working.append(address)
            step.details.append(_("%(address)s: connected in %(seconds).2fs") % {"address": label, "seconds": elapsed})
        else:
            failures.append(exc)
            step.details.append(_("%(address)s: %(error)s") % {"address": label, "error": describe_error(exc)})
        attempts.append(
            {
                "family": _FAMILIES[family],
                "address": address,
                "ok": exc is None,
                "duration": round(elapsed, 4),
                "error": "" if exc is None else describe_error(exc),
            }
        )
    step.data = {"port": config.port, "attempts": attempts, "working": working}
    if not working:
        worst = min(failures, key=_error_rank)
        run.fail(step, _cause_of(worst, "connect", config), describe_error(worst))
        return False
    if failures:
        failed = sorted({a["family"] for a in attempts if not a["ok"]})
        good = sorted({a["family"] for a in attempts if a["ok"]})
        step.details.append(
            _(
                "Only %(good)s works; %(failed)s failed. Django tries the addresses in the order "
                "above, so every connection may first wait for the failing one: fix that route or "
                "prefer %(good)s for the mail host."
            )
            % {"good": "/".join(good), "failed": "/".join(failed)}
        )
        run.end(step, WARNING)
    else:
        run.end(step)
    return True


# -- refining probes -----------------------------------------------------------------------


def _probe_tls(config: SmtpConfig, wait: float) -> str:
    """Does the port speak TLS from the first byte? ``"tls"``, ``"plain"`` or ``"silent"``.

    Uses the same verifying context as the session; a certificate failure also
    proves that TLS is spoken. Nothing but a ClientHello is sent. Takes at most ``wait``
    seconds in all; what it reads is the server's handshake, which OpenSSL bounds.
    """
    deadline = Deadline(wait, "step", "TLS probe")
    try:
        sock = connect(config.host, config.port, deadline)
    except OSError:
        return "silent"
    try:
        with handshake(make_ssl_context(config), sock, deadline, config.host):
            return "tls"
    except ssl.SSLCertVerificationError:
        return "tls"
    except ssl.SSLError:
        return "plain"
    except OSError:
        return "silent"
    finally:
        sock.close()


def _probe_plain_greeting(config: SmtpConfig, wait: float) -> str:
    """The first line a plain connection receives within ``wait`` seconds in all (``""`` if none).

    One read of at most 512 bytes: an endless or dripping greeting cannot make it read more.
    """
    deadline = Deadline(wait, "step", "greeting probe")
    try:
        with connect(config.host, config.port, deadline) as sock:
            set_timeout(sock, deadline.left())
            data = sock.recv(512)
    except OSError:
        return ""
    return data.decode("ascii", "replace").split("\r\n")[0].strip()


def _probe_issuer(config: SmtpConfig, wait: float) -> x509.Name | None:
    """Who signed the server's certificate, read without trusting it (None: could not tell).

    For naming the signer of a certificate that failed verification. Only the handshake is done
    over the unverified connection (after EHLO and STARTTLS with STARTTLS); nothing else is sent.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to read the certificate: no credential, no mail
    der: bytes | None = None
    deadline = Deadline(wait, "step", "certificate probe")  # the whole probe; its replies capped
    try:
        if config.use_ssl:
            with (
                connect(config.host, config.port, deadline) as raw,
                handshake(context, raw, deadline, config.host) as sock,
            ):
                der = sock.getpeercert(binary_form=True)
        else:
            client = BoundedSMTP(deadline, host=config.host, port=config.port, local_hostname=DNS_NAME.get_fqdn())
            try:
                client.ehlo()
                client.starttls(context=context)
                if isinstance(client.sock, ssl.SSLSocket):
                    der = client.sock.getpeercert(binary_form=True)
            finally:
                client.close()
        return x509.load_der_x509_certificate(der).issuer if der else None
    except (OSError, smtplib.SMTPException, ValueError):
        return None


def _is_sandbox_ca(issuer: x509.Name) -> bool:
    names = issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(name.value == SANDBOX_CA_ORGANIZATION for name in names)


def _is_gmail_greeting(reply: str) -> bool:
    """Gmail's greeting ends with its ``<id> - gsmtp`` tail (so does the sandbox's)."""
    return reply.rstrip().lower().endswith("gsmtp")


# -- steps 3-7: the SMTP conversation ------------------------------------------------------


def _server_lines_since(transcript: Transcript, mark: int) -> list[str]:
    lines = list(transcript.lines)[mark:]
    return [text for direction, text in lines if direction == SERVER]


# What the network steps expect: a server's refusal or a network/TLS failure (ssl.SSLError,
# socket.timeout and OAuthError included). Anything else is a bug: run_check() reports it
# with exit status 1 instead of passing it off as that step's failure.
_NETWORK_ERRORS: tuple[type[Exception], ...] = (smtplib.SMTPException, OSError)
# Signing in may also stop at a setting (GmailConfigError) or at credentials smtplib cannot
# encode (UnicodeError: a non-ASCII password).
_SIGN_IN_ERRORS: tuple[type[Exception], ...] = (*_NETWORK_ERRORS, GmailConfigError, UnicodeError)


class _Conversation:
    """Steps 3-7 over one :class:`SMTPSession`."""

    def __init__(self, run: Run, config: SmtpConfig, timeout: float, *, from_admin: bool = False) -> None:
        self.run = run
        self.config = config
        self.timeout = timeout
        self.from_admin = from_admin
        self.marks: dict[str, float] = {}
        self.session = SMTPSession(
            config, transcript=run.diagnosis.transcript, on_stage=self._stage, redactor=run.diagnosis.redactor
        )
        self.tls_step: Step | None = None
        self.greeting_step: Step | None = None

    # Live progress while open_connection() runs connect -> (tls) -> greeting.
    def _stage(self, stage: str) -> None:
        now = time.perf_counter()
        self.marks[stage] = now
        if stage == "tls":
            self.tls_step = self.run.begin("tls", _("TLS handshake (implicit TLS)"), started=now)
        elif stage == "greeting" and not self.config.use_ssl:
            self.greeting_step = self.run.begin("greeting", _title("greeting"), started=now)

    def _mark(self) -> int:
        return len(self.run.diagnosis.transcript.lines)

    def run_all(self, send_to: Sequence[str], from_email: str | None, round_trip: RoundTrip | None = None) -> None:
        try:
            if not self.open():
                return
            starttls = self.config.use_tls and not self.config.use_ssl
            if starttls and (not self.ehlo(before_tls=True) or not self.starttls()):
                return
            if (
                not self.ehlo(before_tls=False)
                or not self.token()
                or not self.auth()
                or not self.send(send_to, from_email)
            ):
                return
            if round_trip is not None and not self.send_round_trip(round_trip):
                return
            self.quit()
        finally:
            if self.session.client is not None:  # after a failure: leave politely, quietly
                with contextlib.suppress(Exception):  # the failure is already reported
                    self.session.quit(within=FAREWELL_WAIT)

    # -- connect, TLS, greeting --
    def open(self) -> bool:
        config, session = self.config, self.session
        patience = self.timeout
        if not config.use_ssl and config.port in IMPLICIT_TLS_PORTS:
            patience = min(self.timeout, QUICK_WAIT)
        try:
            code, message = session.open_connection(within=patience)
        except _NETWORK_ERRORS as exc:
            self._open_failed(exc, patience)
            return False
        greeted = time.perf_counter()
        if config.use_ssl and self.tls_step is not None:
            sock = session.client.sock if session.client is not None else None
            if isinstance(sock, ssl.SSLSocket):
                tls_facts(self.tls_step, sock, config, session.ssl_context)
            self.run.end(self.tls_step, ended=self.marks.get("greeting", greeted))
            self.greeting_step = self.run.begin(
                "greeting", _title("greeting"), started=self.marks.get("greeting", greeted)
            )
        step = self.greeting_step or self.run.begin("greeting", _title("greeting"))
        text = reply_text(code, message)
        step.details.append(text)
        step.data = {"code": code, "reply": text}
        if config.is_gmail:
            step.data["gmail"] = _is_gmail_greeting(text)
            if not step.data["gmail"]:
                # Every later failure is then this impostor's, not Gmail's: say so instead.
                self.run.impostor = CATALOGUE["not_gmail_server"]
                step.status = WARNING
                step.details.append(
                    _("This is not Gmail's greeting (Gmail's ends with “- gsmtp”): %(summary)s")
                    % {"summary": self.run.impostor.summary}
                )
        self.run.end(step, ended=greeted)
        return True

    def _open_failed(self, exc: BaseException, patience: float) -> None:
        config, run = self.config, self.run
        stage = self.session.stage or "connect"
        name = {"connect": "connect", "tls": "tls", "greeting": "greeting"}.get(stage, "greeting")
        current = run.current
        if current is not None and current.name != name:
            run.end(current, ended=self.marks.get(stage))  # e.g. TLS done, then no greeting
            current = None
        step = current or run.begin(name, _title(name))
        ended = time.perf_counter()
        cause = _cause_of(exc, stage, config)
        error = describe_error(exc)
        if name == "greeting" and is_silent(exc):
            step.details.append(_("No greeting within %(seconds)s s.") % {"seconds": f"{patience:g}"})
            if not config.use_ssl:
                spoken = _probe_tls(config, min(self.timeout, PROBE_WAIT))
                step.data["tls_probe"] = spoken
                if spoken == "tls":
                    cause = CATALOGUE["plain_on_tls_port"]
                    step.details.append(
                        _(
                            "Port %(port)s answered a TLS handshake: it expects implicit TLS from "
                            "the first byte, and waits silently for it."
                        )
                        % {"port": config.port}
                    )
                elif spoken == "silent":
                    cause = CATALOGUE["no_greeting"]
                    step.details.append(
                        _(
                            "It did not answer a TLS handshake either: something between this "
                            "machine and the server swallows the connection (a firewall, or a "
                            "host that blocks outbound SMTP)."
                        )
                    )
                else:
                    cause = CATALOGUE["no_greeting"]
                    step.details.append(
                        _(
                            "On a new connection it answered in plain text: the server may only be "
                            "slow to greet; try a longer timeout."
                        )
                    )
        elif (
            name == "tls"
            and config.use_ssl
            and isinstance(exc, ssl.SSLError)
            and not isinstance(exc, ssl.SSLCertVerificationError)
        ):
            greeting = _probe_plain_greeting(config, min(self.timeout, PROBE_WAIT))
            step.data["plain_probe"] = greeting
            if greeting.startswith("220"):
                cause = CATALOGUE["tls_on_starttls_port"]
                step.details.append(
                    _("Port %(port)s greets in plain text (%(greeting)s): it expects STARTTLS, not implicit TLS.")
                    % {"port": config.port, "greeting": greeting[:80]}
                )
        elif name == "tls" and isinstance(exc, ssl.SSLCertVerificationError):
            cause = self._certificate_failed(step, cause)
        run.fail(step, cause, error, ended=ended)

    def _certificate_failed(self, step: Step, cause: Cause) -> Cause:
        """Say what verified the certificate and who signed it; a sandbox's CA (or, with no CA
        file, any server on this machine) makes it the sandbox's cause."""
        config = self.config
        if config.ssl_cafile:
            step.details.append(
                _("Verified with the CA file %(file)s (from %(origin)s).")
                % {"file": config.ssl_cafile, "origin": self._origin("ssl_cafile")}
            )
        else:
            step.details.append(_("Verified with the system's CA certificates (no SSL_CAFILE set)."))
        if cause.id not in ("cert_untrusted", "sandbox_cert_untrusted"):
            return cause
        issuer = _probe_issuer(config, min(self.timeout, PROBE_WAIT))
        if issuer is not None:
            step.details.append(_("certificate issued by: %(issuer)s") % {"issuer": issuer.rfc4514_string()})
            step.data["issuer"] = issuer.rfc4514_string()
        if (issuer is not None and _is_sandbox_ca(issuer)) or (is_loopback(config.host) and not config.ssl_cafile):
            return CATALOGUE["sandbox_cert_untrusted"]
        return CATALOGUE["cert_untrusted"] if issuer is not None else cause

    def _origin(self, option: str) -> str:
        value = self.config.provenance.get(option)
        return str(value.origin) if value else option

    # -- EHLO --
    def ehlo(self, *, before_tls: bool) -> bool:
        title = _("EHLO (before TLS)") if before_tls else _title("ehlo")
        step = self.run.begin("ehlo", title, step_id="ehlo_tls" if self.session.tls_active else "ehlo")
        try:
            code, _message = self.session.ehlo()
        except _NETWORK_ERRORS as exc:
            self.run.fail(step, _cause_of(exc, "ehlo", self.config), describe_error(exc))
            return False
        client = self.session.client
        features: dict[str, str] = dict(client.esmtp_features) if client is not None else {}
        auth = features.get("auth", "").split()
        size = features.get("size", "")
        capabilities = {key.upper(): value for key, value in features.items()}
        step.data = {
            "tls": self.session.tls_active,
            "code": code,
            "capabilities": capabilities,
            "auth_mechanisms": auth,
            "size": int(size) if size.isdigit() else None,
        }
        shown = [
            key
            for key in ("SIZE", "8BITMIME", "STARTTLS", "ENHANCEDSTATUSCODES", "PIPELINING", "CHUNKING", "SMTPUTF8")
            if key in capabilities
        ]
        others = sorted(k for k in capabilities if k not in shown and k != "AUTH")
        step.details.append(_("capabilities: %(list)s") % {"list": ", ".join(shown + others) or "-"})
        if size.isdigit() and int(size):
            step.details.append(
                _("largest message: %(bytes)s bytes (%(mib).1f MiB)") % {"bytes": size, "mib": int(size) / 1048576}
            )
        if auth:
            step.details.append(_("sign-in methods (AUTH): %(list)s") % {"list": " ".join(auth)})
        elif not before_tls:
            step.details.append(_("no sign-in methods offered (no AUTH)"))
        if before_tls and "STARTTLS" in capabilities:
            step.details.append(_("STARTTLS offered (sign-in is offered only after it, as on Gmail)."))
        elif not self.session.tls_active and "STARTTLS" in capabilities:
            step.status = WARNING
            step.details.append(
                _(
                    "The server offers STARTTLS, but the configuration does not use it (choose it in the “Security” field)."
                )
                if rules.from_form(self.config, "use_tls")
                else _(
                    "The server offers STARTTLS, but the configuration does not use it "
                    "(turn on EMAIL_USE_TLS, or 'use_tls' in MAILERS OPTIONS)."
                )
            )
        if "SMTPUTF8" not in capabilities and not before_tls:
            step.details.append(_("No SMTPUTF8: addresses must be ASCII."))
        self.run.end(step)
        return True

    # -- STARTTLS --
    def starttls(self) -> bool:
        step = self.run.begin("tls", _("STARTTLS"))
        mark = self._mark()
        try:
            self.session.starttls()
        except _NETWORK_ERRORS as exc:
            cause = _cause_of(exc, "starttls", self.config)
            if isinstance(exc, ssl.SSLCertVerificationError):
                cause = self._certificate_failed(step, cause)
            self.run.fail(step, cause, describe_error(exc))
            return False
        step.details.extend(_server_lines_since(self.run.diagnosis.transcript, mark)[:1])
        sock = self.session.client.sock if self.session.client is not None else None
        if isinstance(sock, ssl.SSLSocket):
            tls_facts(step, sock, self.config, self.session.ssl_context)
        self.run.end(step)
        return True

    # -- OAuth2 access token --
    def token(self) -> bool:
        """OAuth2 only: refresh the access token now (the refresh token is what is tested)."""
        config = self.config
        if not config.uses_oauth2 or not config.has_credentials:
            return True
        from . import oauth

        uri = oauth.token_uri()
        step = self.run.begin("token", _("OAuth2 access token from %(uri)s") % {"uri": uri})
        try:
            token = oauth.access_token(config, force=True)
            self.run.redact.add(token.token)
        except GmailConfigError as exc:
            cause = _problem_cause(rules.problem_from_error(exc))
            if exc.check_id == "gmail_smtp.E014":
                cause = CATALOGUE["oauth_extra_missing"]
            self.run.fail(step, cause, exc.message)
            return False
        except _NETWORK_ERRORS as exc:  # OAuthError is an SMTPException
            self.run.fail(step, _cause_of(exc, "token", config), describe_error(exc))
            return False
        scope = token.scope or _("(not stated)")
        step.details.append(_("refreshed: the access token expires in %(seconds)d s") % {"seconds": token.expires_in})
        step.details.append(_("scope: %(scope)s") % {"scope": scope})
        step.data = {
            "token_uri": uri,
            "expires_in": token.expires_in,
            "scope": token.scope,
            "client_id": config.oauth_client_id,
        }
        if token.has_mail_scope is False:
            self.run.fail(step, CATALOGUE["oauth_wrong_scope"], str(CATALOGUE["oauth_wrong_scope"].summary))
            return False
        self.run.end(step)
        return True

    # -- AUTH --
    def auth(self) -> bool:
        config = self.config
        if not config.has_credentials:
            self.run.skip(
                "auth",
                _title("auth"),
                _("No username and password are configured: the backend will not sign in."),
            )
            return True
        step = self.run.begin("auth", _("Sign-in as %(username)s") % {"username": config.username})
        mark = self._mark()
        try:
            result = self.session.login()
        except _SIGN_IN_ERRORS as exc:
            client_lines = [t for d, t in list(self.run.diagnosis.transcript.lines)[mark:] if d == CLIENT]
            if client_lines:
                step.data["command"] = client_lines[0]
            self.run.fail(step, _cause_of(exc, "auth", config), describe_error(exc))
            return False
        lines = list(self.run.diagnosis.transcript.lines)[mark:]
        commands = [t for d, t in lines if d == CLIENT and t.upper().startswith("AUTH")]
        mechanism = commands[-1].split(" ")[1] if commands and " " in commands[-1] else ""
        if result is not None:
            step.details.append(reply_text(*result))
        if mechanism:
            step.details.append(_("method: %(mechanism)s") % {"mechanism": mechanism})
        step.data = {"username": config.username, "mechanism": mechanism, "code": result[0] if result else None}
        self.run.end(step)
        return True

    # -- a real message --
    def send(self, send_to: Sequence[str], from_email: str | None) -> bool:
        if not send_to:
            self.run.skip("send", _title("send"), _("No recipient given: nothing was sent."))
            return True
        step = self.run.begin("send", _("Test message to %(recipients)s") % {"recipients": ", ".join(send_to)})
        try:
            sender, recipients, data = _build_message(self.config, send_to, from_email, from_admin=self.from_admin)
        except (ValueError, GmailConfigError) as exc:
            self.run.fail(step, CATALOGUE["bad_recipient"], describe_error(exc))
            return False
        return self._send(step, sender, recipients, data)

    def send_round_trip(self, round_trip: RoundTrip) -> bool:
        """The round trip's tagged message, to the account itself, from the configured From."""
        step = self.run.begin(
            "round_trip_send", _("Round-trip message to %(recipient)s") % {"recipient": self.config.username}
        )
        try:
            sender, recipients, data = round_trip.message(self.config)
        except (ValueError, GmailConfigError) as exc:
            self.run.fail(step, CATALOGUE["envelope_syntax"], describe_error(exc))
            return False
        if not self._send(step, sender, recipients, data):
            return False
        round_trip.sent()
        step.data["message_id"] = round_trip.message_id
        return True

    def _send(self, step: Step, sender: str, recipients: list[str], data: bytes) -> bool:
        mark = self._mark()
        step.data = {"from": sender, "to": list(recipients), "bytes": len(data)}
        try:
            refused = self.session.send(sender, recipients, data)
        except _NETWORK_ERRORS as exc:
            self.run.fail(step, _cause_of(exc, "send", self.config), describe_error(exc))
            return False
        replies = _server_lines_since(self.run.diagnosis.transcript, mark)
        final = replies[-1] if replies else ""
        step.details.append(_("%(bytes)d bytes from %(sender)s") % {"bytes": len(data), "sender": sender})
        if final:
            step.details.append(_("server's final reply: %(reply)s") % {"reply": final})
        step.data["reply"] = final
        step.data["refused"] = {addr: reply_text(code, text) for addr, (code, text) in refused.items()}
        if refused:
            step.status = WARNING
            for addr, text in step.data["refused"].items():
                step.details.append(_("refused: %(address)s: %(reply)s") % {"address": addr, "reply": text})
        self.run.end(step)
        return True

    # -- QUIT --
    def quit(self) -> None:
        step = self.run.begin("quit", _title("quit"))
        mark = self._mark()
        try:
            self.session.quit()
        except _NETWORK_ERRORS as exc:
            self.run.fail(step, _cause_of(exc, "quit", self.config), describe_error(exc))
            return
        step.details.extend(_server_lines_since(self.run.diagnosis.transcript, mark)[-1:])
        self.run.end(step)


def _build_message(
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


# -- entry points --------------------------------------------------------------------------


def run_check(
    config: SmtpConfig,
    *,
    send_to: Sequence[str] = (),
    from_email: str | None = None,
    on_step_start: StepCallback | None = None,
    on_step_end: StepCallback | None = None,
    round_trip: RoundTrip | None = None,
    from_admin: bool = False,
) -> Diagnosis:
    """Run every step against ``config`` and return the :class:`Diagnosis`.

    ``send_to``: addresses to send a real test message to (none: nothing is sent); its text
    names the admin as its origin when ``from_admin``, else ``manage.py gmail_check``.
    ``round_trip``: also send a tagged message to the account itself and prove it arrives
    (:class:`~django_gmail_smtp.roundtrip.RoundTrip`; its steps follow QUIT).
    ``on_step_start(step)`` / ``on_step_end(step)`` are called as the steps run
    (for live progress); steps that run inside one socket call (implicit TLS and
    the greeting) are reported as soon as that call returns. Never raises for a
    failure of the server, the network or the configuration; never hangs longer
    than the configured timeout per step (plus short probes that refine a diagnosis).
    """
    started = time.perf_counter()
    diagnosis = Diagnosis(config=config, language=get_language() or "")
    run = Run(diagnosis, on_step_start, on_step_end)
    timeout = config.timeout if config.timeout and config.timeout > 0 else conf.DEFAULT_TIMEOUT
    try:
        if round_trip is not None:
            diagnosis.round_trip = round_trip.summary  # filled in as the round trip goes
        if not _check_config(run, config, round_trip):
            return diagnosis
        addresses = _dns(run, config, timeout)
        if addresses is None or not _connect(run, config, addresses, timeout):
            return diagnosis
        _Conversation(run, config, timeout, from_admin=from_admin).run_all(send_to, from_email, round_trip)
        if round_trip is not None and diagnosis.ok:
            receive(round_trip, run, config, timeout)
    except Exception as exc:  # a bug: exit status 1 and a request to report it, never a bare traceback
        diagnosis.unexpected = run.redact(traceback.format_exc()) or "-"
        step = run.current or run.begin("config", _title("config"))
        run.fail(step, CATALOGUE["unexpected_error"], describe_error(exc))
    finally:
        diagnosis.duration = time.perf_counter() - started
    return diagnosis


def config_error(exc: GmailConfigError, *, config_name: str = "") -> Diagnosis:
    """The :class:`Diagnosis` of a configuration that ``conf.resolve()`` refused."""
    problem = rules.problem_from_error(exc, config_name)
    diagnosis = Diagnosis(config=None, problems=[problem], language=get_language() or "")
    run = Run(diagnosis, None, None)
    step = run.begin("config", _title("config"))
    step.details.append(_("%(id)s (error): %(message)s") % {"id": problem.id, "message": problem.message})
    if problem.hint:
        step.details.append("    " + _("Hint: %(hint)s") % {"hint": problem.hint})
    cause = _problem_cause(problem)
    if not str(cause.fix):
        cause = replace(cause, fix=CATALOGUE["invalid_setting"].fix)
    run.fail(step, cause, exc.message)
    return diagnosis


def check(
    options: Mapping[str, Any] | None = None,
    *,
    alias: str | None = None,
    send_to: Sequence[str] = (),
    from_email: str | None = None,
    on_step_start: StepCallback | None = None,
    on_step_end: StepCallback | None = None,
    round_trip: RoundTrip | None = None,
    accounts: conf.AccountSource | None = None,
) -> Diagnosis:
    """Resolve the configuration the backend would use (see :func:`conf.resolve`) and test it.

    ``accounts`` is where a stored account the configuration names comes from
    (:func:`django_gmail_smtp.accounts.account_options`, as the backend has it).
    """
    try:
        config = conf.resolve(options or {}, alias=alias, accounts=accounts)
    except GmailConfigError as exc:
        return config_error(exc, config_name=f"MAILERS[{alias!r}]" if alias else "")
    return run_check(
        config,
        send_to=send_to,
        from_email=from_email,
        on_step_start=on_step_start,
        on_step_end=on_step_end,
        round_trip=round_trip,
    )


# -- the JSON document ---------------------------------------------------------------------


#: JSON Schema (draft 2020-12) of :meth:`Diagnosis.to_dict` and ``gmail_check --json``, from the
#: file shipped in the package (``django_gmail_smtp/schemas/gmail_check.schema.json``).
JSON_SCHEMA: dict[str, Any] = json.loads(
    resources.files("django_gmail_smtp").joinpath("schemas", "gmail_check.schema.json").read_text(encoding="utf-8")
)
