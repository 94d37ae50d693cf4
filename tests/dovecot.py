"""Debian's Dovecot (``dovecot-imapd``, ``dovecot-pop3d``) for the round-trip tests.

:func:`start_dovecot` writes a self-contained configuration into a temporary directory (its own
run and state directories, log, TLS certificate, password file, Maildir home), starts
``dovecot -F`` on free loopback ports (implicit TLS for IMAP and POP3) and returns a
:class:`Dovecot`; ``stop()`` ends it and removes the directory. As root (CI), mail is accessed
as ``nobody`` (Dovecot refuses mail access as root); otherwise everything runs as the current
user (a rootless Dovecot). Nothing here is Dovecot's code: we only drive the binary.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from django_gmail_smtp.mutf7 import encode_mutf7

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
MISSING = (
    "Debian's Dovecot is not installed (apt-get install -y dovecot-imapd dovecot-pop3d); "
    ".ci/run installs it, so CI runs these tests."
)
JUNK = "迷惑メール"  # a Japanese special-use name, as Gmail shows Spam to Japanese users


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def version() -> str:
    if DOVECOT is None:
        return ""
    found = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, timeout=10, check=False)
    return found.stdout.strip()


@dataclass
class Dovecot:
    """A running Dovecot: where it listens, the account, its Maildir and the CA that signed it."""

    root: Path
    process: subprocess.Popen[bytes]
    imap_port: int
    pop_port: int
    user: str
    password: str
    ca_pem: bytes = field(repr=False)
    uid: int = -1
    gid: int = -1

    @property
    def maildir(self) -> Path:
        return self.root / "home" / self.user / "Maildir"

    def folder_dir(self, folder: str = "INBOX") -> Path:
        """The Maildir++ directory of ``folder`` (names on disk in modified UTF-7, as Dovecot keeps them)."""
        return self.maildir if folder == "INBOX" else self.maildir / ("." + encode_mutf7(folder))

    def deliver(self, data: bytes, folder: str = "INBOX") -> Path:
        """Write a message into the Maildir the way a delivery agent does (``tmp/`` then ``new/``)."""
        base = self.folder_dir(folder)
        name = f"{time.time():.6f}.{uuid.uuid4().hex}.sandbox"
        temporary = base / "tmp" / name
        temporary.write_bytes(data)
        self._own(temporary)
        final = base / "new" / name
        temporary.rename(final)
        return final

    def files(self, folder: str = "INBOX") -> list[Path]:
        base = self.folder_dir(folder)
        return sorted(p for sub in ("new", "cur") for p in (base / sub).iterdir() if p.is_file())

    def _own(self, path: Path) -> None:
        if self.uid >= 0:
            os.chown(path, self.uid, self.gid)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _config(
    root: Path, *, imap_port: int, pop_port: int, login_user: str, internal_user: str, mail_uid: int, mail_gid: int
) -> str:
    dh = Path("/usr/share/dovecot/dh.pem")
    return f"""# Written by tests/dovecot.py for one test run.
protocols = imap pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
ssl = required
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
{f"ssl_dh = <{dh}" if dh.exists() else ""}
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = {min(mail_uid, 500)}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={root}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox {JUNK} {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox "All Mail" {{
    special_use = \\All
    auto = subscribe
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {imap_port}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = {pop_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def start_dovecot(user: str, password: str) -> Dovecot:
    """Start Dovecot for one account (``user``/``password``) with an empty Maildir."""
    assert DOVECOT is not None
    root = Path(tempfile.mkdtemp(prefix="dovecot-test-"))
    root.chmod(0o755)  # the mail user (nobody, as root) walks into it
    ca = trustme.CA(organization_name="django-gmail-smtp Dovecot test")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    (root / "passwd").write_text(f"{user}:{password}\n")
    for sub in ("run", "state"):
        (root / sub).mkdir()
    if os.geteuid() == 0:
        login_user, internal_user = "dovenull", "dovecot"
        mail_uid, mail_gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        own_uid, own_gid = mail_uid, mail_gid
    else:
        me = pwd.getpwuid(os.getuid()).pw_name
        login_user = internal_user = me
        mail_uid, mail_gid = os.getuid(), os.getgid()
        own_uid = own_gid = -1
    imap_port, pop_port = free_port(), free_port()
    (root / "dovecot.conf").write_text(
        _config(
            root,
            imap_port=imap_port,
            pop_port=pop_port,
            login_user=login_user,
            internal_user=internal_user,
            mail_uid=mail_uid,
            mail_gid=mail_gid,
        ),
        encoding="utf-8",
    )
    home = root / "home" / user / "Maildir"
    for folder in ("", "." + encode_mutf7(JUNK), ".Trash", "." + encode_mutf7("All Mail")):
        for sub in ("cur", "new", "tmp"):
            (home / folder / sub).mkdir(parents=True, exist_ok=True)
    if own_uid >= 0:
        for path in [root / "home", *sorted((root / "home").rglob("*"))]:
            os.chown(path, own_uid, own_gid)
    process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(root / "dovecot.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    server = Dovecot(root, process, imap_port, pop_port, user, password, ca.cert_pem.bytes(), own_uid, own_gid)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            log = server.log()
            server.stop()
            raise RuntimeError(f"Dovecot exited at start: {error}\n{log}")
        try:
            for port in (imap_port, pop_port):
                socket.create_connection(("127.0.0.1", port), 1).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                log = server.log()
                server.stop()
                raise RuntimeError(f"Dovecot did not listen within 20 s:\n{log}") from None
            time.sleep(0.1)
