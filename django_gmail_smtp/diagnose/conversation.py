"""Steps 3 to 7, the SMTP conversation: greeting and TLS, EHLO, STARTTLS, the OAuth2 token,
sign-in, the test messages and QUIT, over one :class:`~django_gmail_smtp.session.SMTPSession`
(the backend's own code), each bounded by the timeout.

A failed greeting or TLS step is refined by the :mod:`.probes`; after any failure the
conversation ends with a short, quiet QUIT.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.utils.translation import gettext as _

from .. import rules
from ..causes import CATALOGUE, Cause
from ..conf import SmtpConfig, is_loopback
from ..diagnosis import WARNING, Run, Step, tls_facts
from ..exceptions import GmailConfigError, describe_error, is_silent, reply_text
from ..session import CLIENT, SERVER, SMTPSession, Transcript
from .configuration import problem_cause
from .message import build_message
from .probes import is_sandbox_ca, probe_issuer, probe_plain_greeting, probe_tls
from .steps import DEFAULT_WAITS, NETWORK_ERRORS, SIGN_IN_ERRORS, Waits, cause_of, title

if TYPE_CHECKING:
    from ..roundtrip.trip import RoundTrip

__all__ = ["Conversation", "is_gmail_greeting", "server_lines_since"]


def is_gmail_greeting(reply: str) -> bool:
    """Gmail's greeting ends with its ``<id> - gsmtp`` tail (so does the sandbox's)."""
    return reply.rstrip().lower().endswith("gsmtp")


def server_lines_since(transcript: Transcript, mark: int) -> list[str]:
    """What the server said since line ``mark`` of the transcript."""
    lines = list(transcript.lines)[mark:]
    return [text for direction, text in lines if direction == SERVER]


class Conversation:
    """Steps 3-7 over one :class:`SMTPSession`; each step method returns False when it failed."""

    def __init__(
        self, run: Run, config: SmtpConfig, timeout: float, *, from_admin: bool = False, waits: Waits = DEFAULT_WAITS
    ) -> None:
        self.run = run
        self.config = config
        self.timeout = timeout
        self.from_admin = from_admin
        self.waits = waits
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
            self.greeting_step = self.run.begin("greeting", title("greeting"), started=now)

    def _mark(self) -> int:
        return len(self.run.diagnosis.transcript.lines)

    @property
    def _probe_wait(self) -> float:
        return min(self.timeout, self.waits.probe)

    def _failed(self, step: Step, exc: BaseException, stage: str, cause: Cause | None = None) -> bool:
        """Fail ``step`` with ``exc`` (its cause from ``stage``, unless given); False, to return."""
        self.run.fail(step, cause if cause is not None else cause_of(exc, stage, self.config), describe_error(exc))
        return False

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
                    self.session.quit(within=self.waits.farewell)

    # -- connect, TLS, greeting --
    def open(self) -> bool:
        config, session = self.config, self.session
        patience = self.timeout
        if not config.use_ssl and config.port in self.waits.implicit_tls_ports:
            patience = min(self.timeout, self.waits.quick)
        try:
            code, message = session.open_connection(within=patience)
        except NETWORK_ERRORS as exc:
            self._open_failed(exc, patience)
            return False
        greeted = time.perf_counter()
        if config.use_ssl and self.tls_step is not None:
            sock = session.client.sock if session.client is not None else None
            if isinstance(sock, ssl.SSLSocket):
                tls_facts(self.tls_step, sock, config)
            self.run.end(self.tls_step, ended=self.marks.get("greeting", greeted))
            self.greeting_step = self.run.begin(
                "greeting", title("greeting"), started=self.marks.get("greeting", greeted)
            )
        step = self.greeting_step or self.run.begin("greeting", title("greeting"))
        text = reply_text(code, message)
        step.details.append(text)
        step.data = {"code": code, "reply": text}
        if config.is_gmail:
            step.data["gmail"] = is_gmail_greeting(text)
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
        step = current or run.begin(name, title(name))
        ended = time.perf_counter()
        cause = cause_of(exc, stage, config)
        error = describe_error(exc)
        if name == "greeting" and is_silent(exc):
            step.details.append(_("No greeting within %(seconds)s s.") % {"seconds": f"{patience:g}"})
            if not config.use_ssl:
                spoken = probe_tls(config, self._probe_wait)
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
            greeting = probe_plain_greeting(config, self._probe_wait)
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
        issuer = probe_issuer(config, self._probe_wait)
        if issuer is not None:
            step.details.append(_("certificate issued by: %(issuer)s") % {"issuer": issuer.rfc4514_string()})
            step.data["issuer"] = issuer.rfc4514_string()
        if (issuer is not None and is_sandbox_ca(issuer)) or (is_loopback(config.host) and not config.ssl_cafile):
            return CATALOGUE["sandbox_cert_untrusted"]
        return CATALOGUE["cert_untrusted"] if issuer is not None else cause

    def _origin(self, option: str) -> str:
        value = self.config.provenance.get(option)
        return str(value.origin) if value else option

    # -- EHLO --
    def ehlo(self, *, before_tls: bool) -> bool:
        heading = _("EHLO (before TLS)") if before_tls else title("ehlo")
        step = self.run.begin("ehlo", heading, step_id="ehlo_tls" if self.session.tls_active else "ehlo")
        try:
            code, _message = self.session.ehlo()
        except NETWORK_ERRORS as exc:
            return self._failed(step, exc, "ehlo")
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
        except NETWORK_ERRORS as exc:
            cause = cause_of(exc, "starttls", self.config)
            if isinstance(exc, ssl.SSLCertVerificationError):
                cause = self._certificate_failed(step, cause)
            return self._failed(step, exc, "starttls", cause)
        step.details.extend(server_lines_since(self.run.diagnosis.transcript, mark)[:1])
        sock = self.session.client.sock if self.session.client is not None else None
        if isinstance(sock, ssl.SSLSocket):
            tls_facts(step, sock, self.config)
        self.run.end(step)
        return True

    # -- OAuth2 access token --
    def token(self) -> bool:
        """OAuth2 only: refresh the access token now (the refresh token is what is tested)."""
        config = self.config
        if not config.uses_oauth2 or not config.has_credentials:
            return True
        from .. import oauth

        uri = oauth.token_uri()
        step = self.run.begin("token", _("OAuth2 access token from %(uri)s") % {"uri": uri})
        try:
            token = oauth.access_token(config, force=True)
            self.run.redact.add(token.token)
        except GmailConfigError as exc:
            cause = problem_cause(rules.problem_from_error(exc))
            if exc.check_id == "gmail_smtp.E014":
                cause = CATALOGUE["oauth_extra_missing"]
            self.run.fail(step, cause, exc.message)
            return False
        except NETWORK_ERRORS as exc:  # OAuthError is an SMTPException
            return self._failed(step, exc, "token")
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
                title("auth"),
                _("No username and password are configured: the backend will not sign in."),
            )
            return True
        step = self.run.begin("auth", _("Sign-in as %(username)s") % {"username": config.username})
        mark = self._mark()
        try:
            result = self.session.login()
        except SIGN_IN_ERRORS as exc:
            client_lines = [t for d, t in list(self.run.diagnosis.transcript.lines)[mark:] if d == CLIENT]
            if client_lines:
                step.data["command"] = client_lines[0]
            return self._failed(step, exc, "auth")
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
            self.run.skip("send", title("send"), _("No recipient given: nothing was sent."))
            return True
        step = self.run.begin("send", _("Test message to %(recipients)s") % {"recipients": ", ".join(send_to)})
        try:
            sender, recipients, data = build_message(self.config, send_to, from_email, from_admin=self.from_admin)
        except (ValueError, GmailConfigError) as exc:
            return self._failed(step, exc, "send", CATALOGUE["bad_recipient"])
        return self._send(step, sender, recipients, data)

    def send_round_trip(self, round_trip: RoundTrip) -> bool:
        """The round trip's tagged message, to the account itself, from the configured From."""
        step = self.run.begin(
            "round_trip_send", _("Round-trip message to %(recipient)s") % {"recipient": self.config.username}
        )
        try:
            sender, recipients, data = round_trip.message(self.config)
        except (ValueError, GmailConfigError) as exc:
            return self._failed(step, exc, "send", CATALOGUE["envelope_syntax"])
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
        except NETWORK_ERRORS as exc:
            return self._failed(step, exc, "send")
        replies = server_lines_since(self.run.diagnosis.transcript, mark)
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
        step = self.run.begin("quit", title("quit"))
        mark = self._mark()
        try:
            self.session.quit()
        except NETWORK_ERRORS as exc:
            self._failed(step, exc, "quit")
            return
        step.details.extend(server_lines_since(self.run.diagnosis.transcript, mark)[-1:])
        self.run.end(step)
