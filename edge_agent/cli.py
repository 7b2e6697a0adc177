"""``farmiq agent run|check-config``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="the gateway agent daemon (systemd: farmiq-agent.service)")
    asub = p.add_subparsers(dest="agent_cmd", metavar="ACTION")
    r = asub.add_parser(
        "run",
        help="run the agent: local inference API, bundle installs over MQTT, offline-safe",
    )
    r.add_argument("-c", "--config", type=Path, help="agent TOML (default /etc/farmiq/agent.toml)")
    r.set_defaults(func=_run)
    c = asub.add_parser("check-config", help="validate an agent config and print it")
    c.add_argument("-c", "--config", type=Path, required=True)
    c.set_defaults(func=_check)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from edge_agent.config import DEFAULT_PATH, load_agent_config

    path = args.config or (DEFAULT_PATH if DEFAULT_PATH.exists() else None)
    return load_agent_config(path)


def _run(args: argparse.Namespace) -> int:
    from farmiq.config import ConfigError

    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(f"farmiq agent: {exc}", file=sys.stderr)
        return 2
    from edge_agent.daemon.preflight import SETUP_EXIT_CODE, setup_problems
    from farmiq.bundle import signature_process

    # The daemon checks signatures in a child process: cryptography and python-tuf never
    # stay resident in it (farmiq/bundle/signature_process.py).
    signature_process.isolate()
    problems = setup_problems(cfg)
    for line in problems:
        print(f"farmiq agent: {line}", file=sys.stderr)
    if problems:
        return SETUP_EXIT_CODE
    from edge_agent.agent import StartError, run
    from edge_agent.config import DEFAULT_PATH
    from farmiq.logging_setup import capture_native_stderr, capture_std_streams

    # JSON logs: every line the daemon writes is JSON, native libraries' too
    capture_std_streams()
    capture_native_stderr()

    path = args.config or (DEFAULT_PATH if DEFAULT_PATH.exists() else None)
    try:
        run(cfg, config_path=str(path) if path else None)  # SIGHUP re-reads this file
    except StartError as exc:  # e.g. the API port is taken: may pass, so systemd retries
        print(f"farmiq agent: {exc}", file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    from farmiq.config import ConfigError

    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(f"farmiq agent: {exc}", file=sys.stderr)
        return 2
    from edge_agent.daemon.preflight import SETUP_EXIT_CODE, setup_problems
    from farmiq.bundle import signature_process

    # the trust root checked as the daemon checks it (in a child process), so a set-up
    # that passes here also starts
    signature_process.isolate()
    problems = setup_problems(cfg)
    for line in problems:
        print(f"farmiq agent: {line}", file=sys.stderr)
    if problems:
        return SETUP_EXIT_CODE
    print(cfg.model_dump_json(indent=2))
    return 0
