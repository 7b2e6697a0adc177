"""The agent as a systemd service: signals, readiness, watchdog, reload, graceful stop."""
