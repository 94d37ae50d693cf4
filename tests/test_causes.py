"""The cause catalogue: its tables, and what an SMTP reply means (pure functions, no server)."""

from __future__ import annotations

import pytest
from django.utils import translation

from django_gmail_smtp.causes import CATALOGUE, Cause, Reply, cause, explain_reply
from django_gmail_smtp.causes.lookup import TABLES
from django_gmail_smtp.causes.smtp import REPLIES


def test_every_cause_is_in_one_table_once() -> None:
    ids = [entry.id for table in TABLES for entry in table]
    assert len(ids) == len(set(ids)), "a cause id is in two places: the catalogue would keep only one"
    assert sorted(ids) == sorted(CATALOGUE)
    assert cause("bad_credentials") is CATALOGUE["bad_credentials"]
    with pytest.raises(KeyError):
        cause("no_such_cause")


def test_every_cause_says_what_happened_and_the_fix() -> None:
    for entry in CATALOGUE.values():
        assert str(entry.summary).strip(), entry.id
        assert str(entry.fix).strip(), entry.id
        assert entry.url == "" or entry.url.startswith("https://"), entry.id


def test_every_reply_names_a_catalogued_cause() -> None:
    assert [reply.cause for reply in REPLIES if reply.cause not in CATALOGUE] == []


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (
            535,
            "5.7.8 Username and Password not accepted. https://support.google.com/mail/?p=BadCredentials",
            "bad_credentials",
        ),
        (534, "5.7.9 Application-specific password required. ?p=InvalidSecondFactor", "app_password_required"),
        (
            534,
            "5.7.14 <https://accounts.google.com/signin/continue?...> Please log in via your web browser",
            "web_login_required",
        ),
        (534, "Please go to https://accounts.google.com/WebLoginRequired", "web_login_required"),
        (454, "4.7.0 Too many login attempts, please try again later.", "too_many_logins"),
        (454, "4.7.0 Cannot authenticate due to a temporary system problem.", "temporary"),
        (530, "5.7.0 Must issue a STARTTLS command first.", "starttls_required"),
        (530, "5.7.0 Authentication Required.", "auth_required"),
        (550, "5.4.5 Daily user sending limit exceeded.", "daily_quota"),
        (550, "5.7.1 Rejected.", None),
        (552, "5.3.4 Message size exceeds fixed limit", "message_too_large"),
        (554, "5.2.3 Your message exceeded Google's message size limits.", "message_too_large"),
        (452, "4.5.3 Your message has too many recipients.", "too_many_recipients"),
        (452, "Too many recipients", "too_many_recipients"),
        (452, "4.2.2 The email account that you tried to reach is over quota.", "temporary"),
        (553, "5.1.2 We weren't able to find the recipient domain.", "bad_recipient"),
        (550, "5.1.3 Invalid address", "bad_recipient"),
        (555, "5.5.2 Syntax error, command line too long", "auth_line_too_long"),
        (555, "5.5.2 Syntax error.", "envelope_syntax"),
        (501, "5.5.4 HELO/EHLO argument is invalid.", "bad_ehlo"),
        (501, "5.5.2 Cannot Decode response.", None),
        (451, "4.4.2 Timeout - closing connection.", "idle_timeout"),
        (451, "4.3.0 Mail server temporarily rejected message.", "temporary"),
        (421, "4.7.0 Try again later, closing connection.", "throttled"),
        (450, "4.2.1 The user you are trying to contact is receiving mail too quickly.", "temporary"),
        (250, "2.0.0 OK", None),
        (535, "5.2.3 and a wrong password: the code comes first", "bad_credentials"),  # earlier rows win
    ],
)
def test_a_reply_means_its_cause(code: int, text: str, expected: str | None) -> None:
    found = explain_reply(code, text)
    assert (found.id if found else None) == expected
    raw = explain_reply(code, text.encode())  # the bytes smtplib carries read the same
    assert (raw.id if raw else None) == expected


def test_a_reply_pattern() -> None:
    any_code = Reply("x", statuses=("5.2.3",))
    assert any_code.matches(554, "5.2.3", "")
    assert any_code.matches(452, "5.2.3", "")
    assert not any_code.matches(554, "5.2.4", "")
    words = Reply("x", codes=(454,), words=("login",))
    assert words.matches(454, "", "too many login attempts")
    assert not words.matches(454, "4.7.0", "temporary problem")
    assert not words.matches(455, "", "login")
    assert Reply("x", codes=range(400, 500)).matches(499, "", "")


def test_a_cause_in_lines_and_in_one_line() -> None:
    entry = Cause(
        "some_id", "It broke.", "Mend it.", temporary=True, url="https://example.com/help", form_fix="Tick it."
    )
    with translation.override("en"):
        assert entry.lines() == [
            "Cause: It broke.",
            "Fix: Mend it.",
            "More: https://example.com/help",
            "This is usually temporary: retrying later may work.",
            "Cause id: some_id",
        ]
        assert entry.explain() == "Cause: It broke. Fix: Mend it. https://example.com/help [some_id]"
    assert entry.fix_for(form=True) == "Tick it."
    assert entry.fix_for(form=False) == "Mend it."
    assert Cause("other", "It broke.", "Mend it.").fix_for(form=True) == "Mend it."
