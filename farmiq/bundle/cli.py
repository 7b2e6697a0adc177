"""``farmiq bundle build|sign|verify|inspect|keygen``.

``farmiq bundle export-triton`` belongs to the control plane (``control_plane/cli.py`` adds it
here when the control plane is installed); this module imports nothing from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="build, sign, verify and inspect signed model bundles")
    bsub = p.add_subparsers(dest="bundle_cmd", metavar="ACTION")

    b = bsub.add_parser("build", help="build a signed bundle from an ONNX (or .tflite) model")
    b.add_argument("model", type=Path, help="model file (.onnx or .tflite)")
    b.add_argument("--name", required=True, help="model name")
    b.add_argument("--version", type=int, required=True, help="integer model version")
    b.add_argument(
        "--key",
        type=Path,
        required=True,
        action="append",
        help="signing key (PEM); repeat for a threshold",
    )
    b.add_argument(
        "--runtime", default="onnxruntime", choices=["onnxruntime", "litert", "mcu-tflite"]
    )
    b.add_argument("--task", default="classification", choices=["classification", "regression"])
    b.add_argument("--labels", help="comma-separated class labels")
    b.add_argument("--features", help="comma-separated input feature names")
    b.add_argument("--feature-schema", help="NAME:VERSION of the feature schema the model needs")
    b.add_argument("--device", action="append", default=[], help="address to this device (repeat)")
    b.add_argument(
        "--hardware", action="append", default=[], help="address to this hardware class (repeat)"
    )
    b.add_argument("--reference", type=Path, help="drift reference statistics (JSON)")
    b.add_argument("-o", "--out", type=Path, required=True, help="output bundle file")
    b.add_argument(
        "--no-gate",
        action="store_true",
        help="skip loading and running the model in the gateway runtime before signing",
    )
    b.set_defaults(func=_build)

    s = bsub.add_parser("sign", help="add a signature to an existing bundle")
    s.add_argument("bundle", type=Path)
    s.add_argument("--key", type=Path, required=True)
    s.set_defaults(func=_sign)

    v = bsub.add_parser(
        "verify", help="verify a bundle against a trust root; exits 1 with the reason on any fault"
    )
    v.add_argument("bundle", type=Path)
    v.add_argument("--trust-root", dest="trust", type=Path, help="trust root JSON (required)")
    v.add_argument("--trust", dest="trust", type=Path, help=argparse.SUPPRESS)  # older name
    v.add_argument("--device", help="verify as this device id")
    v.add_argument("--hardware", help="verify as this hardware class")
    v.add_argument("--installed-version", type=int, help="refuse older versions than this")
    v.set_defaults(func=_verify)

    i = bsub.add_parser(
        "inspect", help="print a bundle's manifest and signatures (no verification)"
    )
    i.add_argument("bundle", type=Path)
    i.set_defaults(func=_inspect)

    k = bsub.add_parser("keygen", help="make an Ed25519 signing key and a trust root listing it")
    k.add_argument("--key", type=Path, required=True, help="where to write the private key (0600)")
    k.add_argument(
        "--trust-root",
        dest="trust",
        type=Path,
        help="also write a trust root JSON trusting this key",
    )
    k.add_argument("--trust", dest="trust", type=Path, help=argparse.SUPPRESS)  # older name
    k.set_defaults(func=_keygen)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    from farmiq.bundle.builder import build_bundle, io_specs
    from farmiq.bundle.signing import Signer

    signers = [Signer.load(k) for k in args.key]
    schema = None
    if args.feature_schema:
        name, _, ver = args.feature_schema.partition(":")
        schema = (name, ver or "1")
    reference = orjson.loads(args.reference.read_bytes()) if args.reference else None
    model = args.model.read_bytes()
    labels = args.labels.split(",") if args.labels else None
    try:
        # Specs from the model itself (ONNX graph, LiteRT interpreter), then the same gate
        # the control plane runs: load and run it as a gateway would.
        inputs, outputs = io_specs(model, args.runtime)
        if not args.no_gate:
            from control_plane.model_gate import check_model

            sample = ((reference or {}).get("sample") or {}).get("rows")
            check_model(
                model, runtime=args.runtime, inputs=inputs, outputs=outputs,
                reference_sample=sample, task=args.task, labels=labels,
            )  # fmt: skip
    except Exception as exc:  # a bad model file: one clear line, never a traceback
        print(f"cannot build a {args.runtime} bundle from {args.model}: {exc}", file=sys.stderr)
        return 1
    data = build_bundle(
        model,
        name=args.name,
        version=args.version,
        signers=signers,
        runtime=args.runtime,
        task=args.task,
        labels=labels,
        feature_names=args.features.split(",") if args.features else None,
        feature_schema=schema,
        reference=reference,
        targeting={"devices": args.device, "hardware": args.hardware},
        inputs=inputs,
        outputs=outputs,
    )
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes), {args.name} v{args.version} ({args.runtime})")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from farmiq.bundle.builder import add_signature
    from farmiq.bundle.signing import Signer

    signer = Signer.load(args.key)
    args.bundle.write_bytes(add_signature(args.bundle.read_bytes(), signer))
    print(f"signed {args.bundle} with key {signer.keyid[:16]}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from farmiq.bundle.trust import TrustRoot
    from farmiq.bundle.verifier import BundleRejected, VerifyPolicy, verify_bundle

    if args.trust is None:
        print("farmiq bundle verify: --trust-root is required", file=sys.stderr)
        return 2
    try:
        trust = TrustRoot.load(args.trust)
        vb = verify_bundle(
            args.bundle,
            trust,
            VerifyPolicy(
                device_id=args.device,
                hardware_class=args.hardware,
                installed_version=args.installed_version,
            ),
        )
    except BundleRejected as exc:
        print(f"REJECTED ({exc.code}): {exc.reason}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"REJECTED (io): {exc}", file=sys.stderr)
        return 1
    m = vb.manifest
    print(f"OK {m.name} v{m.version} ({m.runtime}), signed by {len(vb.signed_by)} trusted key(s)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from farmiq.bundle.builder import read_container

    manifest, sigs, members = read_container(args.bundle.read_bytes())
    out = {
        "manifest": orjson.loads(manifest),
        "signatures": [s.get("keyid") for s in sigs],
        "member_bytes": {k: len(v) for k, v in members.items()},
    }
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from farmiq.bundle.signing import Signer
    from farmiq.bundle.trust import TrustRoot

    signer = Signer.generate()
    signer.save(args.key)
    if args.trust:
        TrustRoot.for_signers([signer]).save(args.trust)
    print(f"key {signer.keyid[:16]} written to {args.key}")
    return 0
