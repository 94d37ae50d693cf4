"""The backend as a drop-in for Django's SMTP backend, against the sandbox over real TLS."""

import base64
import smtplib
import ssl

import django
import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, EmailMultiAlternatives

from django_gmail_smtp import pool
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.exceptions import GmailSMTPError, TLSRequiredError
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER

from .conftest import legacy_api

BACKEND = "django_gmail_smtp.backend.EmailBackend"
needs_mailers = pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")


def message(**kwargs):
    defaults = {"subject": "Hello", "body": "Body", "from_email": SANDBOX_USER, "to": ["to@example.com"]}
    return EmailMessage(**(defaults | kwargs))


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_sends_over_tls_and_signs_in(make_backend, gmail_sandbox, mode):
    backend = make_backend(mode)
    assert backend.send_messages([message(subject=f"via {mode}")]) == 1
    [received] = gmail_sandbox.wait_for_messages(1)
    assert received.tls is True
    assert received.auth_user == SANDBOX_USER
    assert received.mail_from == SANDBOX_USER
    assert received.rcpt_tos == ["to@example.com"]
    assert received.message["Subject"] == f"via {mode}"
    assert received.port == (gmail_sandbox.ssl_port if mode == "ssl" else gmail_sandbox.starttls_port)


def test_open_and_close_follow_djangos_contract(make_backend, gmail_sandbox):
    backend = make_backend()
    assert backend.open() is True
    assert backend.open() is False
    assert isinstance(backend.connection, smtplib.SMTP)
    backend.close()
    assert backend.connection is None
    backend.close()  # closing twice is harmless


def test_context_manager_reuses_one_connection(make_backend, gmail_sandbox):
    with make_backend() as backend:
        assert backend.send_messages([message(subject="one")]) == 1
        assert backend.send_messages([message(subject="two")]) == 1
    assert backend.connection is None
    assert [m.message["Subject"] for m in gmail_sandbox.wait_for_messages(2)] == ["one", "two"]
    assert gmail_sandbox.connections == 1
    assert gmail_sandbox.auth_attempts == 1


def test_close_tolerates_a_server_that_hung_up(make_backend, gmail_sandbox):
    gmail_sandbox.inject("disconnect_after", messages=1)
    backend = make_backend()
    backend.open()
    assert backend.send_messages([message()]) == 1
    backend.close()
    assert backend.connection is None


def test_returned_count_skips_messages_without_recipients(make_backend, gmail_sandbox):
    backend = make_backend()
    assert backend.send_messages([message(to=[]), message(), message(to=["a@example.com"], bcc=["b@example.com"])]) == 2
    received = gmail_sandbox.wait_for_messages(2)
    assert received[1].rcpt_tos == ["a@example.com", "b@example.com"]
    assert "b@example.com" not in received[1].data.decode()  # Bcc stays out of the headers
    assert backend.send_messages([]) == 0


def test_multipart_with_attachments_arrives_intact(make_backend, gmail_sandbox):
    payload = bytes(range(256)) * 64
    msg = EmailMultiAlternatives("Report", "plain text", SANDBOX_USER, ["to@example.com"])
    msg.attach_alternative("<p>html</p>", "text/html")
    msg.attach("data.bin", payload, "application/octet-stream")
    msg.attach("報告書.txt", "日本語の添付\n", "text/plain")
    assert make_backend().send_messages([msg]) == 1
    received = gmail_sandbox.wait_for_messages(1)[0].message
    attachments = {part.get_filename(): part.get_content() for part in received.iter_attachments()}
    assert attachments["data.bin"] == payload
    assert attachments["報告書.txt"].splitlines() == ["日本語の添付"]  # CRLF on the wire, as Django sends it
    assert received.get_body(("html",)).get_content().strip() == "<p>html</p>"


def test_japanese_subject_body_and_display_names(make_backend, gmail_sandbox):
    msg = EmailMessage(
        "件名：お問い合わせありがとうございます",
        "本文です。よろしくお願いいたします。",
        f"山田 太郎 <{SANDBOX_USER}>",
        ["佐藤 花子 <hanako@example.com>"],
    )
    assert make_backend().send_messages([msg]) == 1
    received = gmail_sandbox.wait_for_messages(1)[0]
    # Django 5.2 folds an encoded Subject onto a continuation line; parsers keep a leading space.
    assert received.message["Subject"].strip() == "件名：お問い合わせありがとうございます"
    assert received.message["From"].addresses[0].display_name == "山田 太郎"
    assert received.message["To"].addresses[0].display_name == "佐藤 花子"
    assert received.message.get_content().strip() == "本文です。よろしくお願いいたします。"
    assert received.rcpt_tos == ["hanako@example.com"]


def test_idn_domains_are_punycoded_in_the_envelope(make_backend, gmail_sandbox):
    assert make_backend().send_messages([message(to=["info@例え.jp"])]) == 1
    assert gmail_sandbox.wait_for_messages(1)[0].rcpt_tos == ["info@xn--r8jz45g.jp"]


def test_header_injection_is_refused_and_nothing_is_sent(make_backend, gmail_sandbox):
    with pytest.raises(ValueError, match=r"(?i)newline|linefeed"):
        make_backend().send_messages([message(subject="Hi\nBcc: victim@example.com")])
    assert gmail_sandbox.messages == []


def test_app_password_with_spaces_as_google_shows_it(make_backend, gmail_sandbox):
    spaced = " ".join(SANDBOX_PASSWORD[i : i + 4] for i in range(0, 16, 4))
    assert make_backend(password=spaced).send_messages([message()]) == 1


def test_wrong_password_explains_the_fix_and_keeps_smtplib_type(make_backend, gmail_sandbox):
    backend = make_backend(password="notthepassword")
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        backend.send_messages([message()])
    exc = info.value
    assert isinstance(exc, GmailSMTPError)
    assert exc.smtp_code == 535
    assert exc.cause.id == "bad_credentials"
    assert "app password" in str(exc)
    assert "notthepassword" not in str(exc)
    assert "notthepassword" not in backend.transcript.render()
    assert gmail_sandbox.messages == []


@pytest.mark.parametrize(
    ("kind", "cause_id", "code"),
    [
        ("app_password_required", "app_password_required", 534),
        ("web_login_required", "web_login_required", 534),
        ("too_many_logins", "too_many_logins", 454),
    ],
)
def test_gmail_sign_in_refusals_are_explained(make_backend, gmail_sandbox, kind, cause_id, code):
    gmail_sandbox.inject(kind)
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        make_backend().open()
    assert (info.value.smtp_code, info.value.cause.id) == (code, cause_id)


@pytest.mark.parametrize(
    ("kind", "exc_type", "cause_id"),
    [
        ("daily_quota", smtplib.SMTPSenderRefused, "daily_quota"),
        ("throttled", smtplib.SMTPSenderRefused, "throttled"),
        ("temporary", smtplib.SMTPSenderRefused, "temporary"),
    ],
)
def test_send_failures_are_explained(make_backend, gmail_sandbox, kind, exc_type, cause_id):
    gmail_sandbox.inject(kind, times=None)  # outlasts the retries of temporary failures
    with pytest.raises(exc_type) as info:
        make_backend().send_messages([message()])
    assert info.value.cause.id == cause_id
    assert gmail_sandbox.messages == []


def test_transcript_redacts_credentials(make_backend, gmail_sandbox):
    backend = make_backend()
    backend.send_messages([message()])
    transcript = backend.transcript.render()
    plain = base64.b64encode(f"\0{SANDBOX_USER}\0{SANDBOX_PASSWORD}".encode()).decode()
    assert "AUTH PLAIN <redacted>" in transcript
    assert SANDBOX_PASSWORD not in transcript
    assert plain not in transcript
    assert "235 2.7.0 Accepted" in transcript
    assert "<- 250 2.0.0 OK" in transcript


def test_certificates_are_verified(make_backend, gmail_sandbox):
    backend = make_backend(ssl_cafile=None)  # the system CAs do not know the sandbox's CA
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        backend.open()
    # On loopback an untrusted certificate is the sandbox's (or another local server's): say so.
    assert info.value.cause.id == "sandbox_cert_untrusted"
    assert "GMAIL_SMTP['SSL_CAFILE']" in str(info.value)
    assert gmail_sandbox.auth_attempts == 0


def test_hostname_is_verified(gmail_sandbox):
    from django_gmail_smtp.sandbox import GmailSandbox

    with GmailSandbox(cert_hostnames=("other.example",)) as other:
        backend = EmailBackend(**other.mailer_options("ssl"))
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            backend.open()
    assert info.value.cause.id == "cert_hostname_mismatch"


def test_implicit_tls_on_the_starttls_port_is_explained(make_backend, gmail_sandbox):
    backend = make_backend("ssl", port=gmail_sandbox.starttls_port)
    with pytest.raises(ssl.SSLError) as info:
        backend.open()
    assert info.value.cause.id == "tls_on_starttls_port"


def test_a_server_that_never_greets_fails_within_the_timeout(make_backend, gmail_sandbox):
    gmail_sandbox.inject("no_greeting")
    backend = make_backend(timeout=0.5)
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend.open()
    assert info.value.cause.id == "no_greeting"
    assert info.value.stage == "greeting"


def test_connection_refused_and_fail_silently(make_backend, gmail_sandbox):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    backend = make_backend(port=closed_port)
    with pytest.raises(ConnectionRefusedError) as info:
        backend.open()
    assert info.value.cause.id == "connection_refused"
    quiet = make_backend(port=closed_port, fail_silently=True)
    assert quiet.open() is None
    assert quiet.send_messages([message()]) == 0


def test_fail_silently_swallows_smtp_errors_but_not_configuration_errors(make_backend, gmail_sandbox):
    gmail_sandbox.inject("daily_quota")
    assert make_backend(fail_silently=True).send_messages([message()]) == 0
    with pytest.raises(ImproperlyConfigured):
        EmailBackend(host="smtp.gmail.com", port=465, use_tls=True, fail_silently=True)


def test_starttls_configured_but_not_offered_refuses_to_sign_in():
    from django_gmail_smtp.sandbox import GmailSandbox

    with GmailSandbox(offer_starttls=False, require_tls_for_auth=False) as plain:
        backend = EmailBackend(**plain.mailer_options("starttls"))
        with pytest.raises(smtplib.SMTPNotSupportedError) as info:
            backend.open()
        assert info.value.cause.id == "starttls_not_offered"
        assert plain.auth_attempts == 0


def test_no_password_over_plaintext_to_a_remote_peer(monkeypatch):
    from django_gmail_smtp.sandbox import GmailSandbox
    from django_gmail_smtp.session import SMTPSession

    with GmailSandbox(offer_starttls=False, require_tls_for_auth=False) as plain:
        options = plain.mailer_options("starttls") | {"use_tls": False}
        # Loopback is the one exemption (the sandbox, a local relay): sign-in works.
        assert EmailBackend(**options).send_messages([message()]) == 1
        assert plain.wait_for_messages(1)[0].tls is False
        # Anywhere else, the password is not sent.
        pool.close_all()  # no reuse of the connection signed in above
        monkeypatch.setattr(SMTPSession, "_peer_is_loopback", lambda self: False)
        with pytest.raises(TLSRequiredError) as info:
            EmailBackend(**options).open()
        assert info.value.cause.id == "tls_required"
        assert plain.auth_attempts == 1


def test_gmail_defaults_and_finite_timeout():
    backend = EmailBackend()
    assert (backend.host, backend.port, backend.use_tls, backend.use_ssl) == ("smtp.gmail.com", 587, True, False)
    assert backend.timeout == 10.0
    assert EmailBackend(port=465).use_ssl is True


def test_tls_and_ssl_together_raise_like_django():
    with pytest.raises(ValueError, match="mutually exclusive"):
        EmailBackend(use_tls=True, use_ssl=True)


# -- Django's public API with settings ----------------------------------------------


@legacy_api
def test_send_mail_with_email_settings(legacy_settings, gmail_sandbox):
    assert mail.send_mail("Subject", "Body", SANDBOX_USER, ["to@example.com"]) == 1
    assert gmail_sandbox.wait_for_messages(1)[0].message["Subject"] == "Subject"


@legacy_api
def test_send_mass_mail_uses_one_connection(legacy_settings, gmail_sandbox):
    datatuple = [(f"Subject {i}", "Body", SANDBOX_USER, [f"r{i}@example.com"]) for i in range(3)]
    assert mail.send_mass_mail(datatuple) == 3
    assert len(gmail_sandbox.wait_for_messages(3)) == 3
    assert gmail_sandbox.connections == 1


@legacy_api
def test_get_connection_keywords_override_settings(legacy_settings, gmail_sandbox):
    connection = mail.get_connection(BACKEND, fail_silently=True, password="wrong-password")
    assert isinstance(connection, EmailBackend)
    assert connection.fail_silently is True
    assert connection.send_messages([message()]) == 0  # 535, swallowed
    assert mail.send_mail("s", "b", SANDBOX_USER, ["to@example.com"], auth_password=SANDBOX_PASSWORD) == 1


@legacy_api
def test_send_mail_fail_silently(legacy_settings, gmail_sandbox):
    gmail_sandbox.inject("daily_quota")
    assert mail.send_mail("s", "b", SANDBOX_USER, ["to@example.com"], fail_silently=True) == 0
    gmail_sandbox.inject("daily_quota")
    with pytest.raises(smtplib.SMTPSenderRefused):
        mail.send_mail("s", "b", SANDBOX_USER, ["to@example.com"])


@needs_mailers
def test_mailers_options_on_django_61(settings, gmail_sandbox):
    from django.core.mail import mailers

    options = gmail_sandbox.mailer_options("ssl")
    settings.MAILERS = {
        "default": {"BACKEND": BACKEND, "OPTIONS": options},
        "starttls": {"BACKEND": BACKEND, "OPTIONS": gmail_sandbox.mailer_options("starttls")},
    }
    assert mail.send_mail("default mailer", "Body", SANDBOX_USER, ["to@example.com"]) == 1
    assert mail.send_mail("other mailer", "Body", SANDBOX_USER, ["to@example.com"], using="starttls") == 1
    first, second = gmail_sandbox.wait_for_messages(2)
    assert (first.port, second.port) == (gmail_sandbox.ssl_port, gmail_sandbox.starttls_port)
    backend = mailers["starttls"]
    assert isinstance(backend, EmailBackend)
    assert backend.alias == "starttls"
    assert backend.config.provenance["host"].origin == "MAILERS['starttls']['OPTIONS']['host']"


@needs_mailers
def test_mailers_unknown_option_is_invalid_mailer(settings):
    from django.core.mail import InvalidMailer, mailers

    settings.MAILERS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"hots": "smtp.gmail.com"}}}
    with pytest.raises(InvalidMailer, match="hots"):
        mailers["default"]
