#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's headless-browser test (tests/observe).
# Playwright drives this system executable; `playwright install` (which downloads its own
# browser build) is never used. Idempotent: does nothing when /usr/bin/chromium exists.
# Needs root (CI and the development machines run as root). When it cannot install, it
# says why and exits 1 under CI (CI set) and 0 otherwise; the dashboard test then fails
# under CI and skips with the reason elsewhere.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
give_up() {
  echo "install-browser: $1" >&2
  if [ -n "${CI:-}" ]; then exit 1; fi
  exit 0
}
if [ "$(id -u)" -ne 0 ]; then
  give_up "not root; install chromium yourself (apt-get install -y chromium)"
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }; then
  give_up "apt-get could not install chromium"
fi
/usr/bin/chromium --version
