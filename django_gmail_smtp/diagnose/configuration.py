"""Step 0: the configuration against the validation rules, before anything goes over the network
(and the diagnosis of a configuration that could not even be resolved).

A rule's finding fails the step in the rule's own words (they name the setting and where its
value came from), under the cause catalogue's stable id where one says the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from django.utils.translation import get_language
from django.utils.translation import gettext as _

from .. import rules
from ..causes import CATALOGUE, Cause
from ..conf import SmtpConfig
from ..diagnosis import OK, WARNING, Diagnosis, Run
from ..exceptions import GmailConfigError
from ..rules import Problem
from .steps import title

if TYPE_CHECKING:
    from ..roundtrip.trip import RoundTrip

__all__ = ["RULE_CAUSES", "check_config", "config_error", "credentials_cause", "problem_cause"]

# Rule ids that have a catalogue entry saying the same thing with a stable cause id.
RULE_CAUSES = {
    "gmail_smtp.E001": "tls_and_ssl",
    "gmail_smtp.E003": "plain_on_tls_port",
    "gmail_smtp.E004": "tls_on_starttls_port",
    "gmail_smtp.E005": "username_missing",
    "gmail_smtp.E007": "password_missing",
    "gmail_smtp.E014": "oauth_extra_missing",
}


def problem_cause(problem: Problem) -> Cause:
    """The rule's own words (they name the setting and where its value came from), under
    the catalogue's stable id when there is one, else under the rule's id."""
    known = CATALOGUE.get(RULE_CAUSES.get(problem.id, ""))
    if known is not None:
        return replace(known, summary=problem.message, fix=problem.hint or known.fix)
    return Cause(problem.id, problem.message, problem.hint)


def credentials_cause(config: SmtpConfig, errors: Sequence[Problem]) -> Cause | None:
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


def check_config(run: Run, config: SmtpConfig, round_trip: RoundTrip | None = None) -> bool:
    """The configuration step; False when it failed (nothing may go over the network then)."""
    step = run.begin("config", title("config"))
    problems = rules.unsilenced(rules.check_config(config))
    run.diagnosis.problems = problems
    errors = [p for p in problems if p.is_error]
    warnings = [p for p in problems if not p.is_error]
    step.data = {"errors": len(errors), "warnings": len(warnings), "security": config.security}
    for problem in problems:
        level = _("error") if problem.is_error else _("warning")
        step.details.append(f"{problem.id} ({level}): {problem.message}")
        step.details.append("    " + _("Hint: %(hint)s") % {"hint": problem.hint})
    missing = credentials_cause(config, errors)
    if missing is None and round_trip is not None:
        missing = round_trip.config_cause(config)
    for problem in errors:  # the rule says the same, naming the setting: use its words
        if missing is not None and RULE_CAUSES.get(problem.id) == missing.id:
            missing = problem_cause(problem)
    if missing is not None and not errors:
        step.details.append(str(missing.summary))
    if errors or missing is not None:
        cause = missing if missing is not None else problem_cause(errors[0])
        error = str(errors[0].message) if errors else str(cause.summary)
        run.fail(step, cause, error)
        return False
    run.end(step, WARNING if warnings else OK)
    return True


def config_error(exc: GmailConfigError, *, config_name: str = "") -> Diagnosis:
    """The :class:`Diagnosis` of a configuration that ``conf.resolve()`` refused."""
    problem = rules.problem_from_error(exc, config_name)
    diagnosis = Diagnosis(config=None, problems=[problem], language=get_language() or "")
    run = Run(diagnosis, None, None)
    step = run.begin("config", title("config"))
    step.details.append(_("%(id)s (error): %(message)s") % {"id": problem.id, "message": problem.message})
    if problem.hint:
        step.details.append("    " + _("Hint: %(hint)s") % {"hint": problem.hint})
    cause = problem_cause(problem)
    if not str(cause.fix):
        cause = replace(cause, fix=CATALOGUE["invalid_setting"].fix)
    run.fail(step, cause, exc.message)
    return diagnosis
