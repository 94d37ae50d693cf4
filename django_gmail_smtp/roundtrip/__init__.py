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

The package, one job a module: :mod:`.steps` (names and titles), :mod:`.trip` (the options and
the tagged message), :mod:`.receive` (into the mailbox), :mod:`.mailbox` (the course IMAP and POP3
share), :mod:`.imap_round` and :mod:`.pop_round` (finding the message), :mod:`.headers` and
:mod:`.analysis` (reading what arrived), :mod:`.cleanup` (deleting it, signing out),
:mod:`.failures` (naming a failure). Its exit statuses are in :mod:`django_gmail_smtp.exit_status`.
"""

from .failures import describe_mailbox_error
from .headers import address_of, auth_results, receiving_hop
from .receive import receive
from .steps import IMAP, POP3, ROUND_TRIP_STEPS, STEP_TITLES, VIA
from .trip import DEFAULT_TIMEOUT, SUBJECT_PREFIX, Delivered, RoundTrip

__all__ = [
    "DEFAULT_TIMEOUT",
    "IMAP",
    "POP3",
    "ROUND_TRIP_STEPS",
    "STEP_TITLES",
    "SUBJECT_PREFIX",
    "VIA",
    "Delivered",
    "RoundTrip",
    "address_of",
    "auth_results",
    "describe_mailbox_error",
    "receive",
    "receiving_hop",
]
