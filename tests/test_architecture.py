"""The package's shape: one way down through the layers, no import cycle, no oversized module.

Pure Python, no Django needed: every module of ``django_gmail_smtp`` (migrations aside) is
parsed with :mod:`ast`, and every import of the package is collected -- at module level, inside
functions and under ``if TYPE_CHECKING:`` alike (a type from a higher layer is a dependency too).
``from package import name`` depends on the module ``package.name`` when there is one, else on
the package's ``__init__``; a package's ``__init__`` is a module like any other. Importing a
submodule also runs its parent packages' ``__init__``, but that is not counted: a package that
imports its own submodules would otherwise always be a cycle. Dotted paths in strings
(``EMAIL_BACKEND``, ``import_string()``) are settings, not imports, and are not counted either.

:data:`LAYERS` is the map, lowest layer first; the README's layout section (under
"Development") shows the same table, and :func:`test_readme_shows_the_layer_map` keeps the two
equal. A module may import modules of its own layer (as long as no cycle forms) and of every
layer its layer rests on, directly or through others; nothing else. A new module must be placed
on the map before the tests pass.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = "django_gmail_smtp"
REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / PACKAGE
README = REPO / "README.md"
TOP = "__init__"
"""How the package's own ``__init__`` is named on the map (``sandbox`` is ``sandbox/__init__.py``)."""


@dataclass(frozen=True)
class Layer:
    """Modules that share a job, and the layers they may import from (besides their own)."""

    what: str
    modules: tuple[str, ...]
    rests_on: tuple[str, ...] = ()


# Lowest first. Module names are relative to the package; "x.*" stands for every module below
# the package x (a name written out wins over a pattern).
LAYERS: dict[str, Layer] = {
    "leaves": Layer(
        "what everything may use: the cause catalogue, the exceptions and how to word them, "
        "deadlines, redaction, Gmail's host names, the envelope of a message, payloads, retries",
        (
            TOP,
            "causes",
            "causes.*",
            "exceptions",
            "deadline",
            "bounded_io",
            "redaction",
            "hosts",
            "envelope",
            "mutf7",
            "signals",
            "payload",
            "retry",
            "tasks_compat",
            "xoauth2",
            "sandbox.constants",
        ),
    ),
    "settings": Layer(
        "the one validated reader of `GMAIL_SMTP`, and the only place that reads the environment",
        ("app_settings",),
        ("leaves",),
    ),
    "configuration": Layer(
        "`SmtpConfig` and `resolve()` (stored accounts come in as an argument), validation rules",
        ("conf", "rules", "rules.*"),
        ("settings",),
    ),
    "stored accounts": Layer(
        "accounts in the database, their secrets encrypted and bound to a destination; "
        "beside the configuration, never imported by it",
        ("binding", "crypto", "models", "accounts"),
        ("configuration",),
    ),
    "oauth": Layer(
        "OAuth2 access tokens (cached, refreshed at the token endpoint through one bounded request)",
        ("oauth", "oauth_http"),
        ("configuration",),
    ),
    "smtp": Layer(
        "one SMTP conversation: the transcript, the bounded client, the session, the pipelining "
        "engine, the sign-in mechanisms plugged into the session (password, XOAUTH2)",
        ("transcript", "smtp_client", "pipeline", "smtp_auth", "session"),
        ("oauth",),
    ),
    "protocols": Layer(
        "the mailbox clients of the round trip (IMAP, POP3)", ("mailbox_session", "imap", "pop"), ("smtp",)
    ),
    "pool": Layer(
        "signed-in connections kept between calls, and the sources a batch takes its connections from",
        ("pool", "connections"),
        ("smtp",),
    ),
    "delivery": Layer(
        "a batch on its way: each message's outcome, the state machine that settles a round's "
        "replies, the loop (retries, reconnects), and the daily-limit guard",
        ("outcome", "settlement", "delivery", "quota"),
        ("pool", "stored accounts"),
    ),
    "smtp backend": Layer("`EmailBackend`: Django's API over the delivery", ("smtp_backend",), ("delivery",)),
    "diagnosis": Layer(
        "the staged connection test (`diagnose`) and the round trip (`roundtrip`) behind `gmail_check` and the "
        "admin's buttons, their result (`diagnosis`) and exit statuses (`exit_status`)",
        ("exit_status", "diagnosis", "roundtrip", "roundtrip.*", "diagnose", "diagnose.*"),
        ("protocols",),
    ),
    "authorization": Layer(
        "getting a refresh token: the OAuth2 authorization-code flow (`gmail_authorize`, the admin) and "
        "the loopback receiver of `gmail_authorize`",
        ("oauth_flow", "oauth_receiver"),
        ("protocols",),
    ),
    "queue": Layer(
        "`QueuedEmailBackend` on Django's Tasks framework (the request's side, the Tasks adapter, a "
        "worker's attempt, the task, recovery, the rules of time), its report and RQ worker",
        (
            "queued",
            "queued.backend",
            "queued.tasks",
            "queued.attempt",
            "queued.task",
            "queued.recovery",
            "queued.policy",
            "queue_report",
            "rq_worker",
        ),
        ("smtp backend",),
    ),
    "sandbox": Layer("the Gmail-like server for development and tests", ("sandbox", "sandbox.*"), ("leaves",)),
    "entry points": Layer(
        "what Django and people call: the public backend paths, the app, system checks, the error "
        "reporter filter, the admin, the commands",
        (
            "backend",
            "apps",
            "checks",
            "reporting",
            "admin",
            "admin_base",
            "admin_try",
            "admin_oauth",
            "admin_delivery",
            "admin_display",
            "admin_forms",
            "admin_pending",
            "management",
            "management.*",
        ),
        ("queue", "diagnosis", "authorization", "sandbox"),
    ),
}

MAX_LINES = 600
"""No module outside ``sandbox/`` may be longer."""

ENVIRONMENT_READERS = ("app_settings",)
"""Where ``os.environ`` may be read: the settings layer only (``EMAIL_URL``, ``GMAIL_SMTP_*``)."""

GMAIL_SMTP_READERS = ("app_settings", "sandbox.*")
"""Where the ``GMAIL_SMTP`` setting may be read (the sandbox's pytest plugin adds its endpoints)."""


# -- the graph ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import of a module of the package: where it is written and what it names."""

    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} (line {self.line}) imports {self.target}"


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {name: set() for name in self.modules}
        for item in self.imports:
            found[item.source].add(item.target)
        return found


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root`` by its relative name (migrations left out)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[0] == "migrations":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts) or TOP] = path
    return found


def _package_of(name: str, path: Path) -> list[str]:
    """The package a module's relative imports start from, as name parts."""
    parts = [] if name == TOP else name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _as_module(parts: list[str], modules: Mapping[str, Path]) -> str | None:
    name = ".".join(parts) or TOP
    return name if name in modules else None


def read_graph(root: Path, package: str = PACKAGE) -> Graph:
    """The import graph of the package at ``root`` (named ``package``)."""
    modules = module_files(root)
    graph = Graph(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _targets(node, name, path, modules, package):
                if target != name:
                    graph.imports.append(Import(name, target, getattr(node, "lineno", 0)))
    return graph


def _targets(node: ast.AST, name: str, path: Path, modules: Mapping[str, Path], package: str) -> list[str]:
    if isinstance(node, ast.Import):
        base = [alias.name for alias in node.names if alias.name == package or alias.name.startswith(package + ".")]
        found = []
        for dotted in base:
            module = _as_module(dotted.split(".")[1:], modules)
            if module is None:
                raise AssertionError(f"{name} line {node.lineno}: no module {dotted}")
            found.append(module)
        return found
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        start = _package_of(name, path)
        if node.level > 1:
            start = start[: len(start) - (node.level - 1)]
        parts = start + (node.module.split(".") if node.module else [])
    elif node.module == package or (node.module or "").startswith(package + "."):
        parts = node.module.split(".")[1:]  # type: ignore[union-attr]
    else:
        return []
    base = _as_module(parts, modules)
    found = []
    for alias in node.names:
        submodule = _as_module([*parts, alias.name], modules)
        if submodule is not None:
            found.append(submodule)
        elif base is not None:
            found.append(base)
        else:
            raise AssertionError(f"{name} line {node.lineno}: no module {'.'.join(parts)}")
    return found


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


# -- the map --------------------------------------------------------------------------------


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        return module.startswith(pattern[:-1])
    return module == pattern


def layer_of(module: str, layers: Mapping[str, Layer] = LAYERS) -> str | None:
    """The layer that names ``module``, else the one whose pattern covers it."""
    for name, layer in layers.items():
        if module in layer.modules:
            return name
    for name, layer in layers.items():
        if any(_matches(module, pattern) for pattern in layer.modules if pattern.endswith(".*")):
            return name
    return None


def reachable(layer: str, layers: Mapping[str, Layer] = LAYERS) -> set[str]:
    """The layers ``layer`` may import from: itself and all it rests on, directly or not."""
    seen = {layer}
    todo = [layer]
    while todo:
        for below in layers[todo.pop()].rests_on:
            if below not in seen:
                seen.add(below)
                todo.append(below)
    return seen


def upward(graph: Graph, layers: Mapping[str, Layer] = LAYERS) -> list[Import]:
    """Imports of a module from a layer its own layer does not rest on."""
    return [
        item
        for item in graph.imports
        if layer_of(item.target, layers) not in reachable(layer_of(item.source, layers) or "", layers)
    ]


# -- the tests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Graph:
    return read_graph(ROOT)


def test_every_module_is_on_the_map(graph: Graph) -> None:
    unplaced = sorted(name for name in graph.modules if layer_of(name) is None)
    assert unplaced == [], f"Place these modules in a layer of LAYERS (tests/test_architecture.py): {unplaced}"
    named = [module for layer in LAYERS.values() for module in layer.modules if not module.endswith(".*")]
    assert sorted(set(named) - set(graph.modules)) == [], "LAYERS names modules that do not exist"
    assert len(named) == len(set(named)), "a module is named in two layers"
    for name, layer in LAYERS.items():
        assert set(layer.rests_on) <= set(LAYERS), f"{name} rests on an unknown layer"
        assert [below for below in layer.rests_on if list(LAYERS).index(below) > list(LAYERS).index(name)] == [], (
            f"{name} rests on a layer listed after it: keep LAYERS lowest first"
        )


def test_no_import_cycle(graph: Graph) -> None:
    found = cycles(graph.edges())
    where = {
        " <-> ".join(component): sorted(
            {str(item) for item in graph.imports if {item.source, item.target} <= set(component)}
        )
        for component in found
    }
    assert found == [], f"Import cycles (function-level and TYPE_CHECKING imports count): {where}"


def test_imports_point_down(graph: Graph) -> None:
    wrong = [f"{item} ({layer_of(item.source)} -> {layer_of(item.target)})" for item in upward(graph)]
    assert wrong == [], "Imports against the layer map (tests/test_architecture.py LAYERS):\n" + "\n".join(wrong)


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_modules_are_small(graph: Graph) -> None:
    sizes = {name: line_count(path) for name, path in graph.modules.items() if not _matches(name, "sandbox.*")}
    too_long = {name: size for name, size in sizes.items() if size > MAX_LINES}
    assert too_long == {}, f"Over {MAX_LINES} lines: split them. {too_long}"


def _reads(tree: ast.AST, attribute: str, *, strings: Iterable[str] = ()) -> list[int]:
    """Lines that read ``os.<attribute>`` / ``from os import <attribute>``, or ``getattr(x, "<string>")``
    / ``x.<string>``."""
    wanted = set(strings)

    def reads(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute):
            from_os = node.attr == attribute and isinstance(node.value, ast.Name) and node.value.id == "os"
            return from_os or node.attr in wanted
        if isinstance(node, ast.ImportFrom):
            return node.module == "os" and any(alias.name == attribute for alias in node.names)
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in wanted
        )

    return [getattr(node, "lineno", 0) for node in ast.walk(tree) if reads(node)]


def _allowed(module: str, patterns: Iterable[str]) -> bool:
    return any(_matches(module, pattern) for pattern in patterns)


def _trees(graph: Graph) -> dict[str, ast.AST]:
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in graph.modules.items()}


def test_the_environment_is_read_in_one_place(graph: Graph) -> None:
    found = {
        name: lines
        for name, tree in _trees(graph).items()
        if not _allowed(name, ENVIRONMENT_READERS) and (lines := _reads(tree, "environ") + _reads(tree, "getenv"))
    }
    assert found == {}, f"os.environ read outside app_settings (use its environment_variable()): {found}"


def test_gmail_smtp_is_read_in_one_place(graph: Graph) -> None:
    found = {
        name: lines
        for name, tree in _trees(graph).items()
        if not _allowed(name, GMAIL_SMTP_READERS) and (lines := _reads(tree, "-", strings=("GMAIL_SMTP",)))
    }
    assert found == {}, f"settings.GMAIL_SMTP read outside app_settings (use its readers): {found}"


# -- the README -----------------------------------------------------------------------------

README_MARKER = "<!-- layers: tests/test_architecture.py -->"


def layer_table(layers: Mapping[str, Layer] = LAYERS) -> str:
    """The map as the README shows it: highest layer first, as one reads down a call."""
    rows = ["| Layer | Modules | Imports from | What |", "| --- | --- | --- | --- |"]
    for name, layer in reversed(list(layers.items())):
        modules = ", ".join("the package" if module == TOP else f"`{module}`" for module in layer.modules)
        below = ", ".join(layer.rests_on) or "-"
        rows.append(f"| {name} | {modules} | {below} | {layer.what} |")
    return "\n".join(rows)


def test_readme_shows_the_layer_map() -> None:
    text = README.read_text(encoding="utf-8")
    assert README_MARKER in text, f"README.md lost its layer map (the line {README_MARKER})"
    shown = text.split(README_MARKER, 1)[1].strip().split("\n\n", 1)[0].strip()
    assert shown == layer_table(), f"Replace the table after {README_MARKER} in README.md with:\n{layer_table()}"


# -- the graph reader itself ----------------------------------------------------------------


def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_reader_counts_every_kind_of_import(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "VERSION = 1\n",
            "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import Thing\n",
            "high.py": "def f():\n    from . import low\n    return low\n",
            "sub/__init__.py": "from .inner import X\nfrom .. import VERSION\n",
            "sub/inner.py": "import pkg.low\nfrom pkg.sub import other\nfrom ..high import f\nX = 1\n",
            "sub/other.py": "",
            "migrations/__init__.py": "from .. import high\n",
        },
    )
    graph = read_graph(root, "pkg")
    assert set(graph.modules) == {TOP, "low", "high", "sub", "sub.inner", "sub.other"}
    assert graph.edges() == {
        TOP: set(),
        "low": {"high"},  # under TYPE_CHECKING
        "high": {"low"},  # inside a function
        "sub": {"sub.inner", TOP},  # a name of the package's __init__
        "sub.inner": {"low", "sub.other", "high"},
        "sub.other": set(),
    }
    assert cycles(graph.edges()) == [["high", "low"]]


def test_the_map_rules(tmp_path: Path) -> None:
    layers = {
        "bottom": Layer("", ("a", "x.*")),
        "middle": Layer("", ("b",), ("bottom",)),
        "side": Layer("", ("s", "x.named"), ("bottom",)),
        "top": Layer("", ("c",), ("middle", "side")),
    }
    assert layer_of("x.deep.er", layers) == "bottom"
    assert layer_of("x.named", layers) == "side"
    assert reachable("top", layers) == {"top", "middle", "side", "bottom"}
    assert reachable("middle", layers) == {"middle", "bottom"}
    graph = Graph({name: Path(name) for name in ("a", "b", "s", "c")})
    graph.imports = [Import("c", "a", 1), Import("b", "a", 2), Import("b", "s", 3), Import("a", "c", 4)]
    assert [str(item) for item in upward(graph, layers)] == [
        "b (line 3) imports s",  # a sibling layer
        "a (line 4) imports c",
    ]


def test_readers_of_the_environment_and_settings_are_found() -> None:
    tree = ast.parse(
        "import os\nfrom os import environ\nos.environ.get('X')\nos.getenv('Y')\n"
        "getattr(settings, 'GMAIL_SMTP', None)\nsettings.GMAIL_SMTP\n"
    )
    assert _reads(tree, "environ") == [2, 3]
    assert _reads(tree, "getenv") == [4]
    assert _reads(tree, "-", strings=("GMAIL_SMTP",)) == [5, 6]


def test_the_table_lists_every_layer() -> None:
    table = layer_table()
    assert re.findall(r"^\| ([a-z ]+) \|", table, re.MULTILINE) == list(reversed(LAYERS))
