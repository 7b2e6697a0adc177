#!/usr/bin/env bash
# The FarmIQ Edge demo: the whole system on this machine. Installs what it needs first.
# Pass --keep-running to leave the services up and print the operator API, its admin key and
# the MLflow URL; --workdir DIR, --embedded-broker and --insecure (auth off, warned) as `farmiq demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all
exec .venv/bin/farmiq demo "$@"
