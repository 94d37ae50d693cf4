"""Reading what arrived: the folder, the From as delivered, SPF/DKIM/DMARC, the receiving hop's TLS.

One step each, after the message was found; only the folder can fail the run (Spam). The others
end with a warning and a cause (Gmail rewrote the From, a verdict failed, no TLS) or are skipped
when the header does not say.
"""

from __future__ import annotations

import re
from email.message import Message

from django.utils.translation import gettext as _

from .. import rules
from ..app_settings import app_setting
from ..causes import CATALOGUE
from ..conf import SmtpConfig
from ..diagnosis import SKIPPED, WARNING, Run
from .headers import FAILED_VERDICTS, address_of, auth_results, header_text, parse_header, receiving_hop
from .steps import title
from .trip import Delivered, RoundTrip

__all__ = ["analyse"]


def analyse(run: Run, trip: RoundTrip, config: SmtpConfig, found: Delivered, *, inbox_only: bool = False) -> None:
    """The steps that read the found message. ``inbox_only``: the mailbox shows only the inbox (POP3)."""
    header = parse_header(found.header)
    folder_step(run, found, inbox_only=inbox_only)
    from_step(run, trip, config, header)
    authentication_step(run, trip, header)
    tls_step(run, trip, header)


def folder_step(run: Run, found: Delivered, *, inbox_only: bool) -> None:
    step = run.begin("round_trip_folder", title("round_trip_folder"))
    step.data = {"folder": found.folder, "role": found.role}
    if found.role == "inbox":
        step.details.append(_("In the inbox (%(folder)s).") % {"folder": found.folder})
        if inbox_only:
            step.details.append(_("POP3 shows only the inbox: a message in Spam would never have been seen."))
        run.end(step)
    elif found.role == "junk":
        step.details.append(_("In Spam (%(folder)s).") % {"folder": found.folder})
        run.fail(step, CATALOGUE["round_trip_spam"], str(CATALOGUE["round_trip_spam"].summary))
    else:
        step.details.append(_("Not in the inbox: found in %(folder)s.") % {"folder": found.folder})
        step.cause = CATALOGUE["round_trip_not_in_inbox"]
        run.end(step, WARNING)


def from_step(run: Run, trip: RoundTrip, config: SmtpConfig, header: Message) -> None:
    step = run.begin("round_trip_from", title("round_trip_from"))
    delivered_text = header_text(header.get("From"))
    delivered = address_of(delivered_text)
    sent = address_of(trip.sender) or trip.sender.lower()
    original = header_text(header.get("X-Google-Original-From"))
    rewritten = bool(delivered) and delivered != sent
    step.data = {"sent": sent, "delivered": delivered, "rewritten": rewritten, "original_from": original or None}
    trip.summary.update(from_delivered=delivered or None, from_rewritten=rewritten)
    step.details.append(_("sent as: %(address)s") % {"address": sent})
    step.details.append(_("delivered as: %(address)s") % {"address": delivered_text or "-"})
    if original:
        step.details.append(_("X-Google-Original-From: %(value)s") % {"value": original})
    if not rewritten:
        run.end(step)
        return
    step.cause = CATALOGUE["round_trip_from_rewritten"]
    from django.conf import settings

    aliases = app_setting("FROM_ALIASES")
    for problem in rules.check_default_from_email(config, str(settings.DEFAULT_FROM_EMAIL), aliases):
        if address_of(str(settings.DEFAULT_FROM_EMAIL)) == sent:
            step.details.append(f"{problem.id}: {problem.message}")
    run.end(step, WARNING)


def authentication_step(run: Run, trip: RoundTrip, header: Message) -> None:
    step = run.begin("round_trip_authentication", title("round_trip_authentication"))
    values = [header_text(value) for value in header.get_all("Authentication-Results") or []]
    verdicts = auth_results(values)
    trip.summary["authentication_results"] = verdicts
    step.data = {"verdicts": verdicts, "header": values[0][:1000] if values else None}
    if not values:
        step.details.append(
            _(
                "No Authentication-Results header: the message did not pass a receiving mail "
                "exchanger that checks SPF, DKIM and DMARC (usual for mail to the sending account itself)."
            )
        )
        run.end(step, SKIPPED)
        return
    shown = ", ".join(f"{method}={verdict or '-'}" for method, verdict in verdicts.items())
    step.details.append(shown)
    if any(verdict in FAILED_VERDICTS for verdict in verdicts.values()):
        step.cause = CATALOGUE["round_trip_auth_failed"]
        run.end(step, WARNING)
        return
    run.end(step)


def tls_step(run: Run, trip: RoundTrip, header: Message) -> None:
    step = run.begin("round_trip_tls", title("round_trip_tls"))
    hop = receiving_hop([header_text(value) for value in header.get_all("Received") or []])
    trip.summary["tls"] = hop
    step.data = {"hop": hop}
    if hop is None:
        step.details.append(_("No Received header with an SMTP hop: the receiving side does not say."))
        run.end(step, SKIPPED)
        return
    shown = re.split(r"\s+id\s+|;", hop["received"])[0]  # "from ... by ... with ESMTPSA"
    step.details.append(shown if len(shown) <= 160 else shown[:159] + "…")
    if hop["tls"] is True:
        version = hop["tls_version"] or hop["protocol"]
        step.details.append(
            _("received over TLS (%(version)s%(cipher)s)")
            % {"version": version, "cipher": f", {hop['cipher']}" if hop["cipher"] else ""}
        )
        run.end(step)
    elif hop["tls"] is False:
        step.details.append(_("received without TLS (%(protocol)s)") % {"protocol": hop["protocol"]})
        step.cause = CATALOGUE["round_trip_no_tls"]
        run.end(step, WARNING)
    else:
        step.details.append(_("The header does not say whether TLS was used (%(protocol)s).") % hop)
        run.end(step, SKIPPED)
