#!/usr/bin/env bash
# Regenerate the README's screenshots (docs/screenshots/*.png): runs the admin's browser tests in
# Debian's Chromium (apt-get install chromium fonts-noto-cjk) through scripts/test.sh, with Pillow
# added to .venv, and writes the pages the README shows, 1280 px wide with a reduced palette.
# Every page also lands in artifacts/screenshots/. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export GMAIL_SMTP_README_SCREENSHOTS=1 EXTRA_PIP_ARGS="${EXTRA_PIP_ARGS:-} pillow>=10"
exec bash scripts/test.sh -q -p no:cacheprovider tests/test_admin_browser.py "$@"
