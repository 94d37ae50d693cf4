"""Hostile and broken servers on loopback, for README.md#hostile-or-broken-servers.

A :class:`HostileServer` listens on 127.0.0.1 (a port the OS picks), plain or with implicit TLS
(a trustme certificate), and runs a *script* for each connection in a thread of its own. A
script is a function of a :class:`Peer`: it sends, drips, streams without end, answers
STARTTLS or stalls in the middle of a TLS handshake, and counts every byte it got out.

Nothing outlives the test: stopping the server (leaving its ``with`` block, or its watchdog
after ``give_up_after`` seconds) shuts every socket down, which ends every script and wakes a
client blocked on it. :func:`call_within` runs the client call in a worker thread and fails the
test if the call has not returned in time, so a regression fails instead of hanging.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

Script = Callable[["Peer"], None]


class Stopped(Exception):
    """The client hung up, or the server is stopping: the script ends."""


class Peer:
    """One client connection, seen from the server's side."""

    def __init__(self, sock: socket.socket, server: HostileServer) -> None:
        self.sock: Any = sock
        self.server = server
        self.sent = 0
        """Bytes the server got out (into the kernel's buffers) before the client closed."""
        self.done = False
        """The script ran to its end (the client waited it out)."""
        self.started = time.monotonic()
        self._buffer = b""

    # -- sending --
    def send(self, data: bytes) -> None:
        if self.server.stopping.is_set():
            raise Stopped
        try:
            self.sock.sendall(data)
        except OSError:  # the client hung up
            raise Stopped from None
        self.sent += len(data)

    def drip(self, data: bytes, every: float, size: int = 1) -> None:
        """Send ``data`` ``size`` bytes at a time, one piece every ``every`` seconds."""
        for start in range(0, len(data), size):
            self.send(data[start : start + size])
            self.pause(every)

    def endless(self, piece: bytes, limit: int) -> None:
        """Send ``piece`` over and over, until the client hangs up or ``limit`` bytes went out."""
        batch = piece * max(1, 65536 // len(piece))
        while self.sent < limit:
            self.send(batch)

    def lines(self, lines: list[bytes], every: float) -> None:
        """Send one line every ``every`` seconds."""
        for line in lines:
            self.send(line)
            self.pause(every)

    # -- receiving --
    def readline(self) -> bytes:
        """The client's next line (``b""`` once it closed)."""
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                raise Stopped from None
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def read_request(self) -> bytes:
        """An HTTP request's head (up to the blank line) and its body by Content-Length."""
        head = b""
        while True:
            line = self.readline()
            if not line:
                raise Stopped
            head += line
            if line in (b"\r\n", b"\n"):
                break
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(self._buffer) < length:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self._buffer += chunk
        self._buffer = self._buffer[length:]
        return head

    # -- time --
    def pause(self, seconds: float) -> None:
        if self.server.stopping.wait(seconds):
            raise Stopped

    def hold(self) -> None:
        """Say nothing more, keep the connection open, until the server stops."""
        self.server.stopping.wait()
        raise Stopped

    # -- TLS --
    def starttls(self) -> None:
        """Turn this connection into a TLS server connection (after ``220 Ready``)."""
        self.sock = self.server.tls_context().wrap_socket(self.sock, server_side=True)

    def stall_mid_handshake(self) -> None:
        """Read the ClientHello, send half of the server's first flight, then say nothing more."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.server.tls_context().wrap_bio(incoming, outgoing, server_side=True)
        while not outgoing.pending:
            try:
                data = self.sock.recv(65536)
            except OSError:
                raise Stopped from None
            if not data:
                raise Stopped
            incoming.write(data)
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.do_handshake()
        flight = outgoing.read()
        self.send(flight[: len(flight) // 2])
        self.hold()


class HostileServer:
    """A loopback listener that runs ``script`` for every connection (see the module docstring)."""

    def __init__(self, script: Script, *, tls: bool = False, give_up_after: float = 90.0) -> None:
        self.script = script
        self.tls = tls
        self.give_up_after = give_up_after
        self.stopping = threading.Event()
        self.peers: list[Peer] = []
        self.cut = False
        """The watchdog stopped the server: a client was still connected after ``give_up_after``."""
        self._ca = trustme.CA()
        self._dir = tempfile.TemporaryDirectory(prefix="hostile-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        self._leaf = self._ca.issue_cert("127.0.0.1", "localhost")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = "127.0.0.1"
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._leaf.configure_cert(context)
        return context

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/token"

    @property
    def connections(self) -> int:
        return len(self.peers)

    @property
    def sent(self) -> int:
        return sum(peer.sent for peer in self.peers)

    def __enter__(self) -> HostileServer:
        self._start(self._accept)
        self._start(self._watchdog)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="hostile-server")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _address = self._listener.accept()
            except OSError:
                return
            self._start(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        peer = Peer(sock, self)
        self.peers.append(peer)
        try:
            if self.tls:
                sock.settimeout(30)
                peer.sock = self.tls_context().wrap_socket(sock, server_side=True)
                peer.sock.settimeout(None)
            self.script(peer)
            peer.done = True
            peer.hold()
        except (Stopped, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                peer.sock.close()

    def _watchdog(self) -> None:
        if not self.stopping.wait(self.give_up_after):
            self.cut = True
            self.stop()

    def stop(self) -> None:
        """Stop: every connection is shut down, every script ends."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone does not)
        with contextlib.suppress(OSError):
            self._listener.close()
        for peer in list(self.peers):
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(10)
        self._dir.cleanup()


@dataclass
class Ended:
    """How a guarded call ended: its value or exception, and how long it took."""

    value: Any
    error: BaseException | None
    seconds: float


def call_within(seconds: float, call: Callable[[], Any]) -> Ended:
    """Run ``call`` in a worker thread; fail the test if it has not returned after ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True, name="guarded-call")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"The call had not returned after {seconds} s: it is not bounded by its deadline.")
    return Ended(box.get("value"), box.get("error"), time.monotonic() - started)
