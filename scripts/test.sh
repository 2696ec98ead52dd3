#!/usr/bin/env bash
# Install, then run the default test suite against a real Kafka broker and a real OpenBao
# server that the test session starts itself (see tests/conftest.py).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m fault` for the fault suites.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# helm and promtool (for the chart and alert tests) are built from their Go modules once and
# cached. Without Go (and nothing cached) those tests would only be skipped, and a green run
# would hide that the chart was never checked: it fails instead.
if command -v go >/dev/null; then
  bash scripts/install-go-tool.sh helm >/dev/null
  bash scripts/install-go-tool.sh promtool >/dev/null
else
  tools="${SWITCHYARD_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/bin}"
  if [ ! -x "$tools/helm" ] || [ ! -x "$tools/promtool" ]; then
    echo "test.sh: Go is needed once to build helm and promtool for the chart and alert tests (install Go 1.24+)" >&2
    exit 1
  fi
fi
# Debian's chromium for the dashboard test (Playwright drives the system browser).
bash scripts/install-browser.sh
# The official MCP TypeScript SDKs (tests/ingress/test_mcp_typescript.py), pinned by their
# lock file; installed again only when the lock file changed.
ts=tests/ingress/mcp_ts
if command -v npm >/dev/null; then
  if ! cmp -s "$ts/package-lock.json" "$ts/node_modules/.installed-lock.json"; then
    npm ci --prefix "$ts" --no-audit --no-fund --loglevel=error
    cp "$ts/package-lock.json" "$ts/node_modules/.installed-lock.json"
  fi
else
  echo "test.sh: npm not found; the MCP TypeScript SDK tests will fail (install Node.js 18+)" >&2
fi
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
