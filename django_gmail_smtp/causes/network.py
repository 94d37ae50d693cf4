"""Causes on the way to the server: DNS, TCP, TLS and certificates, and servers that misbehave."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from .cause import CHOOSE_STARTTLS, Cause

CAUSES: tuple[Cause, ...] = (
    Cause(
        "dns_failure",
        _("The mail server's host name could not be resolved."),
        _("Check the host name for typos (Gmail: smtp.gmail.com) and the machine's DNS settings."),
    ),
    Cause(
        "dns_timeout",
        _("The DNS lookup of the mail server's host name did not finish within the timeout."),
        _(
            "Check the machine's DNS resolver (/etc/resolv.conf, or the container's DNS "
            "settings); a working resolver answers in well under a second."
        ),
        temporary=True,
    ),
    Cause(
        "network_unreachable",
        _("The network is unreachable (often a broken IPv6 route)."),
        _("Check the machine's routes; if only IPv6 is broken, prefer IPv4 for the mail host."),
    ),
    Cause(
        "connection_refused",
        _("The server refused the connection: nothing listens on that host and port."),
        _("Check the host and port (Gmail: smtp.gmail.com, 587 or 465)."),
    ),
    Cause(
        "port_blocked",
        _("The connection attempt timed out: outbound SMTP looks blocked."),
        _(
            "Many hosts block outbound ports 25/465/587 (e.g. Google Cloud, AWS EC2 and Azure by default "
            "for 25; some PaaS and corporate networks for all). Try the other port (465/587), ask "
            "the host to open it, or use an HTTP mail API."
        ),
    ),
    Cause(
        "no_greeting",
        _("The connection opened but the server never greeted."),
        _(
            "Something between you and the server swallows SMTP: check the port, the TLS mode "
            "(465 needs implicit TLS) and any firewall or proxy."
        ),
    ),
    Cause(
        "plain_on_tls_port",
        _("The server did not greet: this port expects implicit TLS from the first byte."),
        _(
            "Use implicit TLS on port 465 (EMAIL_USE_SSL = True, django-environ 'smtp+ssl://'), "
            "or STARTTLS on port 587. django-environ's 'smtps://' means STARTTLS."
        ),
        form_fix=CHOOSE_STARTTLS,
    ),
    Cause(
        "tls_on_starttls_port",
        _("Implicit TLS was used on a port that expects STARTTLS (wrong version number)."),
        _("Use port 587 with STARTTLS (EMAIL_USE_TLS = True) or port 465 with implicit TLS (EMAIL_USE_SSL = True)."),
        form_fix=CHOOSE_STARTTLS,
    ),
    Cause(
        "tls_no_answer",
        _("The port accepted the connection but never answered the TLS handshake."),
        _(
            "Check the port and the TLS mode: Gmail speaks implicit TLS on 465 "
            "(EMAIL_USE_SSL = True) and STARTTLS on 587 (EMAIL_USE_TLS = True). A firewall "
            "or proxy that swallows the traffic looks the same."
        ),
        form_fix=_(
            "Check the port and the “Security” field: Gmail speaks implicit TLS on 465 and STARTTLS on "
            "587. A firewall or proxy that swallows the traffic looks the same."
        ),
    ),
    Cause(
        "tls_failed",
        _("The TLS handshake failed."),
        _("Check the port and TLS mode; a proxy may be intercepting the connection."),
    ),
    Cause(
        "cert_untrusted",
        _("The server's certificate is not signed by a trusted authority."),
        _(
            "Install the system CA bundle (e.g. ca-certificates, or certifi), or point "
            "GMAIL_SMTP['SSL_CAFILE'] at your proxy's CA file. Never turn verification off."
        ),
    ),
    Cause(
        "sandbox_cert_untrusted",
        _(
            "The server's certificate is not signed by the configured CA, and this looks like the "
            "Gmail sandbox (a server on this machine, or a certificate from a sandbox's own CA)."
        ),
        _(
            "Set GMAIL_SMTP['SSL_CAFILE'] (or GMAIL_SMTP_SSL_CAFILE) to the ca.pem in the folder of "
            "the sandbox you started (.sandbox/ca.pem by default; gmail_sandbox prints the path), and "
            "check the port: it must be the one that sandbox listens on. Each sandbox makes a new CA "
            "when it starts, so the ca.pem of an earlier run or of another sandbox does not fit."
        ),
    ),
    Cause(
        "cert_hostname_mismatch",
        _("The server's certificate is for a different host name."),
        _("Connect using the host name on the certificate (smtp.gmail.com), not an IP address or alias."),
    ),
    Cause(
        "cert_expired",
        _("The server's certificate has expired or is not yet valid."),
        _("Check the machine's clock; otherwise the server's certificate must be renewed."),
    ),
    Cause(
        "not_gmail_server",
        _(
            "The host is Gmail's, but the server did not greet like Gmail: something between this "
            "machine and Gmail answers in its place."
        ),
        _(
            "Look for an antivirus, firewall or corporate proxy that intercepts outbound mail "
            "(ports 25/465/587), and for an /etc/hosts entry or DNS record that sends smtp.gmail.com "
            "elsewhere; try the other port (465/587) or another network."
        ),
    ),
    Cause(
        "timeout",
        _("The server stopped answering within the timeout."),
        _("Retry; if it persists, check the network or raise the timeout a little (10-30 s)."),
        temporary=True,
    ),
    # A hostile or broken server (README.md#hostile-or-broken-servers).
    Cause(
        "deadline_exceeded",
        _(
            "The server answered, but too slowly: the step did not finish within its overall "
            "time limit, which is derived from the timeout."
        ),
        _(
            "Retry; if it persists, check the network and the host (something may be slowing the "
            "connection down). A slow but honest server needs a larger timeout (10-30 s)."
        ),
        temporary=True,
    ),
    Cause(
        "reply_too_long",
        _(
            "The server sent a reply far longer than any real server sends (too many lines or "
            "bytes), so the connection was closed before it could use up memory."
        ),
        _(
            "Check the host and port: Gmail's longest reply is a few lines. Something between this "
            "machine and the server (a proxy, or an attacker before STARTTLS) may be interfering."
        ),
    ),
    Cause(
        "unexpected_error",
        _("An unexpected error happened while talking to the server."),
        _("Read the error shown above; run again with -v 3 for the details."),
        form_fix=_(
            "Read the error shown above and the SMTP transcript below; if it looks like a bug, please report it."
        ),
    ),
)
