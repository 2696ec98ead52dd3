#!/usr/bin/env bash
# Install, then run the whole system locally (real Kafka + OpenBao, ingress, router,
# workers, API emulators) with the demo. Extra arguments go to `switchyard run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/switchyard run "$@"
