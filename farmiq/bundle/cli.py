"""``farmiq bundle build|sign|verify|inspect``."""

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
    t = bsub.add_parser(
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
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    from farmiq.bundle.builder import build_bundle
    from farmiq.bundle.signing import Signer

    signers = [Signer.load(k) for k in args.key]
    schema = None
    if args.feature_schema:
        name, _, ver = args.feature_schema.partition(":")
        schema = (name, ver or "1")
    reference = orjson.loads(args.reference.read_bytes()) if args.reference else None
    data = build_bundle(
        args.model.read_bytes(),
        name=args.name,
        version=args.version,
        signers=signers,
        runtime=args.runtime,
        task=args.task,
        labels=args.labels.split(",") if args.labels else None,
        feature_names=args.features.split(",") if args.features else None,
        feature_schema=schema,
        reference=reference,
        targeting={"devices": args.device, "hardware": args.hardware},
    )
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes), {args.name} v{args.version}")
    return 0


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
