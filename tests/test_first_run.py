"""The first ten minutes of a new user: the README's settings snippets, the demo script, the
example project against a sandbox on whatever ports it got, and the test run's summary.

Everything runs in subprocesses, as a user would run it, and talks only to 127.0.0.1.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import django
import pytest
from cryptography.fernet import Fernet

from .test_sandbox_command import wait_for_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"

# Variables a user's shell may hold that would point the example project elsewhere.
AUTO_PORTS = ("--starttls-port=auto", "--ssl-port=auto", "--imap-port=auto", "--pop-port=auto")
MAIL_VARIABLES = (
    "EMAIL_URL",
    "GMAIL_SMTP_SSL_CAFILE",
    "SANDBOX_DIR",
    "SANDBOX_STARTTLS_PORT",
    "SANDBOX_SSL_PORT",
    "SANDBOX_IMAP_PORT",
    "SANDBOX_POP_PORT",
    "GMAIL_SMTP_IMAP_HOST",
    "GMAIL_SMTP_IMAP_PORT",
    "GMAIL_SMTP_POP_HOST",
    "GMAIL_SMTP_POP_PORT",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in MAIL_VARIABLES}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env | extra


# -- the README's settings snippets --------------------------------------------------------

SNIPPET = re.compile(r"^[ \t]*<!-- settings(?P<flags>.*?)-->\s*\n[ \t]*```python\n(?P<code>.*?)^[ \t]*```", re.M | re.S)
PYTHON_BLOCK = re.compile(r"^[ \t]*```python\n(?P<code>.*?)^[ \t]*```", re.M | re.S)


@dataclass
class Snippet:
    line: int
    code: str
    needs: tuple[str, ...]
    base: str  # the snippet it continues ("" for none)
    django: str  # "" for any version, else "<6.1" or ">=6.1"

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def readme_snippets(text: str) -> list[Snippet]:
    """The blocks marked ``<!-- settings -->``. Flags: ``continues`` (pasted after the last block
    without it), ``needs=a,b`` (only when those modules are installed), ``django<6.1`` or
    ``django>=6.1`` (a fresh 6.1 project defines ``MAILERS``, which excludes the ``EMAIL_*``
    settings)."""
    snippets: list[Snippet] = []
    head = ""
    for match in SNIPPET.finditer(text):
        flags = match["flags"].split()
        code = textwrap.dedent(match["code"])
        needs = tuple(m for flag in flags if flag.startswith("needs=") for m in flag[6:].split(",") if m)
        version = next((flag[6:] for flag in flags if flag.startswith("django")), "")
        assert version in ("", "<6.1", ">=6.1"), flags
        line = text.count("\n", 0, match.start("code")) + 1
        if "continues" in flags:
            snippets.append(Snippet(line, code, needs, head, version))
        else:
            snippets.append(Snippet(line, code, needs, "", version))
            head = code
    return snippets


README = (ROOT / "README.md").read_text(encoding="utf-8")
SNIPPETS = readme_snippets(README)
# The Install section's snippet: every other one is pasted after it, as the README goes.
[INSTALL] = [snippet for snippet in SNIPPETS if 'INSTALLED_APPS += ["django_gmail_smtp"]' in snippet.code]
# The secrets the snippets read from the environment, as a user would have set them.
SNIPPET_ENV = {
    "GMAIL_APP_PASSWORD": "abcd efgh ijkl mnop",
    "GMAIL_SMTP_KEYS": Fernet.generate_key().decode(),
    "GMAIL_SMTP_OAUTH_CLIENT_ID": "1234-abc.apps.googleusercontent.com",
    "GMAIL_SMTP_OAUTH_CLIENT_SECRET": "GOCSPX-not-a-real-secret",
    "GMAIL_SMTP_OAUTH_REFRESH_TOKEN": "1//not-a-real-refresh-token",
}


def test_every_settings_block_of_the_readme_is_marked() -> None:
    """A Python block that sets an UPPER_CASE name is settings: it must be marked (and so tested)."""
    marked = {snippet.code for snippet in SNIPPETS}
    unmarked = []
    for match in PYTHON_BLOCK.finditer(README):
        code = textwrap.dedent(match["code"])
        if code in marked:
            continue
        tree = ast.parse(code)
        targets = [t for node in tree.body if isinstance(node, ast.Assign | ast.AugAssign) for t in _names(node)]
        if any(name.isupper() for name in targets):
            unmarked.append(README.count("\n", 0, match.start()) + 1)
    assert len(SNIPPETS) >= 12
    assert unmarked == [], f"settings blocks without <!-- settings --> at README.md lines {unmarked}"


def _names(node: ast.Assign | ast.AugAssign) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [target.id for target in targets if isinstance(target, ast.Name)]


@pytest.fixture(scope="module")
def snippet_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each snippet pasted at the end of a fresh ``startproject`` settings file, then ``check``."""
    folder = tmp_path_factory.mktemp("startproject")
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(folder)], check=True, env=clean_env())
    settings = (folder / "mysite" / "settings.py").read_text(encoding="utf-8")

    def check(number: int, snippet: Snippet) -> tuple[str, subprocess.CompletedProcess[str]]:
        module = f"settings_snippet_{number}"
        parts = [settings, "" if snippet is INSTALL else INSTALL.code, snippet.base, snippet.code]
        (folder / "mysite" / f"{module}.py").write_text("\n".join(parts), encoding="utf-8")
        # Only the variables this snippet reads: an OAuth2 token in the environment changes how
        # every other configuration signs in.
        code = snippet.base + snippet.code
        env = clean_env(**{name: value for name, value in SNIPPET_ENV.items() if name in code})
        done = subprocess.run(
            [sys.executable, "manage.py", "check", f"--settings=mysite.{module}"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return snippet.name, done

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(lambda item: check(*item), enumerate(SNIPPETS)))


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[snippet.name for snippet in SNIPPETS])
def test_a_readme_settings_snippet_passes_check_in_a_fresh_project(
    snippet: Snippet, snippet_results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    missing = [module for module in snippet.needs if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"README snippet needs {', '.join(missing)}")
    if snippet.django and (django.VERSION[:2] >= (6, 1)) != (snippet.django == ">=6.1"):
        pytest.skip(f"README snippet for Django {snippet.django}")
    done = snippet_results[snippet.name]
    assert done.returncode == 0, f"{snippet.name}:\n{snippet.code}\n{done.stdout}{done.stderr}"
    assert "System check identified no issues" in done.stdout, done.stdout + done.stderr


def test_the_quick_start_snippet_defines_env() -> None:
    """The bug a new user hit first: `env` used without `import environ; env = environ.Env()`."""
    using_env = [snippet for snippet in SNIPPETS if "env(" in snippet.code]
    assert len(using_env) >= 3
    for snippet in using_env:
        assert "env = environ.Env()" in snippet.code, snippet.name


# -- scripts/demo.sh -----------------------------------------------------------------------


def test_demo_help_explains_itself_and_runs_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), "--help"],
        env=clean_env(VENV=str(venv)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: bash scripts/demo.sh [--help]")
    for fragment in ("SANDBOX_STARTTLS_PORT", "SANDBOX_SSL_PORT", "from the package index", "127.0.0.1", "auto"):
        assert fragment in done.stdout
    assert done.stderr == ""
    assert not venv.exists()  # nothing was installed, nothing started

    wrong = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), "--starttls-port", "3000"],
        env=clean_env(VENV=str(venv)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.returncode == 2
    assert "unknown argument '--starttls-port': it takes none (see bash scripts/demo.sh --help)." in wrong.stderr
    assert not venv.exists()


# -- the example project, against a sandbox on the ports it got ----------------------------


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def example_env(tmp_path: Path) -> dict[str, str]:
    """The example project with its sandbox folder and database in a temporary directory."""
    return clean_env(SANDBOX_DIR=str(tmp_path / "sandbox"), DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")


@pytest.fixture
def running_sandbox(example_env: dict[str, str]) -> Iterator[dict[str, object]]:
    """``manage.py gmail_sandbox`` on free ports (as the demo starts it); yields its ready file."""
    folder = Path(example_env["SANDBOX_DIR"])
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "gmail_sandbox",
            f"--dir={folder}",
            *AUTO_PORTS,
            "--no-oauth",
            "--max-seconds=120",
        ],
        cwd=EXAMPLE,
        env=example_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield wait_for_file(folder / "ready.json", process, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_the_example_project_finds_the_sandbox_on_the_ports_it_got(
    running_sandbox: dict[str, object], example_env: dict[str, str]
) -> None:
    ports = running_sandbox["ports"]
    assert isinstance(ports, dict)
    sent = manage("send_demo", "--to", "newcomer@example.com", env=example_env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert re.search(rf"^  port +{ports['starttls']} ", sent.stdout, re.M), sent.stdout
    assert f"ssl_cafile {running_sandbox['ca_file']}" in sent.stdout
    assert "Delivered to the sandbox:" in sent.stdout
    assert "  To:        newcomer@example.com" in sent.stdout
    checked = manage("gmail_check", env=example_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"All steps passed: Django can send mail through 127.0.0.1:{ports['starttls']}" in checked.stdout
    # The round trip finds the sandbox's IMAP port in the ready file too.
    proven = manage("gmail_check", "--round-trip", env=example_env)
    assert proven.returncode == 0, proven.stdout + proven.stderr
    assert f"IMAP connection to 127.0.0.1:{ports['imap']} (implicit TLS)... OK" in proven.stdout
    assert "Delivery proven: the test message arrived in INBOX after" in proven.stdout


def test_send_demo_fails_with_the_cause_and_the_fix_not_a_traceback(
    example_env: dict[str, str], closed_port: int
) -> None:
    """No sandbox running (no ready file): the cause, the fix, the way out; the traceback at -v 3."""
    env = example_env | {"SANDBOX_STARTTLS_PORT": str(closed_port)}
    failed = manage("send_demo", env=env)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stdout + failed.stderr
    assert "CommandError" not in failed.stderr
    assert failed.stderr.splitlines() == [
        "Could not send: ConnectionRefusedError: Connection refused",
        "Cause: The server refused the connection: nothing listens on that host and port.",
        "Fix: Check the host and port (Gmail: smtp.gmail.com, 587 or 465).",
        "Cause id: connection_refused",
        "Is the Gmail sandbox running? Start it with 'python manage.py gmail_sandbox' (in example_project); "
        "this project reads the ports it takes from .sandbox/ready.json.",
        "Run with -v 3 to see the traceback.",
    ]
    assert f"  port       {closed_port} " in failed.stdout

    verbose = manage("send_demo", "-v", "3", env=env)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last):" in verbose.stderr
    assert "Cause id: connection_refused" in verbose.stderr


# -- scripts/test.sh's summary --------------------------------------------------------------


def test_the_test_run_ends_with_skips_counted_by_reason(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.parametrize("n", range(5))
            def test_new_feature(n):
                pytest.skip("needs the new feature")

            @pytest.mark.skipif(True, reason="needs a live server")
            def test_live():
                pass

            def test_passes():
                assert True
            """
        ),
        encoding="utf-8",
    )
    # The project's own pytest configuration (pyproject.toml), as scripts/test.sh runs it.
    config = [f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), str(tmp_path / "test_sample.py")]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.skip_summary", *config],
        cwd=ROOT,
        env=clean_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKIPPED [" not in done.stdout  # no line per skipped test
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "6 skipped, by reason" in line)
    assert lines[start + 1 : start + 3] == ["   5  needs the new feature", "   1  needs a live server"]
    assert lines[-1].startswith("1 passed, 6 skipped")
