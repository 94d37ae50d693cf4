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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
    port = info["ports"]["starttls"]
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
        f"Gmail sandbox listening on 127.0.0.1: STARTTLS port {port}, implicit TLS port {info['ports']['ssl']}.",
        '    EMAIL_BACKEND = "django_gmail_smtp.backend.EmailBackend"',
        '    EMAIL_HOST = "127.0.0.1"',
        f"    EMAIL_PORT = {port}",
        "    EMAIL_USE_TLS = True",
        '    EMAIL_HOST_USER = "sandbox@example.com"',
        '    EMAIL_HOST_PASSWORD = "sandboxapppasswd"',
        f'    GMAIL_SMTP = {{"SSL_CAFILE": "{ca}", "IMAP_HOST": "127.0.0.1", "IMAP_PORT": {info["ports"]["imap"]}, '
        f'"POP_HOST": "127.0.0.1", "POP_PORT": {info["ports"]["pop3"]}}}',
        f"    GMAIL_SMTP_IMAP_PORT={info['ports']['imap']}",
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


@contextmanager
def taken_ports(count: int) -> Iterator[list[int]]:
    """``count`` loopback ports that something listens on, as on a machine where they are taken."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            listener = stack.enter_context(socket.socket())
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            ports.append(listener.getsockname()[1])
        yield ports


def test_every_busy_port_is_named_at_once_before_anything_starts(tmp_path: Path) -> None:
    with taken_ports(3) as (starttls, ssl_port, oauth):
        process = run_command(
            f"--starttls-port={starttls}",
            f"--ssl-port={ssl_port}",
            "--imap-port=auto",
            "--pop-port=auto",
            f"--oauth-port={oauth}",
            "--max-seconds=5",
            cwd=tmp_path,
        )
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.strip() == (
        f"CommandError: Ports {starttls} (--starttls-port), {ssl_port} (--ssl-port), {oauth} (--oauth-port) "
        "on 127.0.0.1 are already in use. Pick other ports with those options, or auto for free ones."
    )
    assert out == ""
    assert not (tmp_path / ".sandbox").exists()  # nothing was started, not even the CA


def test_one_busy_port_names_its_option(tmp_path: Path) -> None:
    with taken_ports(1) as (port,), pytest.raises(CommandError) as info:
        call_command(
            "gmail_sandbox",
            "--starttls-port=auto",
            f"--ssl-port={port}",
            "--imap-port=auto",
            "--pop-port=auto",
            "--no-oauth",
            f"--dir={tmp_path}",
            stdout=StringIO(),
        )
    assert str(info.value) == (
        f"Port {port} (--ssl-port) on 127.0.0.1 is already in use. Pick another port with that option, "
        "or auto for a free one."
    )


def test_the_oauth_port_is_not_checked_without_the_oauth_server(tmp_path: Path) -> None:
    with taken_ports(1) as (port,):
        call_command(
            "gmail_sandbox",
            "--starttls-port=0",
            "--ssl-port=0",
            "--imap-port=0",
            "--pop-port=0",
            f"--oauth-port={port}",
            "--no-oauth",
            f"--dir={tmp_path}",
            "--max-seconds=0",
            stdout=StringIO(),
        )
    assert (tmp_path / "ca.pem").exists()


def test_a_port_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--starttls-port and --oauth-port are both 3000: give each its own port"):
        call_command(
            "gmail_sandbox", "--starttls-port=3000", "--ssl-port=auto", "--oauth-port=3000", f"--dir={tmp_path}"
        )


def test_auto_ports_are_published_in_the_ready_file_in_the_folder(tmp_path: Path) -> None:
    """Without --ready-file the ready file is ready.json in --dir; ports by service name."""
    state = tmp_path / "state"
    process = run_command(
        "--starttls-port=auto",
        "--ssl-port=auto",
        "--imap-port=auto",
        "--pop-port=auto",
        "--oauth-port=auto",
        f"--dir={state}",
        "--max-seconds=60",
        cwd=tmp_path,
    )
    try:
        info = wait_for_file(state / "ready.json", process)
        ports = info["ports"]
        assert isinstance(ports, dict)
        assert sorted(ports) == ["imap", "oauth", "pop3", "ssl", "starttls"]
        assert all(isinstance(port, int) and port > 0 for port in ports.values())
        assert len(set(ports.values())) == 5
        with smtplib.SMTP("127.0.0.1", ports["starttls"], timeout=5) as client:
            assert client.ehlo()[0] == 250
        assert info["oauth"]["token_uri"] == f"http://127.0.0.1:{ports['oauth']}/token"  # type: ignore[index]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert f"STARTTLS port {ports['starttls']}, implicit TLS port {ports['ssl']}." in out
    assert not (state / "ready.json").exists()


def test_a_port_that_is_not_a_number(tmp_path: Path) -> None:
    process = run_command("--ssl-port=smtps", cwd=tmp_path)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "argument --ssl-port: 'smtps' is not a port: give a number from 1 to 65535, or auto." in err


def test_help_shows_the_defaults() -> None:
    from django_gmail_smtp.management.commands.gmail_sandbox import Command

    text = Command().create_parser("manage.py", "gmail_sandbox").format_help()
    flat = " ".join(text.split())
    for fragment in [
        "--starttls-port PORT STARTTLS port, like Gmail's 587 (default: 2587; auto: any free port).",
        "--ssl-port PORT Implicit-TLS port, like Gmail's 465 (default: 2465; auto: any free port).",
        "(default: 2580; auto: any free port)",
        "like Gmail's 993 (default: 2993; auto: any free port).",
        "like Gmail's 995 (default: 2995; auto: any free port).",
        "(default: 127.0.0.1)",
        "(default: .sandbox)",
        "(default: sandbox@example.com)",
        "(default: ready.json in --dir)",
    ]:
        assert fragment in flat


def test_only_loopback_hosts(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="loopback only"):
        call_command("gmail_sandbox", "--host=0.0.0.0", f"--dir={tmp_path}", "--max-seconds=0", stdout=StringIO())
