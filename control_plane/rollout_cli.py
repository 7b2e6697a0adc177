"""``farmiq rollout create|get|list|pause|resume|abort|rollback|watch`` against the
control-plane API (``--url``, or ``FARMIQ_URL``; ``--api-key`` or ``FARMIQ_API_KEY``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

TERMINAL = ("succeeded", "failed", "aborted", "rolled_back")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "rollout", help="staged fleet rollouts (create, watch, pause, roll back)"
    )
    p.add_argument(
        "--url",
        default=os.environ.get("FARMIQ_URL", "http://127.0.0.1:8080"),
        help="control-plane URL (default $FARMIQ_URL or http://127.0.0.1:8080)",
    )
    p.add_argument("--api-key", default=os.environ.get("FARMIQ_API_KEY"), help="operator API key")
    sub = p.add_subparsers(dest="rollout_cmd", required=True)
    c = sub.add_parser("create", help="create and start a rollout")
    c.add_argument("model")
    c.add_argument("--version", type=int, help="registry version (default: production alias)")
    c.add_argument(
        "--waves",
        default="1,10,50,100",
        help="cumulative percentages, e.g. 1,10,50,100; prefix s for a shadow wave: s5,5,50,100",
    )
    c.add_argument(
        "--tag", action="append", default=[], help="target devices with this tag (repeatable)"
    )
    c.add_argument(
        "--farm", action="append", default=[], help="target devices of this farm (repeatable)"
    )
    c.add_argument("--device", action="append", default=[], help="target this device (repeatable)")
    c.add_argument("--hardware", action="append", default=[], help="target this hardware class")
    c.add_argument(
        "--percent", type=float, default=100.0, help="stable share of the matching devices"
    )
    c.add_argument("--rate", type=int, default=120, help="devices started per minute")
    c.add_argument("--max-concurrent", type=int, default=50, help="devices installing at once")
    c.add_argument("--soak", type=float, default=300.0, help="minimum soak per wave, seconds")
    c.add_argument(
        "--wave-timeout", type=float, default=1800.0, help="stop waiting for silent devices"
    )
    c.add_argument("--min-install-success", type=float, default=0.95)
    c.add_argument("--max-error-rate", type=float, default=0.05)
    c.add_argument("--max-p99-ms", type=float, default=None)
    c.add_argument("--min-shadow-agreement", type=float, default=0.9)
    c.add_argument(
        "--min-shadow-rows",
        type=int,
        default=0,
        help="live requests a shadow wave must compare before its gate is judged "
        "(it keeps soaking until then, up to --wave-timeout)",
    )
    c.add_argument("--on-gate-failure", choices=("pause", "abort"), default="pause")
    c.add_argument("--watch", action="store_true", help="follow progress until the rollout ends")
    c.set_defaults(func=_create)
    g = sub.add_parser("get", help="show one rollout as JSON")
    g.add_argument("rollout_id")
    g.set_defaults(func=lambda a: _print(_req(a, "GET", f"/api/v1/rollouts/{a.rollout_id}")))
    ls = sub.add_parser("list", help="list rollouts")
    ls.add_argument("--status", help="only this state")
    ls.set_defaults(func=_list)
    for action, helptext in (
        ("pause", "stop starting devices"),
        ("resume", "continue (reruns a failed wave)"),
        ("abort", "stop and roll the current wave back"),
        ("rollback", "roll every device of the rollout back"),
    ):
        a = sub.add_parser(action, help=helptext)
        a.add_argument("rollout_id")
        a.set_defaults(
            func=lambda ns, act=action: _print(
                _req(ns, "POST", f"/api/v1/rollouts/{ns.rollout_id}/{act}")
            )
        )
    w = sub.add_parser("watch", help="live progress view until the rollout ends")
    w.add_argument("rollout_id")
    w.add_argument("--interval", type=float, default=1.0)
    w.set_defaults(func=_watch)


def _req(args: argparse.Namespace, method: str, path: str, body: Any = None) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    url = args.url.rstrip("/") + path
    try:
        r = httpx.request(method, url, json=body, headers=headers, timeout=60)
    except (httpx.TransportError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        reason = str(exc) or type(exc).__name__
        sys.stderr.write(
            f"farmiq rollout: cannot reach the control plane at {args.url}: {reason}\n"
        )
        raise SystemExit(1) from None
    if r.status_code >= 400:
        sys.stderr.write(f"error {r.status_code}: {r.text}\n")
        raise SystemExit(1)
    return r.json()  # type: ignore[no-any-return]


def _print(doc: Any) -> int:
    print(json.dumps(doc, indent=2))
    return 0


def parse_waves(text: str) -> list[dict[str, Any]]:
    out = []
    for part in text.split(","):
        part = part.strip()
        mode = "shadow" if part.startswith("s") else "install"
        out.append({"percent": float(part.lstrip("s")), "mode": mode})
    return out


def _create(args: argparse.Namespace) -> int:
    body = {
        "model": args.model,
        "version": args.version,
        "waves": parse_waves(args.waves),
        "targeting": {
            "tags": args.tag,
            "farms": args.farm,
            "devices": args.device,
            "hardware": args.hardware,
            "percent": args.percent,
        },
        "gates": {
            "min_install_success": args.min_install_success,
            "max_error_rate": args.max_error_rate,
            "max_p99_ms": args.max_p99_ms,
            "min_shadow_agreement": args.min_shadow_agreement,
            "min_shadow_rows": args.min_shadow_rows,
        },
        "rate_per_minute": args.rate,
        "max_concurrent": args.max_concurrent,
        "soak_s": args.soak,
        "wave_timeout_s": args.wave_timeout,
        "on_gate_failure": args.on_gate_failure,
    }
    doc = _req(args, "POST", "/api/v1/rollouts", body)
    if args.watch:
        args.rollout_id, args.interval = doc["id"], 1.0
        return _watch(args)
    return _print(doc)


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    path = "/api/v1/rollouts" + (f"?status={args.status}" if args.status else "")
    t = Table("id", "model", "version", "status", "wave", "reason")
    for r in _req(args, "GET", path)["rollouts"]:
        t.add_row(
            r["id"],
            r["model"],
            str(r["version"]),
            r["status"],
            str(r["current_wave"]),
            r["reason"] or "",
        )
    Console().print(t)
    return 0


def render(doc: dict[str, Any]) -> Any:
    """The live view: one row per wave with a progress bar of installed devices."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    head = Text(
        f"rollout {doc['id']}  {doc['model']} v{doc['version']}  [{doc['status']}]", style="bold"
    )
    t = Table(
        "wave", "share", "mode", "state", "progress", "installed", "failed", "in flight", "gate"
    )
    for w in doc["waves"]:
        d = w["devices"]
        n = sum(d.values())
        done = d.get("installed", 0)
        gate = w.get("gate") or {}
        gate_txt = "" if not gate else ("pass" if gate.get("passed") else "FAIL")
        t.add_row(
            str(w["index"]),
            f"{w['percent']:g}%",
            w["mode"],
            w["status"],
            ProgressBar(total=max(n, 1), completed=done, width=24),
            f"{done}/{n}",
            str(d.get("failed", 0)),
            str(d.get("sent", 0)),
            gate_txt,
        )
    parts: list[Any] = [head, t]
    if doc.get("reason"):
        parts.append(Text(doc["reason"], style="red"))
    return Group(*parts)


def _watch(args: argparse.Namespace) -> int:
    from rich.live import Live

    doc = _req(args, "GET", f"/api/v1/rollouts/{args.rollout_id}")
    with Live(render(doc), refresh_per_second=4) as live:
        while doc["status"] not in TERMINAL and doc["status"] != "paused":
            time.sleep(args.interval)
            doc = _req(args, "GET", f"/api/v1/rollouts/{args.rollout_id}")
            live.update(render(doc))
    return 0 if doc["status"] == "succeeded" else 1
