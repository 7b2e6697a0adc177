"""``farmiq control-plane serve|migrate|export-triton|...`` (``farmiq demo`` lives in farmiq_sim).

The cloud side's commands live here (and in the control plane's other ``*_cli`` modules), so
the shared ``farmiq`` package and the gateway side never import ``control_plane``. Two
commands keep the names users know from before the split: ``farmiq bundle export-triton``
(an alias of ``farmiq control-plane export-triton``) and the cloud actions of
``farmiq provision`` (``control_plane/provision_cli.py``); both are registered only when
the control plane is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

# What the control plane cannot run without: a gateway's wheel carries this package too, but
# without the `control` extra these are absent and the cloud commands are not offered.
REQUIRED_MODULES = ("fastapi", "sqlalchemy", "alembic")


def control_plane_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in REQUIRED_MODULES)


def register(sub: argparse._SubParsersAction) -> None:
    if not control_plane_installed():
        return
    p = sub.add_parser(
        "control-plane", help="the cloud control plane (operator API, registry, rollouts)"
    )
    csub = p.add_subparsers(dest="cp_cmd", metavar="ACTION")
    s = csub.add_parser("serve", help="serve the operator API (FastAPI on uvicorn)")
    s.add_argument("-c", "--config", type=Path, help="control-plane TOML")
    s.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default from config: 8080)")
    s.add_argument(
        "--insecure",
        action="store_true",
        help="turn operator-API authentication OFF (development only; warned at every start)",
    )
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
    add_export_triton(csub)
    bundle_actions = subcommands_of(sub, "bundle")
    if bundle_actions is not None:  # `farmiq bundle export-triton`, the name README gives
        add_export_triton(bundle_actions)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def subcommands_of(
    sub: argparse._SubParsersAction, command: str
) -> argparse._SubParsersAction | None:
    """The ACTION subparsers of an already registered ``farmiq COMMAND``, if there is one."""
    parser = sub.choices.get(command)
    if parser is None:
        return None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def add_export_triton(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "export-triton",
        help="write a Triton model repository entry for an ONNX bundle (config.pbtxt + model)",
        description="Writes REPO/<name>/config.pbtxt (dynamic batching, warm-up, instance groups) and "
        "REPO/<name>/<version>/model.onnx. The default variant is Triton's ONNX Runtime platform on GPU "
        "instances (TensorRT FP16 when the bundle allows it); --variant python runs the same model with "
        "onnxruntime in Triton's python backend, for the CPU-only tritonserver of the nvidia-pytriton wheel.",
    )
    t.add_argument(
        "bundle", type=Path, help="bundle file (.fqb); verify it first if it came from elsewhere"
    )
    t.add_argument(
        "-o", "--repository", type=Path, required=True, help="Triton model repository directory"
    )
    t.add_argument("--variant", default="onnxruntime_onnx", choices=["onnxruntime_onnx", "python"])
    t.add_argument(
        "--instances", type=int, default=1, help="model instances per device (default 1)"
    )
    t.add_argument(
        "--kind",
        choices=["KIND_GPU", "KIND_CPU"],
        help="instance kind (default: GPU for onnxruntime_onnx)",
    )
    t.set_defaults(func=_export_triton)


def _export_triton(args: argparse.Namespace) -> int:
    from control_plane.triton.export import export_bundle

    try:
        path = export_bundle(
            args.bundle.read_bytes(), args.repository, variant=args.variant,
            instance_count=args.instances, kind=args.kind,
        )  # fmt: skip
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot export {args.bundle}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({args.variant})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from control_plane.settings import load_settings
    from farmiq.config import ConfigError

    overrides: dict[str, object] = {
        k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None
    }
    if args.insecure:
        overrides["auth_enabled"] = False
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"farmiq control-plane: {exc}", file=sys.stderr)
        return 2
    if not settings.auth_enabled:  # through logging: a JSON line when the logs are JSON
        logging.getLogger("control_plane").warning(
            "WARNING: operator API authentication is OFF (--insecure / auth_enabled = false): "
            "anyone who reaches %s:%s can change the fleet",
            settings.host,
            settings.port,
        )
    import uvicorn

    from control_plane.app import create_app
    from farmiq.logging_setup import capture_native_stderr, capture_std_streams

    capture_std_streams()  # JSON logs: every line the daemon writes is JSON
    capture_native_stderr()  # and what native libraries write to fd 2
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
