"""``manage.py gmail_sandbox``, run as a real process (and in-process for argument errors)."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = "From: a@example.com\r\nTo: b@example.com\r\nSubject: Hello command\r\n\r\nHi.\r\n"


def run_command(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "django", "gmail_sandbox", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"gmail_sandbox exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("gmail_sandbox did not write its ready file")
        time.sleep(0.05)
    info: dict[str, object] = json.loads(path.read_text())
    return info


def test_command_prints_settings_and_records_messages(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = run_command(
        "--starttls-port",
        "0",
        "--ssl-port",
        "0",
        "--imap-port",
        "0",
        "--pop-port",
        "0",
        "--oauth-port",
        "0",
        "--ready-file",
        str(ready),
        "--max-seconds",
        "60",
        cwd=tmp_path,
    )
    info = wait_for_file(ready, process)
    state_dir = tmp_path / ".sandbox"  # the default --dir, in the current directory
    assert info["ca_file"] == str(state_dir / "ca.pem")
    assert (info["host"], info["user"]) == ("127.0.0.1", "sandbox@example.com")
    port = info["starttls_port"]
    assert isinstance(port, int)

    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.starttls(context=ssl.create_default_context(cafile=str(info["ca_file"])))
        client.login("sandbox@example.com", "sandboxapppasswd")
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=15)

    assert process.returncode == 0, err
    assert "Traceback" not in err
    ca = state_dir / "ca.pem"
    for line in [
        f"Gmail sandbox listening on 127.0.0.1: STARTTLS port {port}, implicit TLS port {info['ssl_port']}.",
        '    EMAIL_BACKEND = "django_gmail_smtp.backend.EmailBackend"',
        '    EMAIL_HOST = "127.0.0.1"',
        f"    EMAIL_PORT = {port}",
        "    EMAIL_USE_TLS = True",
        '    EMAIL_HOST_USER = "sandbox@example.com"',
        '    EMAIL_HOST_PASSWORD = "sandboxapppasswd"',
        f'    GMAIL_SMTP = {{"SSL_CAFILE": "{ca}", "IMAP_HOST": "127.0.0.1", "IMAP_PORT": {info["imap_port"]}, '
        f'"POP_HOST": "127.0.0.1", "POP_PORT": {info["pop_port"]}}}',
        f"    GMAIL_SMTP_IMAP_PORT={info['imap_port']}",
        f'                "ssl_cafile": "{ca}",',
        f"    EMAIL_URL=smtp+tls://sandbox%40example.com:sandboxapppasswd@127.0.0.1:{port}",
        f"    GMAIL_SMTP_SSL_CAFILE={ca}",
        "Gmail sandbox stopped.",
    ]:
        assert line in out.splitlines()
    assert "from a@example.com to b@example.com: “Hello command” (" in out
    assert (state_dir / "messages" / "1.eml").read_bytes() == MESSAGE.encode()
    assert json.loads((state_dir / "messages" / "1.json").read_text())["rcpt_tos"] == ["b@example.com"]
    assert not ready.exists()  # removed on exit, so scripts never read a stale one


def test_command_stops_by_itself_after_max_seconds(tmp_path: Path) -> None:
    out = StringIO()
    started = time.monotonic()
    call_command(
        "gmail_sandbox",
        "--starttls-port=0",
        "--ssl-port=0",
        "--imap-port=0",
        "--pop-port=0",
        "--oauth-port=0",
        f"--dir={tmp_path / 'state'}",
        "--user=me@example.org",
        "--password=abcdabcdabcdabcd",
        "--max-seconds=0.3",
        stdout=out,
    )
    assert 0.3 <= time.monotonic() - started < 5
    assert "Sign in as me@example.org with the password abcdabcdabcdabcd." in out.getvalue()
    assert out.getvalue().rstrip().endswith("Gmail sandbox stopped.")
    assert (tmp_path / "state" / "ca.pem").exists()


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = run_command(
            "--starttls-port",
            "0",
            "--ssl-port",
            str(port),
            "--imap-port",
            "0",
            "--pop-port",
            "0",
            "--oauth-port",
            "0",
            "--max-seconds",
            "5",
            cwd=tmp_path,
        )
        _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.strip() == (
        f"CommandError: Port {port} on 127.0.0.1 is already in use. Pick another with --starttls-port / "
        "--ssl-port / --imap-port / --pop-port."
    )


def test_only_loopback_hosts(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="loopback only"):
        call_command("gmail_sandbox", "--host=0.0.0.0", f"--dir={tmp_path}", "--max-seconds=0", stdout=StringIO())
