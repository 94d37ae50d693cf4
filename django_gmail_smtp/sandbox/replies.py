"""Gmail's SMTP replies, word for word, as the sandbox sends them.

Each function takes the session id (Gmail's ``<id> - gsmtp`` tail changes with every
connection) and returns the reply as one string; multi-line replies are joined with CRLF
(``smtplib`` joins their texts with ``"\\n"``). Texts come from ``/work/shared/GMAIL.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

MORE_INFO = "For more information, go to"
HELP_URL = "https://support.google.com/a/answer/3221692"


def lines(code: int, status: str, texts: Sequence[str], sid: str | None) -> str:
    """Build a (possibly multi-line) reply; the last line gets the ``<sid> - gsmtp`` tail."""
    out = []
    for number, text in enumerate(texts, start=1):
        last = number == len(texts)
        sep = " " if last else "-"
        tail = f" {sid} - gsmtp" if last and sid else ""
        out.append(f"{code}{sep}{status} {text}{tail}")
    return "\r\n".join(out)


def one(code: int, status: str, text: str, sid: str | None) -> str:
    """A single-line reply."""
    return lines(code, status, [text], sid)


def greeting(server_name: str, sid: str) -> str:
    return f"220 {server_name} ESMTP {sid} - gsmtp"


def ehlo(server_name: str, client_ip: str, extensions: Sequence[str]) -> str:
    texts = [f"{server_name} at your service, [{client_ip}]", *extensions]
    return "\r\n".join(f"250{' ' if n == len(texts) else '-'}{text}" for n, text in enumerate(texts, start=1))


def helo(server_name: str) -> str:
    return f"250 {server_name} at your service"


def empty_helo(sid: str) -> str:
    return lines(
        501,
        "5.5.4",
        [
            "Empty HELO/EHLO argument not allowed, closing connection.",
            " https://support.google.com/mail/?p=helo",
        ],
        sid,
    )


def invalid_helo(argument: str, sid: str) -> str:
    return lines(
        501,
        "5.5.4",
        [
            f'HELO/EHLO argument "{argument}" invalid, closing connection.',
            " https://support.google.com/mail/?p=helo",
        ],
        sid,
    )


def ready_to_start_tls() -> str:
    return "220 2.0.0 Ready to start TLS"


def accepted() -> str:
    return "235 2.7.0 Accepted"


def mail_ok(sid: str) -> str:
    return one(250, "2.1.0", "OK", sid)


def rcpt_ok(sid: str) -> str:
    return one(250, "2.1.5", "OK", sid)


def go_ahead(sid: str) -> str:
    return f"354 Go ahead {sid} - gsmtp"


def message_ok(sid: str, epoch: int) -> str:
    return one(250, "2.0.0", f"OK  {epoch}", sid)


def chunk_ok(size: int) -> str:
    return f"250 2.0.0 {size} bytes received"


def flushed(sid: str) -> str:
    return one(250, "2.1.5", "Flushed", sid)


def noop(sid: str) -> str:
    return one(250, "2.0.0", "OK", sid)


def closing(sid: str) -> str:
    return one(221, "2.0.0", "closing connection", sid)


def help_text(sid: str) -> str:
    return one(214, "2.0.0", "https://www.google.com/search?btnI&q=RFC+5321", sid)


def vrfy(sid: str) -> str:
    return one(252, "2.1.5", "Send some mail, I'll try my best", sid)


def unrecognized(sid: str) -> str:
    return one(502, "5.5.1", "Unrecognized command.", sid)


def unimplemented(sid: str) -> str:
    return one(502, "5.5.1", "Unimplemented command.", sid)


def must_starttls(sid: str) -> str:
    return one(530, "5.7.0", "Must issue a STARTTLS command first.", sid)


def auth_required(sid: str) -> str:
    return lines(
        530,
        "5.7.0",
        ["Authentication Required. " + MORE_INFO, " https://support.google.com/mail/?p=WantAuthError"],
        sid,
    )


def bad_credentials(sid: str) -> str:
    return lines(
        535,
        "5.7.8",
        [
            "Username and Password not accepted. " + MORE_INFO,
            " https://support.google.com/mail/?p=BadCredentials",
        ],
        sid,
    )


def app_password_required(sid: str) -> str:
    return lines(
        534,
        "5.7.9",
        [
            "Application-specific password required. " + MORE_INFO,
            " https://support.google.com/mail/?p=InvalidSecondFactor",
        ],
        sid,
    )


def web_login_required(sid: str) -> str:
    return lines(
        534,
        "5.7.14",
        [
            "<https://accounts.google.com/signin/continue?sarp=1&scc=1&plt=GMAILSANDBOX>"
            " Please log in via your web browser and",
            "then try again.",
            " Learn more at",
            " https://support.google.com/mail/answer/78754",
        ],
        sid,
    )


def too_many_logins(sid: str) -> str:
    return one(454, "4.7.0", "Too many login attempts, please try again later.", sid)


def unrecognized_auth_type(sid: str) -> str:
    return one(504, "5.7.4", "Unrecognized authentication type.", sid)


def cannot_decode(sid: str) -> str:
    return one(501, "5.5.2", "Cannot Decode response", sid)


def throttled(sid: str) -> str:
    return one(421, "4.7.0", "Try again later, closing connection.", sid)


def temporary(sid: str) -> str:
    return one(451, "4.7.0", "Temporary System Problem.  Try again later (WS).", sid)


def daily_quota(sid: str) -> str:
    return lines(
        550,
        "5.4.5",
        [
            "Daily user sending limit exceeded. For more information on Gmail",
            " sending limits go to https://support.google.com/a/answer/166852",
        ],
        sid,
    )


def too_large(sid: str) -> str:
    return lines(
        552,
        "5.2.3",
        [
            "Your message exceeded Google's message size limits. " + MORE_INFO,
            " https://support.google.com/mail/?p=MaxSizeError",
        ],
        sid,
    )


def too_many_recipients(sid: str) -> str:
    return lines(
        452,
        "4.5.3",
        [
            "Your message has too many recipients. For more information regarding",
            "Google's sending limits, visit",
            " https://support.google.com/mail/?p=TooManyRecipientsError",
        ],
        sid,
    )


def bad_recipient(address: str, sid: str) -> str:
    return lines(
        553,
        "5.1.3",
        [
            f"The recipient address <{address}> is not a valid RFC-5321 address. " + MORE_INFO,
            " " + HELP_URL,
        ],
        sid,
    )


def bad_sender(address: str, sid: str) -> str:
    return lines(
        553,
        "5.1.7",
        [
            f"The sender address <{address}> is not a valid RFC-5321 address. " + MORE_INFO,
            " " + HELP_URL,
        ],
        sid,
    )


def syntax_error(sid: str) -> str:
    return lines(555, "5.5.2", ["Syntax error, cannot decode response. " + MORE_INFO, " " + HELP_URL], sid)


def line_too_long(sid: str) -> str:
    return lines(555, "5.5.2", ["Syntax error, command line too long. " + MORE_INFO, " " + HELP_URL], sid)


def unsupported_option(option: str, sid: str) -> str:
    return one(555, "5.5.4", f"Unsupported option: {option}", sid)


def bad_sequence(text: str, sid: str) -> str:
    return one(503, "5.5.1", text, sid)


def bdat_syntax(sid: str) -> str:
    return one(501, "5.5.4", "Syntax: BDAT <size> [LAST]", sid)


def idle_timeout(sid: str) -> str:
    return one(451, "4.4.2", "Timeout - closing connection.", sid)


def local_error(sid: str) -> str:
    return one(451, "4.3.0", "Mail server temporarily rejected message.", sid)
