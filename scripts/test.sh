#!/usr/bin/env bash
# The test suite, from a fresh clone: creates .venv, installs the package with
# its dev extra, runs pytest against real loopback servers. Extra arguments go
# to pytest. Needs Python 3.11+ (python3, or set PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]" ${EXTRA_PIP_ARGS:-}
exec "$VENV/bin/python" -m pytest "$@"
