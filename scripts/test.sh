#!/usr/bin/env bash
# The FarmIQ Edge test suite against real services (Mosquitto, PostgreSQL, MLflow, Feast,
# Triton, Chromium). Installs what it needs, starts the local services when they are down.
set -euo pipefail
cd "$(dirname "$0")/.."
# chromium: dashboard test; systemd: systemd-analyze verify of the unit; gcc, make: MCU C reference;
# qemu-system-arm, gcc-arm-none-eabi, libnewlib-arm-none-eabi: the firmware on an emulated Cortex-M3;
# postgresql + rabbitmq-server: the control plane's database and alerts (tests/acceptance);
# redis-server: the Feast Redis online store test; prometheus: promtool checks deploy/prometheus.
bash scripts/bootstrap.sh all chromium systemd gcc make qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi postgresql rabbitmq-server redis-server prometheus

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
if ! port_open 6379 && command -v redis-server >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
fi
for _ in $(seq 50); do port_open 1883 && break; sleep 0.1; done

export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 FEAST_USAGE=False
# Two workers, one test file each at a time (module fixtures stay in one process): most
# tests wait on real servers and agents, so the 2-core machine runs the suite in about
# 13 minutes instead of 21. Arguments after the command override (`-n 0`: one process).
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"
