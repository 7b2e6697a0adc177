#!/usr/bin/env bash
# Set up everything FarmIQ Edge needs on a fresh Debian/Ubuntu machine with Python 3.11+:
# system packages (when root), a virtualenv in .venv, and the project with its extras.
# Idempotent and quick when nothing changed. Usage: scripts/bootstrap.sh [extras] [apt packages...]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"; shift || true

as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if as_root; then
    echo "bootstrap: installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "bootstrap: missing system packages ${missing[*]} (run as root or install them)" >&2
  fi
}

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' 2>/dev/null || {
  echo "bootstrap: Python 3.11+ is required (found: $("$PY" --version 2>&1))" >&2; exit 1; }
"$PY" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
[ $# -gt 0 ] && apt_install "$@"

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.farmiq-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing farmiq-edge[$extras] into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import farmiq, edge_agent, control_plane" || { echo "bootstrap: install failed" >&2; exit 1; }
  rm -f .venv/.farmiq-"$extras"-*
  touch "$stamp"
fi
