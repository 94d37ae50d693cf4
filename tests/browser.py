"""The admin in a real browser: Debian's Chromium driven by Playwright, axe-core for accessibility.

Nothing is downloaded: the browser is ``/usr/bin/chromium`` (``apt-get install chromium``; never
``playwright install``), axe-core is the copy bundled in the ``axe-playwright-python`` wheel.
Without either, the browser tests are skipped with the reason.

* :func:`open_page` gives a logged-in page of 1280×800 pixels in English or Japanese.
* :func:`check_accessibility` runs axe-core on the page: no serious or critical violation.
* :func:`check_keyboard` presses Tab through the page: every button is reached.
* :func:`screenshot` saves the page under ``artifacts/screenshots/`` (CI keeps that folder; git
  ignores it). With ``GMAIL_SMTP_README_SCREENSHOTS=1`` (``bash scripts/screenshots.sh``) the
  pages the README shows are also written, optimized, to ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "screenshots"
README_SCREENSHOTS = REPO / "docs" / "screenshots"
README_SHOTS_ENV = "GMAIL_SMTP_README_SCREENSHOTS"
VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--font-render-hinting=none",
]
BLOCKING_IMPACTS = ("serious", "critical")
OPERATOR = ("operator", "operator@example.com", "operator-password")


def _requirements() -> tuple[Any, str]:
    """Playwright's sync API and axe-core's source, or a skip saying what is missing."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright; no 'playwright install')")
    try:
        from axe_playwright_python.base import AXE_SCRIPT
    except ImportError:
        pytest.skip("axe-core is not installed (pip install axe-playwright-python)")
    return sync_playwright, AXE_SCRIPT


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One Chromium per test module."""
    sync_playwright, _axe = _requirements()
    # Playwright's sync API runs an event loop in this thread; the tests also use the ORM here.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def operator() -> Any:
    """The superuser the browser tests log in as (created once per test database)."""
    from django.contrib.auth.models import User

    user = User.objects.filter(username=OPERATOR[0]).first()
    return user or User.objects.create_superuser(*OPERATOR)


def open_page(
    browser: Any, live_server: Any, path: str, *, language: str = "en", user: Any = None, javascript: bool = True
) -> Any:
    """A new browser page, logged in (Django's session cookie), showing ``path``."""
    from django.test import Client

    client = Client()
    client.force_login(user or operator())
    context = browser.new_context(
        viewport=VIEWPORT, locale="ja-JP" if language == "ja" else "en-US", java_script_enabled=javascript
    )
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{live_server.url}{path}")
    return page


def check_accessibility(page: Any, name: str) -> None:
    """axe-core finds no serious or critical violation on the page (all of axe's rules)."""
    _sync, axe_script = _requirements()
    page.evaluate(axe_script)
    results = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    blocking = [v for v in results["violations"] if v.get("impact") in BLOCKING_IMPACTS]
    report = [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in blocking
    ]
    assert not blocking, f"axe-core on {name}:\n{json.dumps(report, indent=1, ensure_ascii=False)}"


KEYBOARD_TARGETS = "button, input[type=submit], input[type=button], a.button, summary"


def check_keyboard(page: Any, name: str, *, limit: int = 400) -> int:
    """Tab from the top of the page reaches every visible button; returns how many there are."""
    count = page.evaluate(
        """(selector) => {
            let n = 0;
            for (const el of document.querySelectorAll(selector)) {
                const box = el.getBoundingClientRect();
                const hidden = box.width === 0 || box.height === 0 || el.closest('[hidden], details:not([open]) > :not(summary)');
                if (!hidden && !el.disabled) { el.dataset.kbd = String(n++); }
            }
            return n;
        }""",
        KEYBOARD_TARGETS,
    )
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.locator("body").focus()
    reached: set[str] = set()
    for _press in range(limit):
        page.keyboard.press("Tab")
        found = page.evaluate("() => document.activeElement ? document.activeElement.dataset.kbd || '' : ''")
        if found:
            reached.add(found)
        if len(reached) == count:
            break
    missing = page.evaluate(
        """([selector, reached]) => [...document.querySelectorAll('[data-kbd]')]
            .filter((el) => !reached.includes(el.dataset.kbd)).map((el) => el.outerHTML.slice(0, 160))""",
        [KEYBOARD_TARGETS, sorted(reached)],
    )
    assert not missing, f"on {name}, Tab never reaches: {missing}"
    return int(count)


def screenshot(page: Any, name: str, *, readme: bool = False, full_page: bool = True) -> Path:
    """Save the page as ``artifacts/screenshots/NAME.png``; README pages also to ``docs/screenshots``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if readme and os.environ.get(README_SHOTS_ENV):
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        optimize_png(path, README_SCREENSHOTS / f"{name}.png")
    return path


def optimize_png(source: Path, target: Path, *, colors: int = 128) -> None:
    """A small copy for the repository: at most 1280 px wide, a palette of ``colors`` colours."""
    from PIL import Image

    with Image.open(source) as image:
        picture = image.convert("RGB")
        if picture.width > VIEWPORT["width"]:
            height = round(picture.height * VIEWPORT["width"] / picture.width)
            picture = picture.resize((VIEWPORT["width"], height), Image.Resampling.LANCZOS)
        small = picture.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        small.save(target, optimize=True)


def check_list_fits(page: Any) -> None:
    """A change list's columns fit the window: the table is no wider than its container."""
    widths = page.evaluate(
        "() => [document.querySelector('#result_list').scrollWidth, document.querySelector('.results').clientWidth]"
    )
    assert widths[0] <= widths[1], f"the list is {widths[0]} px wide in {widths[1]} px"


def check_page(page: Any, name: str, *, readme: bool = False) -> None:
    """Everything a page of the app must pass: axe-core, keyboard, and a screenshot."""
    page.wait_for_load_state("load")
    screenshot(page, name, readme=readme)
    check_accessibility(page, name)
    check_keyboard(page, name)
