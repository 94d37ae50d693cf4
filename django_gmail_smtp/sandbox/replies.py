"""Gmail's SMTP replies, word for word, as the sandbox sends them: a table of code, status and lines.

Each reply is a :class:`Reply` (its code, its enhanced status code, its lines of text), called
with the session id (Gmail's ``<id> - gsmtp`` tail changes with every connection) and the values
of its ``{fields}``; it returns the reply as one string, multi-line replies joined with CRLF
(``smtplib`` joins their texts with ``"\\n"``). Without a session id there is no tail (Gmail
sends none after ``STARTTLS``, ``AUTH`` or a ``BDAT`` chunk). Texts come from
``/work/shared/GMAIL.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MORE_INFO = "For more information, go to"
HELP_URL = "https://support.google.com/a/answer/3221692"


def build(code: int, status: str, texts: Sequence[str], sid: str | None) -> str:
    """A (possibly multi-line) reply; the last line gets the ``<sid> - gsmtp`` tail when there is a sid."""
    out = []
    for number, text in enumerate(texts, start=1):
        last = number == len(texts)
        separator = " " if last else "-"
        tail = f" {sid} - gsmtp" if last and sid else ""
        out.append(f"{code}{separator}{status + ' ' if status else ''}{text}{tail}")
    return "\r\n".join(out)


@dataclass(frozen=True)
class Reply:
    """One of Gmail's replies: its code, enhanced status code ("" for none) and lines of text."""

    code: int
    status: str
    lines: tuple[str, ...]

    def __call__(self, sid: str | None = None, /, **values: object) -> str:
        """The reply with the session id's tail (if any) and ``values`` in its ``{fields}``."""
        return build(self.code, self.status, [line.format(**values) for line in self.lines], sid)


def ehlo(server_name: str, client_ip: str, extensions: Sequence[str]) -> str:
    """The EHLO reply: the greeting line, then one line per extension (no session id)."""
    return build(250, "", [f"{server_name} at your service, [{client_ip}]", *extensions], None)


# -- the table ------------------------------------------------------------------------------------
# The session and the message.
helo = Reply(250, "", ("{server_name} at your service",))
ready_to_start_tls = Reply(220, "2.0.0", ("Ready to start TLS",))
accepted = Reply(235, "2.7.0", ("Accepted",))
mail_ok = Reply(250, "2.1.0", ("OK",))
rcpt_ok = Reply(250, "2.1.5", ("OK",))
go_ahead = Reply(354, "", ("Go ahead",))
message_ok = Reply(250, "2.0.0", ("OK  {epoch}",))
chunk_ok = Reply(250, "2.0.0", ("{size} bytes received",))
flushed = Reply(250, "2.1.5", ("Flushed",))
noop = Reply(250, "2.0.0", ("OK",))
closing = Reply(221, "2.0.0", ("closing connection",))
help_text = Reply(214, "2.0.0", ("https://www.google.com/search?btnI&q=RFC+5321",))
vrfy = Reply(252, "2.1.5", ("Send some mail, I'll try my best",))

# Commands out of place or not understood.
empty_helo = Reply(
    501,
    "5.5.4",
    ("Empty HELO/EHLO argument not allowed, closing connection.", " https://support.google.com/mail/?p=helo"),
)
invalid_helo = Reply(
    501,
    "5.5.4",
    ('HELO/EHLO argument "{argument}" invalid, closing connection.', " https://support.google.com/mail/?p=helo"),
)
unrecognized = Reply(502, "5.5.1", ("Unrecognized command.",))
unimplemented = Reply(502, "5.5.1", ("Unimplemented command.",))
bad_sequence = Reply(503, "5.5.1", ("{text}",))
syntax_error = Reply(555, "5.5.2", ("Syntax error, cannot decode response. " + MORE_INFO, " " + HELP_URL))
line_too_long = Reply(555, "5.5.2", ("Syntax error, command line too long. " + MORE_INFO, " " + HELP_URL))
unsupported_option = Reply(555, "5.5.4", ("Unsupported option: {option}",))
bdat_syntax = Reply(501, "5.5.4", ("Syntax: BDAT <size> [LAST]",))

# Signing in.
must_starttls = Reply(530, "5.7.0", ("Must issue a STARTTLS command first.",))
auth_required = Reply(
    530, "5.7.0", ("Authentication Required. " + MORE_INFO, " https://support.google.com/mail/?p=WantAuthError")
)
bad_credentials = Reply(
    535,
    "5.7.8",
    ("Username and Password not accepted. " + MORE_INFO, " https://support.google.com/mail/?p=BadCredentials"),
)
app_password_required = Reply(
    534,
    "5.7.9",
    ("Application-specific password required. " + MORE_INFO, " https://support.google.com/mail/?p=InvalidSecondFactor"),
)
web_login_required = Reply(
    534,
    "5.7.14",
    (
        "<https://accounts.google.com/signin/continue?sarp=1&scc=1&plt=GMAILSANDBOX> Please log in via your web browser and",
        "then try again.",
        " Learn more at",
        " https://support.google.com/mail/answer/78754",
    ),
)
too_many_logins = Reply(454, "4.7.0", ("Too many login attempts, please try again later.",))
unrecognized_auth_type = Reply(504, "5.7.4", ("Unrecognized authentication type.",))
cannot_decode = Reply(501, "5.5.2", ("Cannot Decode response",))

# The sender, the recipients and the message refused.
bad_sender = Reply(
    553, "5.1.7", ("The sender address <{address}> is not a valid RFC-5321 address. " + MORE_INFO, " " + HELP_URL)
)
bad_recipient = Reply(
    553, "5.1.3", ("The recipient address <{address}> is not a valid RFC-5321 address. " + MORE_INFO, " " + HELP_URL)
)
too_many_recipients = Reply(
    452,
    "4.5.3",
    (
        "Your message has too many recipients. For more information regarding",
        "Google's sending limits, visit",
        " https://support.google.com/mail/?p=TooManyRecipientsError",
    ),
)
too_large = Reply(
    552,
    "5.2.3",
    (
        "Your message exceeded Google's message size limits. " + MORE_INFO,
        " https://support.google.com/mail/?p=MaxSizeError",
    ),
)
daily_quota = Reply(
    550,
    "5.4.5",
    (
        "Daily user sending limit exceeded. For more information on Gmail",
        " sending limits go to https://support.google.com/a/answer/166852",
    ),
)

# Gmail having a problem.
throttled = Reply(421, "4.7.0", ("Try again later, closing connection.",))
temporary = Reply(451, "4.7.0", ("Temporary System Problem.  Try again later (WS).",))
idle_timeout = Reply(451, "4.4.2", ("Timeout - closing connection.",))
local_error = Reply(451, "4.3.0", ("Mail server temporarily rejected message.",))
