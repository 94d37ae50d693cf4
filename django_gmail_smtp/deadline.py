"""Overall deadlines: a limit on a whole operation, not on each read.

A socket timeout bounds one ``recv()``: a server that sends a byte just before each timeout
holds the caller for ever. A :class:`Deadline` is the moment by which a whole operation must
end (the connection set-up, one command and its replies, a ``send_messages()`` call, an OAuth2
token request); before each blocking call the socket gets what is left of it, and when nothing
is left the operation fails with :class:`~django_gmail_smtp.exceptions.DeadlineExceeded`,
whose message names the deadline. README.md#hostile-or-broken-servers has the numbers.

The one deadline class of the package: the SMTP session, the OAuth2 token request and the
round trip's mailbox clients (:mod:`.bounded_io`) all count down with it. The clock is a
parameter, so a test passes a fake one.
"""

from __future__ import annotations

import math
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .exceptions import DeadlineExceeded

__all__ = ["Deadline", "connect", "handshake", "set_timeout"]

_MESSAGES: dict[str, Promise] = {
    "setup": gettext_lazy(
        "The connection set-up with %(subject)s (TCP, TLS, greeting, EHLO, sign-in) did not finish "
        "within %(seconds)s s, the timeout for the set-up as a whole."
    ),
    "step": gettext_lazy("%(subject)s did not finish within %(seconds)s s, the timeout for the step as a whole."),
    "reply": gettext_lazy(
        "The server's reply did not arrive in full within %(seconds)s s of the command (the timeout)."
    ),
    "write": gettext_lazy("The server did not take the data within %(seconds)s s (the timeout)."),
    "batch": gettext_lazy("send_messages() did not finish within its time budget of %(seconds)s s (%(subject)s)."),
    "token": gettext_lazy("no complete answer within %(seconds)s s, the timeout for the whole request"),
    "overall": gettext_lazy("no answer within the overall limit of %(seconds)s s"),
}


def set_timeout(sock: Any, seconds: float) -> None:
    """``sock.settimeout()`` where an infinite time means blocking (no timeout)."""
    sock.settimeout(None if seconds == math.inf else seconds)


class Deadline:
    """The moment (on ``clock``, ``time.monotonic`` by default) by which an operation must end,
    and what it was for.

    ``kind`` picks the message (``setup``, ``step``, ``reply``, ``write``, ``batch``, ``token``,
    ``overall``: the round trip's mailbox conversation); ``subject`` fills it in (a server, a
    step's name). ``seconds=None`` means no deadline.
    """

    __slots__ = ("at", "clock", "kind", "seconds", "subject")

    def __init__(
        self,
        seconds: float | None,
        kind: str = "overall",
        subject: str | Promise = "",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.kind = kind
        self.subject = subject
        self.clock = clock
        self.at = math.inf if seconds is None else clock() + seconds

    def restart(self) -> None:
        """Start counting again from now (a new exchange)."""
        if self.seconds is not None:
            self.at = self.clock() + self.seconds

    @property
    def expired(self) -> bool:
        return self.clock() >= self.at

    def remaining(self) -> float:
        """Seconds left: negative once passed, ``math.inf`` without a deadline."""
        return self.at - self.clock()

    def left(self) -> float:
        """Seconds left (``math.inf`` without a deadline); raises :meth:`error` when none are."""
        left = self.remaining()
        if left <= 0:
            raise self.error()
        return left

    def wait(self, timeout: float) -> float:
        """How long the next wait may last: ``timeout``, shortened to what is left; raises
        :meth:`error` when nothing is."""
        return min(timeout, self.left())

    def earlier(self, other: Deadline | None) -> Deadline:
        """Whichever of the two ends first (by the time each has left on its own clock: a
        batch's budget may run on an injected clock, a reply's on the monotonic one)."""
        return other if other is not None and other.remaining() < self.remaining() else self

    def error(self, received: int = 0) -> DeadlineExceeded:
        """The exception for this deadline; ``received``: bytes of the unfinished answer that arrived."""
        seconds = f"{self.seconds:g}" if self.seconds is not None else "-"
        message = _MESSAGES[self.kind] % {"subject": self.subject, "seconds": seconds}
        return DeadlineExceeded(str(message), kind=self.kind, seconds=self.seconds, received=received)


def connect(host: str, port: int, deadline: Deadline, source_address: tuple[str, int] | None = None) -> socket.socket:
    """``socket.create_connection()`` within ``deadline``.

    Each address gets an equal share of what is left, so a black-holed IPv6 route cannot use up
    the whole deadline before IPv4 is tried. The DNS lookup itself cannot be bounded here.
    """
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    if not infos:
        raise OSError(_("getaddrinfo returned no address for %(host)s") % {"host": host})
    first: OSError | None = None
    for index, (family, kind, proto, _name, address) in enumerate(infos):
        share = deadline.left() / (len(infos) - index)
        sock = socket.socket(family, kind, proto)
        try:
            set_timeout(sock, share)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError) and index == len(infos) - 1:  # it had all that was left
                raise deadline.error() from None
            first = first or exc
            continue
        return sock
    assert first is not None
    raise first


def handshake(context: Any, sock: socket.socket, deadline: Deadline, server_hostname: str | None) -> ssl.SSLSocket:
    """``context.wrap_socket()`` with the TLS handshake as a whole within ``deadline``.

    (Python bounds a whole handshake by the socket's timeout, not each read of it.)
    """
    set_timeout(sock, deadline.left())
    try:
        tls: ssl.SSLSocket = context.wrap_socket(sock, server_hostname=server_hostname)
    except TimeoutError:
        raise deadline.error() from None
    return tls
