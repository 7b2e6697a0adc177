"""``farmiq control-plane serve`` and ``farmiq demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "control-plane", help="the cloud control plane (operator API, registry, rollouts)"
    )
    csub = p.add_subparsers(dest="cp_cmd", metavar="ACTION")
    s = csub.add_parser("serve", help="serve the operator API (FastAPI on uvicorn)")
    s.add_argument("-c", "--config", type=Path, help="control-plane TOML")
    s.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default from config: 8080)")
    s.set_defaults(func=_serve)
    m = csub.add_parser(
        "migrate",
        help="apply the database migrations (Alembic) up to the newest, or to --revision",
        description="Bring the control-plane database schema to the newest Alembic revision "
        "(PostgreSQL under an advisory lock; the embedded SQLite default works too).",
    )
    m.add_argument("-c", "--config", type=Path, help="control-plane TOML (its database_url)")
    m.add_argument(
        "--database-url", help="override the database URL, e.g. postgresql+psycopg2://u@host/db"
    )
    m.add_argument("--revision", default="head", help="target revision (default: head)")
    m.add_argument("--show", action="store_true", help="print current and newest revision only")
    m.set_defaults(func=_migrate)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    d = sub.add_parser(
        "demo",
        help="run the whole system on this machine: train, register, promote, sign, roll out, infer",
    )
    d.add_argument(
        "--workdir", type=Path, default=Path(".farmiq/demo"), help="where the demo keeps its state"
    )
    d.add_argument(
        "--keep-running", action="store_true", help="keep the services up and print their URLs"
    )
    d.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use the embedded amqtt broker even when Mosquitto is available",
    )
    d.set_defaults(func=_demo)


def _serve(args: argparse.Namespace) -> int:
    from control_plane.settings import load_settings
    from farmiq.config import ConfigError

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"farmiq control-plane: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from control_plane.app import create_app
    from farmiq.logging_setup import capture_std_streams

    capture_std_streams()  # JSON logs: every line the daemon writes is JSON
    # log_config=None: uvicorn's records go to the root handler (JSON), not its own.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from control_plane.settings import load_settings
    from farmiq.config import ConfigError

    overrides = {"database_url": args.database_url} if args.database_url else {}
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"farmiq control-plane: {exc}", file=sys.stderr)
        return 2
    from control_plane.db import Database
    from control_plane.schema import current_revision, head_revision, upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    try:
        if args.show:
            print(f"current: {current_revision(db.engine) or '(none)'}  newest: {head_revision()}")
            return 0
        rev = upgrade(db, args.revision)
    except Exception as exc:  # a clear message, not a traceback, for a bad URL or DB down
        print(f"farmiq control-plane migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.engine.dispose()
    print(f"database at revision {rev}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from control_plane.demo import run_demo

    return run_demo(
        args.workdir, keep_running=args.keep_running, embedded_broker=args.embedded_broker
    )
