#!/usr/bin/env bash
# Run the fault suites (SIGKILL of processes, a 3-broker cluster, OpenBao outage, error
# storms, a stalled worker) against real processes. Each scenario prints a `FAULT-COUNTS {...}` line.
# Extra arguments go to pytest, e.g. `scripts/faults.sh -s -k broker`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m pytest -m fault tests/faults "$@"
