#!/usr/bin/env bash
# Regenerate the README's screenshots (docs/screenshots/*.png): runs the admin's browser tests in
# Debian's Chromium (apt-get install chromium fonts-noto-cjk) and writes the pages the README shows,
# 1280 px wide with a reduced palette (Pillow). Every page also lands in artifacts/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]" "pillow>=10"
GMAIL_SMTP_README_SCREENSHOTS=1 exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_admin_browser.py "$@"
