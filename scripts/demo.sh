#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: install, migrate,
# start the local Gmail sandbox, send a real message through our backend over
# TLS, and show that it arrived. `bash scripts/demo.sh --help` says more.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash scripts/demo.sh [--help]

Runs the django-gmail-smtp demo, from a fresh clone:
  1. creates the virtualenv .venv (if missing) and installs django-gmail-smtp with its
     sandbox extra into it, from the package index (pip);
  2. migrates the example project (SQLite, example_project/db.sqlite3);
  3. starts the local Gmail sandbox on 127.0.0.1, on free ports it picks itself;
  4. sends one real message through django_gmail_smtp.backend.EmailBackend over TLS
     and shows that it arrived (example_project/.sandbox/messages/);
  5. proves delivery with gmail_check --round-trip: a message to the sandbox account,
     found in its mailbox over IMAP, then deleted;
  6. stops the sandbox.
Apart from the installation, everything talks only to 127.0.0.1, and nothing outside
this clone changes. EMAIL_URL, GMAIL_SMTP_SSL_CAFILE and GMAIL_SMTP_IMAP_*/POP_* from the
environment or from example_project/.env are ignored: the demo always sends to the sandbox.

Environment variables (all optional):
  SANDBOX_STARTTLS_PORT  the sandbox's STARTTLS port (default: auto, a free port)
  SANDBOX_SSL_PORT       its implicit-TLS port (default: auto, a free port)
  PYTHON                 the Python 3.11+ that creates the virtualenv (default: python3)
  VENV                   the virtualenv's folder (default: .venv)

Example: SANDBOX_STARTTLS_PORT=3587 SANDBOX_SSL_PORT=3465 bash scripts/demo.sh
EOF
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    "") ;;
    *)
        echo "demo.sh: unknown argument '$1': it takes none (see bash scripts/demo.sh --help)." >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STARTTLS_PORT=${SANDBOX_STARTTLS_PORT:-auto}
SSL_PORT=${SANDBOX_SSL_PORT:-auto}
case $VENV in
    /*) PY="$VENV/bin/python" HINT_PY="$VENV/bin/python" ;;
    *) PY="$ROOT/$VENV/bin/python" HINT_PY="../$VENV/bin/python" ;;
esac

if [ ! -x "$PY" ]; then
    echo "==> Creating the virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
echo "==> Installing django-gmail-smtp with the sandbox extra (from the package index)"
"$PY" -m pip install -q --disable-pip-version-check -e ".[sandbox]"

cd example_project
export SANDBOX_DIR="$PWD/.sandbox"
# The example project reads the sandbox's ready file (ports, CA) unless EMAIL_URL is set:
# empty values make sure it does, whatever the environment or example_project/.env say.
export EMAIL_URL="" GMAIL_SMTP_SSL_CAFILE="" GMAIL_SMTP_IMAP_HOST="" GMAIL_SMTP_IMAP_PORT=""
export GMAIL_SMTP_POP_HOST="" GMAIL_SMTP_POP_PORT=""
READY="$SANDBOX_DIR/ready.json"
mkdir -p "$SANDBOX_DIR"
rm -f "$READY"

echo "==> Migrating the example project (SQLite)"
"$PY" manage.py migrate --noinput -v 0

echo "==> Starting the Gmail sandbox on 127.0.0.1 (STARTTLS port: $STARTTLS_PORT, implicit TLS port: $SSL_PORT; IMAP and POP3: auto)"
"$PY" manage.py gmail_sandbox --dir "$SANDBOX_DIR" --starttls-port "$STARTTLS_PORT" --ssl-port "$SSL_PORT" \
    --imap-port auto --pop-port auto --no-oauth --max-seconds 120 >"$SANDBOX_DIR/sandbox.log" 2>&1 &
SANDBOX_PID=$!
trap 'kill "$SANDBOX_PID" 2>/dev/null || true; wait "$SANDBOX_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    [ -f "$READY" ] && break
    if ! kill -0 "$SANDBOX_PID" 2>/dev/null; then
        cat "$SANDBOX_DIR/sandbox.log" >&2
        echo "The sandbox did not start (see above; bash scripts/demo.sh --help lists the port variables)." >&2
        exit 1
    fi
    sleep 0.1
done
[ -f "$READY" ] || { cat "$SANDBOX_DIR/sandbox.log" >&2; echo "The sandbox did not start within 30 s." >&2; exit 1; }
read -r STARTTLS_PORT SSL_PORT < <("$PY" -c 'import json, sys; p = json.load(open(sys.argv[1]))["ports"]; print(p["starttls"], p["ssl"])' "$READY")
echo "    listening: STARTTLS 127.0.0.1:$STARTTLS_PORT, implicit TLS 127.0.0.1:$SSL_PORT (ports and CA in example_project/.sandbox/ready.json)"

echo "==> manage.py check"
"$PY" manage.py check

echo "==> Sending a message through django_gmail_smtp.backend.EmailBackend"
"$PY" manage.py send_demo --to you@example.com

echo "==> Proving delivery: gmail_check --round-trip (sends to the sandbox account, finds it over IMAP)"
"$PY" manage.py gmail_check --round-trip --round-trip-timeout 20 -v 0
echo "The round-trip message arrived in the sandbox account's inbox and was deleted."

cat <<EOF

Done. Next, by hand, in two terminals (from example_project/):
  $HINT_PY manage.py gmail_sandbox --starttls-port $STARTTLS_PORT --ssl-port $SSL_PORT
      runs the sandbox in the foreground (any port works, or auto: the project finds it);
  $HINT_PY manage.py send_demo
  $HINT_PY manage.py gmail_check --send-to you@example.com
  $HINT_PY manage.py gmail_check --round-trip
      send again through it (the ports come from .sandbox/ready.json), test step by step,
      and prove delivery to the sandbox account's mailbox over IMAP.
README.md says how to send through real Gmail.
EOF
