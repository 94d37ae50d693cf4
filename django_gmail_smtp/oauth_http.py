"""One request to the OAuth2 token endpoint: within a deadline, the answer capped, refusals explained.

Used to refresh an access token (:mod:`.oauth`, as google-auth's transport) and to trade an
authorization code (:mod:`.oauth_flow`). A refusal or an endpoint out of reach becomes an
:class:`~django_gmail_smtp.exceptions.OAuthError` carrying its cause; the texts pass through a
scrubber first, so no secret of the request ends up in them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from .causes import CATALOGUE, Cause
from .deadline import Deadline
from .exceptions import DeadlineExceeded, OAuthError, ReplyTooLongError, with_cause

__all__ = [
    "MAX_TOKEN_RESPONSE_BYTES",
    "Answer",
    "TimedRequest",
    "token_error",
    "too_large_error",
    "transport_reason",
    "unreachable_error",
]


def _cause_for_error(error: str) -> Cause:
    if error == "invalid_grant":
        return CATALOGUE["oauth_invalid_grant"]
    if error in ("invalid_client", "unauthorized_client"):
        return CATALOGUE["oauth_invalid_client"]
    if error == "invalid_scope":
        return CATALOGUE["oauth_wrong_scope"]
    return CATALOGUE["oauth_token_error"]


def token_error(error: str, description: str, status: int, *, scrub: Callable[[str], str] | None = None) -> OAuthError:
    """The exception for an error answer of the token endpoint, with its cause."""
    scrub = scrub or (lambda text: text)
    error, description = scrub(error)[:100], scrub(description)[:300]
    if error:
        message = _("The OAuth2 token endpoint refused: %(error)s (%(description)s).") % {
            "error": error,
            "description": description or "-",
        }
    else:
        message = _("The OAuth2 token endpoint answered with HTTP status %(status)s: %(description)s") % {
            "status": status or "-",
            "description": description or "-",
        }
    exc = OAuthError(message, error=error, description=description, status=status)
    return with_cause(exc, _cause_for_error(error), "token")  # type: ignore[return-value]


def unreachable_error(uri: str, reason: str) -> OAuthError:
    """The exception for a token endpoint out of reach (refused, silent, TLS failed), with its cause."""
    exc = OAuthError(
        _("The OAuth2 token endpoint %(uri)s could not be reached: %(reason)s") % {"uri": uri, "reason": reason}
    )
    return with_cause(exc, CATALOGUE["oauth_token_unreachable"], "token")  # type: ignore[return-value]


MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
"""Largest answer read from the token endpoint (Google's is about 1 KiB); a larger one fails."""


@dataclass(frozen=True)
class Answer:
    """A token endpoint's answer, read in full (google-auth's transport ``Response``)."""

    status: int
    headers: Mapping[str, str]
    data: bytes = field(repr=False)


class TimedRequest:
    """HTTP to the token endpoint: the whole request within a deadline, the answer capped.

    requests (which honours the proxy and CA settings of the environment) makes the request in
    a worker thread, and the caller waits for it until the deadline at most: requests' timeout
    bounds each read, not the answer as a whole, so a server sending a byte a second would hold
    the caller for ever. An abandoned worker stops at its next read timeout or once the answer
    passes the cap. Called as google-auth's transport, every failure is a ``TransportError``.
    """

    def __init__(self, timeout: float | None, uri: str) -> None:
        import requests

        self.session = requests.Session()
        self.deadline = Deadline(timeout, "token", uri)

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        import requests
        from google.auth import exceptions as google_exceptions

        try:
            return self.fetch(url, method, body, headers)
        except (requests.RequestException, DeadlineExceeded, ReplyTooLongError) as exc:
            raise google_exceptions.TransportError(exc) from exc  # type: ignore[no-untyped-call]

    def fetch(self, url: str, method: str, body: Any, headers: Any) -> Answer:
        """The answer; raises requests' exceptions, ``DeadlineExceeded`` or ``ReplyTooLongError``."""
        left = self.deadline.left()
        outcome: dict[str, Any] = {}
        worker = threading.Thread(
            target=self._fetch, args=(outcome, url, method, body, headers, left), name="gmail-smtp-oauth", daemon=True
        )
        worker.start()
        worker.join(None if left == math.inf else left)
        if worker.is_alive():
            raise self.deadline.error(received=outcome.get("received", 0))
        if "error" in outcome:
            raise outcome["error"]
        answer: Answer = outcome["answer"]
        return answer

    @sensitive_variables()
    def _fetch(self, outcome: dict[str, Any], url: str, method: str, body: Any, headers: Any, left: float) -> None:
        timeout = None if left == math.inf else left
        try:
            with self.session.request(method, url, data=body, headers=headers, timeout=timeout, stream=True) as reply:
                length = reply.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > MAX_TOKEN_RESPONSE_BYTES:
                    raise _too_large()
                data = bytearray()
                for chunk in reply.iter_content(4096):
                    data += chunk
                    outcome["received"] = len(data)
                    if len(data) > MAX_TOKEN_RESPONSE_BYTES:
                        raise _too_large()
                    if self.deadline.expired:  # the caller has given up
                        return
                outcome["answer"] = Answer(reply.status_code, reply.headers, bytes(data))
        except Exception as exc:  # handed to the caller's thread
            outcome["error"] = exc

    def close(self) -> None:
        self.session.close()


def _too_large() -> ReplyTooLongError:
    return ReplyTooLongError(
        _("The OAuth2 token endpoint's answer is larger than %(count)d bytes (MAX_TOKEN_RESPONSE_BYTES).")
        % {"count": MAX_TOKEN_RESPONSE_BYTES},
        limit="bytes",
        size=MAX_TOKEN_RESPONSE_BYTES,
    )


def too_large_error(uri: str) -> OAuthError:
    """The exception for a token endpoint whose answer passed :data:`MAX_TOKEN_RESPONSE_BYTES`."""
    exc = OAuthError(
        _("The OAuth2 token endpoint %(uri)s answered with more than %(count)d bytes: the answer was not read.")
        % {"uri": uri, "count": MAX_TOKEN_RESPONSE_BYTES}
    )
    return with_cause(exc, CATALOGUE["reply_too_long"], "token")  # type: ignore[return-value]


def transport_reason(exc: BaseException) -> str:
    """The innermost reason of a transport error, in one line (e.g. "Connection refused")."""
    inner: BaseException | None = exc
    text = str(exc)
    while inner is not None:
        if isinstance(inner, DeadlineExceeded):
            return str(inner.args[0])
        if isinstance(inner, ConnectionRefusedError):
            return _("connection refused")
        if isinstance(inner, TimeoutError):
            return _("no answer within the timeout")
        inner = inner.__cause__ or inner.__context__
    low = text.lower()
    if "refused" in low:
        return _("connection refused")
    if "timed out" in low or "timeout" in low:
        return _("no answer within the timeout")
    return text.splitlines()[0][:200] if text else type(exc).__name__
