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

The package, one job a module: :mod:`.steps` (names, titles, time bounds, a failure's cause),
:mod:`.configuration` (step 0), :mod:`.reach` (DNS and TCP), :mod:`.conversation` (the SMTP
steps), :mod:`.probes` (what refines a failed greeting or TLS step), :mod:`.message` (the test
message), :mod:`.entry_points` and :mod:`.schema`. The result is
:class:`~django_gmail_smtp.diagnosis.Diagnosis`, its exit status from
:mod:`django_gmail_smtp.exit_status`; the round trip is :mod:`django_gmail_smtp.roundtrip`.
"""

from ..diagnosis import FAILED, OK, SCHEMA_VERSION, SKIPPED, WARNING, Diagnosis, Run, Step, StepCallback
from ..exceptions import describe_error
from ..exit_status import EXIT_CODES, EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, ROUND_TRIP_EXIT_CODES
from .configuration import config_error
from .entry_points import check, run_check
from .schema import JSON_SCHEMA
from .steps import STEP_IDS, STEP_NAMES, STEP_TITLES, Waits

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
    "STEP_TITLES",
    "WARNING",
    "Diagnosis",
    "Run",
    "Step",
    "StepCallback",
    "Waits",
    "check",
    "config_error",
    "describe_error",
    "run_check",
]
