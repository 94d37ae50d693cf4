"""The Japanese translation: complete, placeholder-safe, used at run time, and compiled.

After ``makemessages -l ja`` adds a string, the first test fails until it is
translated (see docs/translating.md); after the .po changes, the last ones fail
until ``compilemessages -l ja`` is run again.
"""

from __future__ import annotations

import ast
import gettext
import io
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import translation

import django_gmail_smtp
from django_gmail_smtp import conf, diagnose, rules
from django_gmail_smtp.causes import CATALOGUE

from .conftest import legacy_api

LC_MESSAGES = Path(django_gmail_smtp.__file__).resolve().parent / "locale" / "ja" / "LC_MESSAGES"
PO_FILE = LC_MESSAGES / "django.po"
MO_FILE = LC_MESSAGES / "django.mo"
APP_PASSWORD = "abcdefghijklmnop"

# printf-style conversions as Python's % operator reads them: %(name)s, %s, %.2f, %%...
PRINTF = re.compile(r"%(?:\((?P<name>[^)]*)\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?P<type>[diouxXeEfFgGcrsa%])")
BRACES = re.compile(r"\{[^{}]*\}")
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


# -- a small .po reader (polib is not a dependency) -------------------------------------------


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    line: int = 0

    @property
    def is_header(self) -> bool:
        return self.msgid == "" and self.msgctxt is None

    @property
    def translations(self) -> list[str]:
        return [self.msgstr[index] for index in sorted(self.msgstr)]

    def __str__(self) -> str:
        return f"line {self.line}: {self.msgid!r}"


def _unquote(text: str, where: str) -> str:
    text = text.strip()
    if not (text.startswith('"') and text.endswith('"')):
        raise ValueError(f"{where}: expected a quoted string, got {text!r}")
    value = ast.literal_eval(text)  # C escapes (\n, \", \\) read the same in Python
    assert isinstance(value, str)
    return value


def parse_po(path: Path) -> list[Entry]:
    """Every entry of a .po file, obsolete (#~) ones left out."""
    entries: list[Entry] = []
    entry = Entry()
    target: tuple[str, int] | None = None  # the keyword the next continuation line extends
    keyword = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(\".*\")\s*$")

    def finish() -> None:
        nonlocal entry, target
        if target is not None:
            entries.append(entry)
        entry, target = Entry(), None

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        where = f"{path.name}:{number}"
        if not line:
            finish()
        elif line.startswith("#~"):
            continue
        elif line.startswith("#,"):
            if target is not None and target[0] != "msgctxt":
                finish()
            entry.flags |= {flag.strip() for flag in line[2:].split(",") if flag.strip()}
        elif line.startswith("#"):
            if target is not None and target[0] != "msgctxt":
                finish()
        elif line.startswith('"'):
            if target is None:
                raise ValueError(f"{where}: a string outside an entry")
            value = _unquote(line, where)
            name, index = target
            if name == "msgstr":
                entry.msgstr[index] += value
            else:
                setattr(entry, name, getattr(entry, name) + value)
        else:
            match = keyword.match(line)
            if match is None:
                raise ValueError(f"{where}: cannot read {raw!r}")
            name, index, value = match.group(1), match.group(2), _unquote(match.group(3), where)
            if name in ("msgctxt", "msgid") and target is not None and target[0] != "msgctxt":
                finish()
            if not entry.line:
                entry.line = number
            if name.startswith("msgstr"):
                position = int(index) if index is not None else 0
                entry.msgstr[position] = value
                target = ("msgstr", position)
            else:
                setattr(entry, name, value)
                target = (name, 0)
    finish()
    return entries


def expected_catalog(entries: list[Entry]) -> dict[Any, str]:
    """What ``gettext.GNUTranslations`` should load from a .mo compiled from these entries."""
    catalog: dict[Any, str] = {}
    for entry in entries:
        if "fuzzy" in entry.flags and not entry.is_header:
            continue  # msgfmt leaves fuzzy entries out
        key = entry.msgid if entry.msgctxt is None else f"{entry.msgctxt}\x04{entry.msgid}"
        if entry.msgid_plural is None:
            if entry.msgstr.get(0):
                catalog[key] = entry.msgstr[0]
        elif all(entry.translations):
            for index, text in entry.msgstr.items():
                catalog[(key, index)] = text
    return normalized(catalog)


def load_mo(path: Path) -> dict[Any, str]:
    with path.open("rb") as handle:
        translations = gettext.GNUTranslations(handle)
    return normalized(translations._catalog)


def normalized(catalog: dict[Any, str]) -> dict[Any, str]:
    """The catalog without the header's POT-Creation-Date, which GNU msgfmt leaves out of a .mo."""
    result = dict(catalog)
    if "" in result:
        result[""] = "".join(
            line for line in result[""].splitlines(keepends=True) if not line.startswith("POT-Creation-Date:")
        )
    return result


def placeholders(text: str) -> tuple[set[str], list[str]]:
    """Named placeholders (a set: order and repetition may change) and positional ones (in order)."""
    named: set[str] = set()
    positional: list[str] = []
    for match in PRINTF.finditer(text):
        if match.group("type") == "%":
            continue
        if match.group("name") is not None:
            named.add(match.group(0))
        else:
            positional.append(match.group(0))
    return named, positional


def format_check(text: str, named: set[str], positional: list[str]) -> None:
    """Raise if Python's % operator cannot fill ``text`` (a stray %, a bad conversion)."""
    if named:
        text % {name[2 : name.index(")")]: 1 for name in named}
    else:
        text % tuple(1 for _ in positional)


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return parse_po(PO_FILE)


# -- (1) complete and placeholder-safe ----------------------------------------------------------


def test_header_is_japanese(entries: list[Entry]) -> None:
    header = entries[0]
    assert header.is_header, "the first entry of the .po must be the header"
    assert "fuzzy" not in header.flags, "remove '#, fuzzy' from the header"
    fields = dict(line.split(": ", 1) for line in header.msgstr[0].splitlines() if ": " in line)
    assert fields["Language"] == "ja"
    assert fields["Plural-Forms"] == "nplurals=1; plural=0;"
    assert "charset=UTF-8" in fields["Content-Type"]


def test_every_entry_is_translated_and_not_fuzzy(entries: list[Entry]) -> None:
    messages = [entry for entry in entries if not entry.is_header]
    assert len(messages) > 300, "the .po looks truncated"
    fuzzy = [str(entry) for entry in messages if "fuzzy" in entry.flags]
    untranslated = [str(entry) for entry in messages if not entry.msgstr or not all(entry.translations)]
    assert not fuzzy, f"fuzzy entries (check the translation, then remove the flag): {fuzzy}"
    assert not untranslated, f"untranslated entries: {untranslated}"
    plural = [str(entry) for entry in messages if entry.msgid_plural is not None and sorted(entry.msgstr) != [0]]
    assert not plural, f"Japanese has one plural form: fill msgstr[0] only: {plural}"


def test_translations_keep_the_placeholders(entries: list[Entry]) -> None:
    wrong = []
    for entry in entries:
        if entry.is_header:
            continue
        named, positional = placeholders(entry.msgid)
        if entry.msgid_plural is not None:
            plural_named, _positional = placeholders(entry.msgid_plural)
            named |= plural_named
        for text in filter(None, entry.translations):  # empty ones: see the test above
            if placeholders(text) != (named, positional):
                wrong.append(f"{entry}: {sorted(named)} {positional} != {placeholders(text)} in {text!r}")
            if "python-format" in entry.flags:
                try:
                    format_check(text, named, positional)
                except (ValueError, TypeError, KeyError) as exc:
                    wrong.append(f"{entry}: {text!r} cannot be formatted: {exc}")
            if "python-brace-format" in entry.flags and set(BRACES.findall(text)) != set(BRACES.findall(entry.msgid)):
                wrong.append(f"{entry}: braces differ in {text!r}")
    assert not wrong, "\n".join(wrong)


def test_translations_are_japanese_where_the_english_is_prose(entries: list[Entry]) -> None:
    """A msgstr copied from the msgid is a forgotten translation (codes and names excepted)."""
    copied = [
        str(entry)
        for entry in entries
        if not entry.is_header
        and len(entry.msgid.split()) >= 3
        and any(text and not JAPANESE.search(text) for text in entry.translations)
    ]
    assert not copied, f"translations without Japanese text: {copied}"


def test_the_parser_reads_what_msgfmt_reads(entries: list[Entry], tmp_path: Path) -> None:
    if shutil.which("msgfmt") is None:
        pytest.skip("GNU gettext (msgfmt) is not installed")
    result = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", str(tmp_path / "django.mo"), str(PO_FILE)],
        capture_output=True,
        text=True,
        check=False,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "untranslated" not in result.stderr, result.stderr
    assert "fuzzy" not in result.stderr, result.stderr
    assert load_mo(tmp_path / "django.mo") == expected_catalog(entries)


# -- (2) used at run time -------------------------------------------------------------------------


def test_a_cause_is_explained_in_japanese() -> None:
    cause = CATALOGUE["bad_credentials"]
    with translation.override("ja"):
        text = cause.explain()
    assert text.startswith("原因: Gmail がユーザー名とパスワードを受け付けませんでした(535 5.7.8)。"), text
    assert "対処: ユーザー名には Gmail のアドレス全体を" in text
    assert "16 文字のアプリ パスワード" in text
    assert text.endswith("https://myaccount.google.com/apppasswords [bad_credentials]")
    with translation.override("en"):
        assert cause.explain().startswith("Cause: Gmail did not accept the username and password (535 5.7.8).")


def test_a_system_check_message_is_in_japanese() -> None:
    config = conf.resolve({"port": 465, "use_tls": True, "username": "me@gmail.com", "password": APP_PASSWORD})
    (problem,) = [p for p in rules.check_config(config) if p.id == "gmail_smtp.E003"]
    with translation.override("ja"):
        message, hint = str(problem.message), str(problem.hint)
    assert message.startswith("ポート 465(設定元: ")
    assert "暗黙の TLS を想定していますが、STARTTLS が有効になっている" in message
    assert message.endswith("接続が止まったままになります。")
    assert hint == (
        "ポート 465 を使い続ける場合は EMAIL_USE_SSL = True と EMAIL_USE_TLS = False を、"
        "STARTTLS を使い続ける場合は EMAIL_PORT = 587 を設定してください。"
    )
    with translation.override("en"):  # lazy: the same problem reads in the language active when shown
        assert str(problem.message).startswith("Port 465 (from ")


@legacy_api
def test_gmail_check_speaks_japanese(settings: Any) -> None:
    """A configuration error stops gmail_check before the network: every line is translated."""
    settings.EMAIL_HOST = "smtp.gmail.com"
    settings.EMAIL_PORT = 465
    settings.EMAIL_USE_TLS = True
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = "me@gmail.com"
    settings.EMAIL_HOST_PASSWORD = APP_PASSWORD
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("gmail_check", "--lang", "ja", stdout=out, stderr=err, no_color=True)
    assert raised.value.returncode == diagnose.EXIT_CODES["config"]
    assert "設定(EMAIL_* 設定):" in out.getvalue()
    assert "gmail_smtp.E003 (エラー): ポート 465" in out.getvalue()
    assert "ヒント: ポート 465 を使い続ける場合は" in out.getvalue()
    assert str(raised.value).startswith("「設定」で失敗しました: ")


# -- (3) compiled -----------------------------------------------------------------------------------


def test_the_compiled_catalog_matches_the_po(entries: list[Entry]) -> None:
    """django.mo must be compiled from the current django.po (run compilemessages -l ja)."""
    assert MO_FILE.exists(), "run: django-admin compilemessages -l ja (in django_gmail_smtp/)"
    compiled, expected = load_mo(MO_FILE), expected_catalog(entries)
    missing = sorted(str(key) for key in expected.keys() - compiled.keys())
    stale = sorted(str(key) for key in compiled.keys() - expected.keys())
    changed = sorted(str(key) for key in expected.keys() & compiled.keys() if expected[key] != compiled[key])
    out_of_date = {"missing": missing[:5], "stale": stale[:5], "changed": changed[:5]}
    assert out_of_date == {"missing": [], "stale": [], "changed": []}, (
        "django.mo is out of date: run compilemessages -l ja"
    )
