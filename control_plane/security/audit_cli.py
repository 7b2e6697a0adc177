"""``farmiq audit``: query the control plane's append-only audit log by target and time.

Reads the database named by the control-plane TOML (``-c``) or ``--db``, the same way
``farmiq provision api-key`` does, so it works on the control-plane host with the API down.
The API answers the same question at ``GET /api/v1/audit`` (admin key).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "audit",
        help="who changed what, when: query the control plane's audit log",
        description=__doc__,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", type=Path, help="control-plane TOML (its database)")
    where.add_argument("--db", help="control-plane database URL (instead of --config)")
    p.add_argument("--target", help="exact target, e.g. a device id, rollout id or API path")
    p.add_argument("--actor", help="e.g. apikey:alice, local, system:rollout")
    p.add_argument("--action", help="e.g. rollout.pause, device.revoke, http.post")
    p.add_argument("--since", type=_time, help="ISO 8601 time (UTC when no zone)")
    p.add_argument("--until", type=_time, help="ISO 8601 time (UTC when no zone)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_run)


def _time(value: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _run(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from control_plane.security.audit_log import query_audit
    from control_plane.settings import database_url_for_cli

    url = database_url_for_cli(args.db, args.config, "farmiq audit")
    if url is None:
        return 2
    engine = sa.create_engine(url)
    try:
        entries = query_audit(
            engine, actor=args.actor, action=args.action, target=args.target,
            since=args.since, until=args.until, limit=args.limit,
        )  # fmt: skip
    except sa.exc.SQLAlchemyError as exc:
        print(f"farmiq audit: cannot read the audit log: {exc.__class__.__name__}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    for e in reversed(entries):  # oldest first, like a log
        if args.json:
            print(json.dumps(e.to_dict(), sort_keys=True))
            continue
        change = ""
        if "before" in e.detail or "after" in e.detail:
            change = f"  {e.detail.get('before')} -> {e.detail.get('after')}"
        print(f"{e.at.isoformat()}  {e.actor:24} {e.action:22} {e.target}{change}")
    return 0
