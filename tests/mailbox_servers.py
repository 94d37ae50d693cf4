"""Scripted IMAP/POP3 servers over real TLS on loopback, for what no well-behaved server does.

:class:`ScriptedServer` accepts connections on a free port, completes a TLS handshake with a
certificate from its own trustme CA, and hands the connection to ``script(conn)``, which talks
the protocol line by line (a broken, slow or hostile server). Used to prove that the round
trip's clients stay within their caps and deadlines.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import trustme


class Conn:
    """One accepted TLS connection, with line helpers."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self, data: bytes | str) -> None:
        self.send((data.encode() if isinstance(data, str) else data) + b"\r\n")

    def readline(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self.buffer += chunk
        line, _sep, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def command(self) -> tuple[str, str, str]:
        """(tag, COMMAND, rest) of the next IMAP command."""
        parts = self.readline().decode().split(" ", 2)
        while len(parts) < 3:
            parts.append("")
        return parts[0], parts[1].upper(), parts[2]


class ScriptedServer:
    """A TLS server on 127.0.0.1 that runs ``script`` for each connection (in a thread)."""

    def __init__(self, script: Callable[[Conn], None], directory: Path) -> None:
        self.script = script
        ca = trustme.CA(organization_name="scripted mailbox server")
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(directory / "scripted-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.context)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                raw, _address = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(30)
            with self.context.wrap_socket(raw, server_side=True) as sock:
                self.script(Conn(sock))
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError):
                raw.close()

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)
        for thread in self._threads:
            thread.join(5)


def serve_until(conn: Conn, wanted: str, *, greeting: str = "* OK scripted IMAP ready") -> tuple[str, str]:
    """A minimal IMAP server (greeting, CAPABILITY, LOGIN) until the client sends ``wanted``;
    returns that command's (tag, arguments)."""
    if greeting:
        conn.line(greeting)
    while True:
        tag, command, rest = conn.command()
        if command == wanted:
            return tag, rest
        if command == "CAPABILITY":
            conn.line("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
            conn.line(f"{tag} OK done")
        elif command == "LOGIN":
            conn.line(f"{tag} OK logged in")
        elif command == "LOGOUT":
            conn.line("* BYE bye")
            conn.line(f"{tag} OK bye")
            return tag, rest
        else:
            conn.line(f"{tag} BAD unexpected {command}")
