"""A hostile SMTP server for the redaction tests: it echoes the client's credentials back.

Implicit TLS (a trustme certificate for 127.0.0.1) on a port the OS hands out. It offers
``AUTH PLAIN LOGIN XOAUTH2`` (or the mechanisms given as ``offer``) and answers the sign-in with a reply that repeats every line the
client sent during the exchange, verbatim and base64-decoded (so the password, the AUTH PLAIN
blob, the AUTH LOGIN blobs, the XOAUTH2 string and the bare access token all come back).
``mode="refuse"`` (the default) refuses the sign-in with ``535``; ``mode="accept"`` says
``235`` with the same echo and then takes mail, echoing the AUTH lines in its ``MAIL`` reply
too; ``mode="hangup"`` closes the connection as soon as the ``AUTH`` line arrives.
``received`` and ``sent`` keep every line, so a test can show the server did see and echo the
secrets.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import socket
import ssl
import threading
from pathlib import Path
from types import TracebackType

import trustme


def _decoded(line: str) -> str:
    """The base64 word at the end of ``line``, decoded (NULs and \\x01 shown as spaces)."""
    try:
        raw = base64.b64decode(line.split(" ")[-1], validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.decode("utf-8", "replace").replace("\0", " ").replace("\x01", " ")


class EchoServer:
    def __init__(self, directory: Path, *, mode: str = "refuse", offer: str = "PLAIN LOGIN XOAUTH2") -> None:
        if mode not in ("refuse", "accept", "hangup"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.offer = offer
        self.challenge = "<1896.697170952@echo.localhost>"  # CRAM-MD5's, as in RFC 2195
        self.received: list[str] = []
        self.sent: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = "127.0.0.1"
        self.port = int(self._listener.getsockname()[1])
        ca = trustme.CA()
        self.ca_file = str(directory / f"echo-ca-{self.port}.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._context)
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []
        self._stop = threading.Event()

    def options(self, **overrides: object) -> dict[str, object]:
        """Backend options pointed at this server (implicit TLS)."""
        return {
            "host": self.host,
            "port": self.port,
            "use_ssl": True,
            "use_tls": False,
            "timeout": 5,
            "ssl_cafile": self.ca_file,
        } | overrides

    def __enter__(self) -> EchoServer:
        thread = threading.Thread(target=self._accept_loop, name="echo-smtp", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        for sock in [self._listener, *self._connections]:  # wakes the threads blocked in accept() and reads
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        with contextlib.suppress(OSError), self._context.wrap_socket(raw, server_side=True) as conn:
            self._connections.append(conn)
            reader = conn.makefile("rb")
            self._talk(conn, reader)

    def _reply(self, conn: ssl.SSLSocket, code: int, lines: list[str]) -> None:
        text = "".join(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}\r\n" for i, line in enumerate(lines))
        self.sent.extend(text.splitlines())
        conn.sendall(text.encode("utf-8"))

    def _talk(self, conn: ssl.SSLSocket, reader: object) -> None:
        def read() -> str:
            line = reader.readline()  # type: ignore[attr-defined]
            if not line:
                raise ConnectionError("client left")
            text = str(line.decode("utf-8", "replace").rstrip("\r\n"))
            self.received.append(text)
            return text

        auth_lines: list[str] = []
        self._reply(conn, 220, ["echo.localhost ESMTP echo"])
        while True:
            line = read()
            verb = line.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self._reply(conn, 250, ["echo.localhost", f"AUTH {self.offer}", "8BITMIME"])
            elif verb == "AUTH" and self.mode == "hangup":
                return
            elif verb == "AUTH":
                auth_lines = [line]
                mechanism = line.split(" ")[1].upper() if " " in line else ""
                if mechanism == "CRAM-MD5":
                    self._reply(conn, 334, [base64.b64encode(self.challenge.encode()).decode()])
                    auth_lines.append(read())
                elif mechanism == "LOGIN":
                    if len(line.split(" ")) < 3:
                        self._reply(conn, 334, ["VXNlcm5hbWU6"])
                        auth_lines.append(read())
                    self._reply(conn, 334, ["UGFzc3dvcmQ6"])
                    auth_lines.append(read())
                elif len(line.split(" ")) < 3:  # PLAIN / XOAUTH2 without an initial response
                    self._reply(conn, 334, [""])
                    auth_lines.append(read())
                echo = [f"you sent: {sent}" for sent in auth_lines]
                echo += [f"decoded: {_decoded(sent)}" for sent in auth_lines]
                if self.mode == "accept":
                    self._reply(conn, 235, ["2.7.0 Accepted", *echo])
                else:
                    self._reply(conn, 535, ["5.7.8 Username and Password not accepted.", *echo])
            elif verb == "MAIL":
                self._reply(conn, 250, ["2.1.0 OK", *(f"still remembering: {sent}" for sent in auth_lines)])
            elif verb == "RCPT":
                self._reply(conn, 250, ["2.1.5 OK"])
            elif verb == "DATA":
                self._reply(conn, 354, ["Go ahead"])
                while read() != ".":
                    pass
                self._reply(conn, 250, ["2.0.0 OK"])
            elif verb in ("RSET", "NOOP"):
                self._reply(conn, 250, ["2.0.0 OK"])
            elif verb == "QUIT":
                self._reply(conn, 221, ["2.0.0 closing connection"])
                return
            else:
                self._reply(conn, 502, ["5.5.1 Unrecognized command."])
