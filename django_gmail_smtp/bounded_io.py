"""Reading a server's replies within bounds: an overall deadline, a per-read timeout, size caps.

The IMAP and POP3 clients of the round trip (:mod:`.imap`, :mod:`.pop`) read through
:class:`BoundedReader` instead of the buffered file ``imaplib``/``poplib`` make, so a server
that answers slowly, byte by byte, or without end cannot hold ``gmail_check`` past its deadline
or make it allocate without limit: every ``recv`` waits at most the time left, a line is at most
``max_line`` bytes, and one reply (every line and literal read between two commands) at most
``max_reply`` bytes and ``max_lines`` lines.
"""

from __future__ import annotations

import contextlib
import socket

from .deadline import Deadline  # also importable from here

__all__ = ["BoundedReader", "Deadline", "ReplyTooLarge"]

_CHUNK = 65536


class ReplyTooLarge(OSError):
    """The server sent more than a cap allows (a line, a literal, or a whole reply)."""


class BoundedReader:
    """Lines and exact byte counts from a socket, within the deadline and the caps.

    Stands in for ``sock.makefile("rb")`` (``readline``, ``read``, ``close``). Call
    :meth:`new_reply` when a command is sent: the reply caps count from there.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        deadline: Deadline,
        timeout: float,
        max_line: int,
        max_reply: int,
        max_lines: int,
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.timeout = timeout
        self.max_line = max_line
        self.max_reply = max_reply
        self.max_lines = max_lines
        self.buffer = bytearray()
        self.reply_bytes = 0
        self.reply_lines = 0

    def new_reply(self) -> None:
        self.reply_bytes = 0
        self.reply_lines = 0

    def _fill(self) -> bool:
        """Receive more bytes; False at the end of the stream."""
        wait = self.deadline.wait(self.timeout)
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(_CHUNK)
        except TimeoutError:
            if wait < self.timeout:  # cut short by the deadline: say so, not "timed out"
                raise self.deadline.error() from None
            raise
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def _count(self, size: int, *, line: bool) -> None:
        self.reply_bytes += size
        if line:
            self.reply_lines += 1
        if self.reply_bytes > self.max_reply:
            raise ReplyTooLarge(f"the server's reply is longer than {self.max_reply} bytes")
        if self.reply_lines > self.max_lines:
            raise ReplyTooLarge(f"the server's reply has more than {self.max_lines} lines")

    def readline(self, limit: int = -1) -> bytes:
        """One line with its line end (less at the end of the stream); ``ReplyTooLarge`` past
        ``max_line``. ``limit`` is accepted for ``makefile`` compatibility and ignored."""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if len(self.buffer) > self.max_line:
                raise ReplyTooLarge(f"the server sent a line longer than {self.max_line} bytes")
            start = len(self.buffer)
            if not self._fill():
                end = len(self.buffer)
                break
        if end > self.max_line + 2:
            raise ReplyTooLarge(f"the server sent a line longer than {self.max_line} bytes")
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        self._count(len(line), line=True)
        return line

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes (fewer only at the end of the stream), counted against the reply cap
        before anything is received, so an announced size over the cap is refused at once."""
        if size < 0:
            raise ValueError("read() needs a size")
        self._count(size, line=False)
        while len(self.buffer) < size:
            if not self._fill():
                break
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def close(self) -> None:
        self.buffer.clear()


def shut(sock: socket.socket | None) -> None:
    """Close a socket that may already be broken, quietly."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.close()
