#!/usr/bin/env bash
# Create .venv and install Switchyard with its dev tools, at the versions pinned in
# constraints.txt (the tested set). Idempotent: reinstalls only when pyproject.toml or
# constraints.txt changed. Java 17+ and Maven (for the local Kafka) are checked, and
# installed with apt-get when missing and running as root (scripts/install-java.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "switchyard: Python 3.11+ is required (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
# A venv whose creation failed half-way (Debian without python3-venv leaves a python but
# no pip) is made again rather than failing every later run.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  if ! "$PYTHON" -m venv .venv; then
    rm -rf .venv
    echo "switchyard: creating a virtual environment failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
stamp=".venv/.switchyard-installed"
want="$(cat pyproject.toml constraints.txt | .venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q -c constraints.txt --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi
bash scripts/install-java.sh
