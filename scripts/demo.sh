#!/usr/bin/env bash
# The FarmIQ Edge demo: the whole system on this machine. Installs what it needs first.
# Pass --keep-running to leave the services up and print the operator API and MLflow URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all
exec .venv/bin/farmiq demo "$@"
