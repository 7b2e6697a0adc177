"""The cloud actions of ``farmiq provision``: fleet trust roots, enrollment tokens,
revocation, the device registry, broker config and operator API keys.

``provisioning/cli.py`` registers ``farmiq provision`` with its gateway action (``enroll``);
this module adds the cloud actions to it, so only an install with the control plane has
them and the gateway side never imports ``control_plane``. Imports stay inside the handlers
so ``farmiq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from control_plane.cli import control_plane_installed, subcommands_of


def _state_db(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    from provisioning.fleet import FleetPaths

    return f"sqlite:///{FleetPaths(Path(args.dir)).state_db}"


def _service(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from provisioning.device_registry import DeviceRegistry
    from provisioning.enrollment import BrokerEndpoint, EnrollmentService, reload_command

    reload = reload_command(args.reload_cmd.split()) if getattr(args, "reload_cmd", None) else None
    return EnrollmentService(
        Path(args.dir),
        DeviceRegistry(sa.create_engine(_state_db(args))),
        broker=BrokerEndpoint(
            getattr(args, "broker_host", "127.0.0.1"), getattr(args, "broker_port", 8883)
        ),
        acl_path=Path(args.acl) if getattr(args, "acl", None) else None,
        reload_broker=reload,
    )


def _init_fleet(args: argparse.Namespace) -> int:
    from provisioning.fleet import init_fleet

    paths = init_fleet(
        Path(args.dir),
        root_threshold=args.root_threshold,
        root_keys=args.root_keys,
        targets_threshold=args.targets_threshold,
        targets_keys=args.targets_keys,
        broker_hosts=tuple(args.broker_host),
        fleet_name=args.name,
    )
    from provisioning.fleet import issue_control_plane_replica

    # One broker identity per control-plane replica: the broker binds client ids to
    # identities, so replicas sharing one certificate would take over each other's session.
    replicas = [issue_control_plane_replica(paths, n) for n in range(1, args.replicas + 1)]
    print(f"fleet created in {paths.root}")
    for n, (cert, _) in enumerate(replicas, start=1):
        print(f"  control-plane replica {n} broker identity: {cert}")
    print(f"  device trust root: {paths.root_json}")
    print(f"  device CA:         {paths.ca_cert}")
    print(f"  move {paths.offline}/ to offline media: root keys sign only root rotations")
    return 0


def _token(args: argparse.Namespace) -> int:
    token = _service(args).issue_token(
        args.device_id, hardware_class=args.hardware_class, ttl_s=args.ttl
    )
    print(token)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    try:
        _service(args).revoke(args.device_id, args.reason)
    except KeyError as exc:
        print(f"cannot revoke: {exc}", file=sys.stderr)
        return 1
    print(f"revoked {args.device_id}")
    return 0


def _devices(args: argparse.Namespace) -> int:
    for d in _service(args).registry.devices():
        state = "active" if d.active else f"revoked {d.revoked_at:%Y-%m-%d}"
        print(f"{d.device_id}\t{d.hardware_class}\t{state}")
    return 0


def _mosquitto(args: argparse.Namespace) -> int:
    from provisioning.mosquitto_config import write_mosquitto_config

    revoked: list[str] = []
    if Path(_state_db(args).removeprefix("sqlite:///")).exists() or args.db:
        revoked = _service(args).registry.revoked_device_ids()
    cfg = write_mosquitto_config(
        Path(args.dir),
        Path(args.out),
        port=args.port,
        bind=args.bind,
        acl_path=Path(args.acl) if args.acl else None,
        run_as_user=args.run_as_user,
        revoked_device_ids=revoked,
    )
    print(f"wrote {cfg.conf} and {cfg.acl}")
    return 0


def _api_key(args: argparse.Namespace) -> int:
    import getpass

    import sqlalchemy as sa

    from control_plane.security import ApiKeyStore, audit, create_audit_table
    from control_plane.settings import database_url_for_cli

    url = database_url_for_cli(args.db, args.config, "farmiq provision api-key")
    if url is None:
        return 2
    parsed = sa.engine.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # before first start
    engine = sa.create_engine(url)
    create_audit_table(engine)
    actor = f"cli:{getpass.getuser()}"
    try:
        key = ApiKeyStore(engine).create(args.name, args.role, created_by=actor)
    except sa.exc.IntegrityError:
        print(f"an API key named {args.name!r} exists already", file=sys.stderr)
        return 1
    audit(engine, actor, "apikey.create", args.name, "local", {"role": args.role})
    print(key)  # the only time the secret is shown; only its sha256 is stored
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = subcommands_of(subparsers, "provision")
    if sub is None or not control_plane_installed():  # provisioning/cli.py registers it
        return

    def fleet_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dir", required=True, help="fleet directory made by init-fleet")
        sp.add_argument("--db", help="device registry database URL (default: sqlite in --dir)")

    sp = sub.add_parser("init-fleet", help="create root keys, device CA, signing keys, identities")
    sp.add_argument("--dir", required=True, help="new fleet directory (refuses to overwrite)")
    sp.add_argument("--root-threshold", type=int, default=2, help="root signatures needed (2)")
    sp.add_argument("--root-keys", type=int, default=3, help="number of offline root keys (3)")
    sp.add_argument("--targets-threshold", type=int, default=1, help="bundle signatures needed (1)")
    sp.add_argument("--targets-keys", type=int, default=1, help="number of bundle-signing keys (1)")
    sp.add_argument(
        "--broker-host",
        action="append",
        default=None,
        help="broker DNS name or IP for its certificate (repeatable)",
    )
    sp.add_argument("--name", default="farmiq", help="fleet name")
    sp.add_argument(
        "--control-plane-replicas",
        dest="replicas",
        type=int,
        default=2,
        choices=range(1, 9),
        metavar="N",
        help="broker identities to issue, one per control-plane replica (2; at most 8)",
    )
    sp.set_defaults(
        func=lambda a: _init_fleet(
            argparse.Namespace(
                **{**vars(a), "broker_host": a.broker_host or ["localhost", "127.0.0.1"]}
            )
        )
    )

    sp = sub.add_parser("token", help="issue a one-time enrollment token for a device id")
    fleet_args(sp)
    sp.add_argument("--device-id", required=True)
    sp.add_argument("--hardware-class", default="generic-linux")
    sp.add_argument("--ttl", type=float, default=86400, help="lifetime in seconds (86400)")
    sp.set_defaults(func=_token)

    sp = sub.add_parser("revoke", help="revoke a device: CRL, broker ACL, no more bundles")
    fleet_args(sp)
    sp.add_argument("--device-id", required=True)
    sp.add_argument("--reason", default="")
    sp.add_argument("--acl", help="broker ACL file to rewrite")
    sp.add_argument("--reload-cmd", help='e.g. "systemctl reload mosquitto"')
    sp.set_defaults(func=_revoke)

    sp = sub.add_parser("devices", help="list enrolled devices")
    fleet_args(sp)
    sp.set_defaults(func=_devices)

    sp = sub.add_parser("mosquitto-config", help="write a mutual-TLS mosquitto.conf and ACL")
    fleet_args(sp)
    sp.add_argument("--out", required=True, help="mosquitto.conf to write")
    sp.add_argument("--acl", help="ACL file (default: <out>.acl)")
    sp.add_argument("--port", type=int, default=8883)
    sp.add_argument("--bind", default="127.0.0.1")
    sp.add_argument("--run-as-user", help="mosquitto `user` (must be able to read the key)")
    sp.set_defaults(func=_mosquitto)

    sp = sub.add_parser(
        "api-key",
        help="create an operator API key (printed once); the first admin key bootstraps the API",
        description="Create an API key in the control plane's database and print it once. "
        "Use it as `Authorization: Bearer <key>` when auth_enabled = true. Further keys can be "
        "made with POST /api/v1/security/keys (admin).",
    )
    where = sp.add_mutually_exclusive_group()
    where.add_argument(
        "-c", "--config", type=Path, help="control-plane TOML (its database is used)"
    )
    where.add_argument("--db", help="control-plane database URL (instead of --config)")
    sp.add_argument("--name", required=True, help="a name for the key (who holds it)")
    sp.add_argument(
        "--role", choices=["viewer", "operator", "admin"], default="admin", help="(admin)"
    )
    sp.set_defaults(func=_api_key)
