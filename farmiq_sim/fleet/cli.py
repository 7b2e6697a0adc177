"""``farmiq fleet simulate``: N simulated gateways speaking the real agent protocol."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("fleet", help="fleet tools (simulator)")
    sub = p.add_subparsers(dest="fleet_cmd", required=True)
    s = sub.add_parser(
        "simulate",
        help="run N simulated gateways in one process against a real broker",
        description="Each simulated gateway holds its own MQTT session, reports state and "
        "health, follows its retained desired state, fetches bundles in hashed chunks and "
        "verifies them with the real verifier. Runs until interrupted (or --duration).",
    )
    s.add_argument("--gateways", type=int, default=100, help="number of gateways (default 100)")
    s.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    s.add_argument(
        "--trust-root", type=Path, required=True, help="trust root JSON the gateways verify against"
    )
    s.add_argument("--model", default="barn-ventilation", help="model the gateways start with")
    s.add_argument(
        "--initial-version", type=int, default=1, help="version installed at start (0: none)"
    )
    s.add_argument("--prefix", default="sim", help="device id prefix (ids are PREFIX-00000...)")
    s.add_argument(
        "--fail-rate", type=float, default=0.0, help="share of gateways whose installs fail"
    )
    s.add_argument(
        "--error-rate", type=float, default=0.0, help="inference error rate failing gateways report"
    )
    s.add_argument("--slow-link", type=float, default=0.0, help="share of gateways on a slow link")
    s.add_argument(
        "--slow-bps", type=float, default=256 * 1024, help="bandwidth of a slow link, bytes/s"
    )
    s.add_argument(
        "--slow-budget",
        type=int,
        default=0,
        help="byte budget of a slow (metered) link per --budget-period-s (0: none)",
    )
    s.add_argument(
        "--budget-period-s", type=float, default=3600.0, help="period of the byte budget"
    )
    s.add_argument(
        "--offline-rate",
        type=float,
        default=0.0,
        help="share of gateways that go offline for a while",
    )
    s.add_argument("--offline-s", type=float, default=10.0, help="how long an offline period lasts")
    s.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (0: run until Ctrl-C)",
    )
    s.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from farmiq.bundle.trust import TrustRoot
    from farmiq_sim.fleet.fleet import Fleet, FleetConfig

    host, _, port_text = args.broker.rpartition(":")
    host = host or "127.0.0.1"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return _fail(f"--broker {args.broker!r}: expected host:port, e.g. 127.0.0.1:1883")
    port = int(port_text)
    try:  # one clear line now rather than gateways retrying forever against nothing
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return _fail(f"no MQTT broker at {host}:{port} ({exc.strerror or exc})")
    try:
        trust = TrustRoot.load(args.trust_root)
    except (OSError, ValueError) as exc:
        return _fail(f"--trust-root {args.trust_root}: {exc}")
    cfg = FleetConfig(
        gateways=args.gateways,
        host=host,
        port=port,
        model=args.model,
        initial_version=args.initial_version or None,
        prefix=args.prefix,
        fail_rate=args.fail_rate,
        error_rate=args.error_rate,
        slow_link=args.slow_link,
        slow_bps=args.slow_bps,
        slow_budget=args.slow_budget or None,
        budget_period_s=args.budget_period_s,
        offline_rate=args.offline_rate,
        offline_s=args.offline_s,
    )

    async def main() -> int:
        fleet = Fleet(cfg, trust)
        await fleet.start()
        if fleet.online() == 0 and cfg.gateways > 0:
            await fleet.stop()
            return _fail(f"no simulated gateway could connect to the broker at {host}:{port}")
        print(f"{fleet.online()}/{cfg.gateways} simulated gateways online", flush=True)
        churn = asyncio.ensure_future(fleet.offline_churn(args.duration or 300))
        t0 = time.time()
        try:
            while not args.duration or time.time() - t0 < args.duration:
                await asyncio.sleep(2)
                vs = ", ".join(
                    f"v{k}: {v}"
                    for k, v in sorted(fleet.versions().items(), key=lambda kv: kv[0] or 0)
                )
                print(f"[{time.time() - t0:6.1f}s] online {fleet.online()}  {vs}", flush=True)
        finally:
            churn.cancel()
            await fleet.stop()
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0


def _fail(message: str) -> int:
    print(f"farmiq fleet simulate: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="farmiq")
    register(parser.add_subparsers(dest="cmd", required=True))
    a = parser.parse_args()
    sys.exit(a.func(a))
