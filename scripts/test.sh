#!/usr/bin/env bash
# The FarmIQ Edge test suite against real services (Mosquitto, PostgreSQL, MLflow, Feast,
# Triton, Chromium). Installs what it needs, starts the local services when they are down.
set -euo pipefail
cd "$(dirname "$0")/.."
# chromium: dashboard test; systemd: systemd-analyze verify of the unit; gcc: MCU C reference.
# prometheus: promtool checks deploy/prometheus rules. rabbitmq-server: alerts (tests/alerts).
bash scripts/bootstrap.sh all chromium systemd gcc prometheus rabbitmq-server

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 1883 && command -v mosquitto >/dev/null 2>&1; then
  mosquitto -d -c /etc/mosquitto/mosquitto.conf 2>/dev/null || mosquitto -d -p 1883 || true
fi
if ! port_open 5432 && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
rabbitmq="$(command -v rabbitmq-server || echo /usr/sbin/rabbitmq-server)"
if ! port_open 5672 && [ -x "$rabbitmq" ]; then
  "$rabbitmq" -detached >/dev/null 2>&1 || true
  for _ in $(seq 300); do port_open 5672 && break; sleep 0.1; done  # it takes a few seconds
fi
for _ in $(seq 50); do port_open 1883 && break; sleep 0.1; done

export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 FEAST_USAGE=False
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
