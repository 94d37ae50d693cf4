"""The loopback redirect of ``gmail_authorize``: a one-shot HTTP listener on 127.0.0.1.

Google sends the browser back to ``http://127.0.0.1:<port>/?code=...&state=...`` after the
consent page (:mod:`.oauth_flow` builds that request); this listener takes the first such
request, shows a short page and hands the query string over. It writes no log line: the code
must not reach one.
"""

from __future__ import annotations

import html
import http.server
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.utils.translation import gettext as _

__all__ = ["LoopbackReceiver"]


class LoopbackReceiver:
    """A one-shot HTTP listener on 127.0.0.1 that receives the browser's redirect.

    ``redirect_uri`` is ``http://127.0.0.1:<port>/``; :meth:`wait` returns the query string
    of the first request that carries ``code`` or ``error`` (None after ``timeout``).
    """

    def __init__(self, port: int = 0, *, done_page: str = "") -> None:
        self._query: str | None = None
        self._arrived = threading.Event()
        self._done_page = done_page or _(
            "Authorization received. You can close this window and return to the terminal."
        )
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urlsplit(self.path).query
                params = parse_qs(query)
                if "code" not in params and "error" not in params:
                    self.send_error(404)
                    return
                body = (
                    "<!doctype html><meta charset=utf-8><title>django-gmail-smtp</title>"
                    f"<p>{html.escape(receiver._done_page)}</p>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
                if receiver._query is None:
                    receiver._query = query
                    receiver._arrived.set()

            def log_message(self, format: str, *args: Any) -> None:  # the code must not reach a log
                pass

        self._server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="gmail-authorize", daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def wait(self, timeout: float | None) -> str | None:
        """The redirect's query string, or None if none came within ``timeout`` seconds."""
        self._arrived.wait(timeout)
        return self._query
