"""Short probes that refine a failed greeting or TLS step: does the port speak TLS, does it greet
in plain text, and who signed a certificate that failed verification.

Each takes at most its ``wait`` in all, on a connection of its own; none sends a credential.
"""

from __future__ import annotations

import smtplib
import ssl

from cryptography import x509
from cryptography.x509.oid import NameOID
from django.core.mail.utils import DNS_NAME

from ..conf import SmtpConfig
from ..deadline import Deadline, connect, handshake, set_timeout
from ..sandbox.constants import SANDBOX_CA_ORGANIZATION
from ..session import BoundedSMTP, make_ssl_context

__all__ = ["is_sandbox_ca", "probe_issuer", "probe_plain_greeting", "probe_tls"]


def probe_tls(config: SmtpConfig, wait: float) -> str:
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


def probe_plain_greeting(config: SmtpConfig, wait: float) -> str:
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


def probe_issuer(config: SmtpConfig, wait: float) -> x509.Name | None:
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


def is_sandbox_ca(issuer: x509.Name) -> bool:
    """Whether ``issuer`` is the Gmail sandbox's own CA."""
    names = issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(name.value == SANDBOX_CA_ORGANIZATION for name in names)
