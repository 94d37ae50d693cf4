#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: install, migrate,
# start the local Gmail sandbox, send a real message through our backend over
# TLS, and show that it arrived. Needs Python 3.11+ (python3, or set PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> Creating the virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
echo "==> Installing django-gmail-smtp with the sandbox extra"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[sandbox]"
PY="$ROOT/$VENV/bin/python"

cd example_project
export SANDBOX_DIR="$PWD/.sandbox"
mkdir -p "$SANDBOX_DIR"
rm -f "$SANDBOX_DIR/ready.json"

echo "==> Migrating the example project (SQLite)"
"$PY" manage.py migrate --noinput -v 0

echo "==> Starting the Gmail sandbox on 127.0.0.1 (STARTTLS 2587, implicit TLS 2465, IMAP 2993, POP3 2995)"
"$PY" manage.py gmail_sandbox --dir "$SANDBOX_DIR" --ready-file "$SANDBOX_DIR/ready.json" --max-seconds 120 --no-oauth \
    > "$SANDBOX_DIR/sandbox.log" 2>&1 &
SANDBOX_PID=$!
trap 'kill "$SANDBOX_PID" 2>/dev/null || true; wait "$SANDBOX_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    [ -f "$SANDBOX_DIR/ready.json" ] && break
    if ! kill -0 "$SANDBOX_PID" 2>/dev/null; then
        cat "$SANDBOX_DIR/sandbox.log" >&2
        exit 1
    fi
    sleep 0.1
done
[ -f "$SANDBOX_DIR/ready.json" ] || { cat "$SANDBOX_DIR/sandbox.log" >&2; echo "The sandbox did not start." >&2; exit 1; }

echo "==> manage.py check"
"$PY" manage.py check

echo "==> Sending a message through django_gmail_smtp.backend.EmailBackend"
"$PY" manage.py send_demo --to you@example.com

echo "==> Proving delivery: gmail_check --round-trip (sends to the sandbox account, finds it over IMAP)"
"$PY" manage.py gmail_check --round-trip --round-trip-timeout 20 -v 0
echo "The round-trip message arrived in the inbox and was deleted."

echo
echo "Done. Next: 'cd example_project && ../$VENV/bin/python manage.py gmail_sandbox' runs the sandbox"
echo "in the foreground; see README.md for real Gmail."
