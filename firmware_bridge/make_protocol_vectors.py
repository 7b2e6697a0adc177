"""Write the protocol test vectors: firmware_bridge/protocol_vectors.json and its C form.

    python -m firmware_bridge.make_protocol_vectors        # rewrite both files
    python -m firmware_bridge.make_protocol_vectors --check  # exit 1 if they are stale

The vectors are made by the Python implementation (framing.py, messages.py) and checked by
every side: the Python tests (tests/firmware_bridge/test_mcu_protocol_vectors.py), the C
reference built for the host and the same C built for the Cortex-M3 and run in QEMU
(mcu_reference/vectors_check.c includes protocol_vectors.h, generated here from the JSON).
An MCU written from docs/mcu-protocol.md can check itself against the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from cobs import cobs

from firmware_bridge import messages as m
from firmware_bridge.framing import crc16, encode_frame

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "protocol_vectors.json"
HEADER_PATH = HERE / "mcu_reference" / "protocol_vectors.h"

F32 = [0.0, 1.0, -2.5, 0.1, 3.4028234663852886e38, 1e-45]  # 0.1 is not exact in f32


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def build() -> dict[str, Any]:
    data_cases = [b"", b"123456789", b"\x00", b"\x00\x00", b"\x11\x00\x22", bytes(range(1, 255)),
                  bytes(range(256)), b"\xff" * 300]  # fmt: skip
    messages: list[tuple[m.AnyMessage, str]] = [
        (m.HelloReq(0xDEADBEEF), "gw"),
        (m.Hello(1, 0x01020304, 123456, 256, 15, 32768, "c-ref-7", "c-ref-2.0", 16384, 2), "mcu"),
        (m.Heartbeat(0xFFFFFFFF, 0), "mcu"),
        (
            m.Readings(
                0xFFFFFFFE,
                1000,
                (m.RawReading(1, 0, _f32(21.5)), m.RawReading(2, 65535, _f32(-0.1))),
            ),
            "mcu",
        ),
        (m.ActuatorCmd(m.command_hash("fan-on-42"), 1, 0.75), "gw"),
        (m.ActuatorCmd(m.command_hash("x"), 9, -1.0), "gw"),
        (m.ActuatorResultMsg(m.command_hash("fan-on-42"), 1, 0, True, 0.75, 77), "mcu"),
        (m.ModelLoadBegin(0x1234, 2944, hashlib.sha256(b"model").digest(), "vent"), "gw"),
        (m.ModelLoadChunk(0x1234, 244, bytes(range(0, 40))), "gw"),
        (m.ModelLoadCommit(0x1234), "gw"),
        (m.ModelLoadStatusMsg(0x1234, 1, 2944, "vent"), "mcu"),
        (m.InferReq(7, 2, "vent", tuple(_f32(v) for v in (30, 60, 30, 3.5, 18, 50, 4, 0.6))), "gw"),
        (m.InferResp(7, 0, 2, 1234, tuple(_f32(v) for v in (0.0156, 0.9844, 0.9, 0.1))), "mcu"),
        (m.ErrorMsg(0x0301, 0x31, 99, "no transfer"), "mcu"),
    ]
    msg_out = []
    for i, (msg, sender) in enumerate(messages):
        payload = msg.pack()
        fields = {f.name: _jsonable(getattr(msg, f.name)) for f in dataclasses.fields(msg)}  # type: ignore[arg-type]
        seq = (0xFFF0 + 7 * i) & 0xFFFF
        msg_out.append({
            "name": type(msg).__name__, "type": int(msg.TYPE), "sender": sender, "fields": fields,
            "payload": payload.hex(), "seq": seq, "wire": encode_frame(msg.TYPE, seq, payload).hex(),
        })  # fmt: skip
    frames: list[dict[str, Any]] = [
        {"type": int(m.MsgType.ACK), "seq": 0, "payload": ""},
        {"type": int(m.MsgType.ACK), "seq": 0xFFFF, "payload": ""},
        {"type": int(m.MsgType.NACK), "seq": 0x0100, "payload": "05"},
        {"type": 0x10, "seq": 0x00FF, "payload": (bytes(250)).hex()},
    ]
    for f in frames:
        f["wire"] = encode_frame(f["type"], f["seq"], bytes.fromhex(f["payload"])).hex()
    return {
        "description": "FarmIQ MCU protocol v1 test vectors (docs/mcu-protocol.md). Made by "
        "firmware_bridge/make_protocol_vectors.py; all hex, integers little-endian on the wire.",
        "protocol_version": 1,
        "crc16_ccitt_false": [{"data": d.hex(), "crc": crc16(d)} for d in data_cases],
        "cobs": [{"data": d.hex(), "encoded": cobs.encode(d).hex()} for d in data_cases],
        "frames": frames,
        "messages": msg_out,
        "command_id": [
            {
                "command_id": c,
                "wire_id": m.command_hash(c),
                "wire_le": m.command_hash(c).to_bytes(8, "little").hex(),
                "note": "BLAKE2b(digest_size=8, no key) of the UTF-8 id, little-endian u64",
            }
            for c in ("fan-on-42", "", "é-ünïcode", "0" * 64)
        ],
        "sha256": [{"data": d.hex(), "digest": hashlib.sha256(d).hexdigest()} for d in data_cases],
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, bool):
        return int(v)
    return v


# ---- C header ----------------------------------------------------------------------------


_ARRAYS: list[str] = []


def _c_bytes(hexstr: str) -> str:
    """A named static array for ``hexstr`` (commas inside a compound literal would split
    the CHECK_* macro arguments): ``name, length``."""
    b = bytes.fromhex(hexstr)
    if not b:
        return "V_EMPTY, 0"
    name = f"V{len(_ARRAYS)}"
    _ARRAYS.append(f"static const uint8_t {name}[] = {{{','.join(str(x) for x in b)}}};")
    return f"{name}, {len(b)}"


def _c_float(x: float) -> str:
    return f"{x!r}f" if x == x else "NAN"  # repr round-trips; f32 values are exact in decimal


def _c_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def header(doc: dict[str, Any]) -> str:
    _ARRAYS.clear()
    out = ["static void run_vectors(void) {"]
    for v in doc["crc16_ccitt_false"]:
        out.append(f"    CHECK_CRC({_c_bytes(v['data'])}, {v['crc']}u);")
    for v in doc["cobs"]:
        out.append(f"    CHECK_COBS({_c_bytes(v['data'])}, {_c_bytes(v['encoded'])});")
    for v in doc["sha256"]:
        out.append(f"    CHECK_SHA256({_c_bytes(v['data'])}, {_c_bytes(v['digest'])});")
    for v in doc["frames"]:
        out.append(
            f"    CHECK_FRAME({v['type']}, {v['seq']}, {_c_bytes(v['payload'])}, {_c_bytes(v['wire'])});"
        )
    for v in doc["messages"]:
        f, name = v["fields"], v["name"]
        out.append(
            f"    CHECK_FRAME({v['type']}, {v['seq']}, {_c_bytes(v['payload'])}, {_c_bytes(v['wire'])});"
        )
        p = _c_bytes(v["payload"])
        if name == "Hello":
            out.append(
                f"    {{ hello_t h = {{{f['boot_id']}u, {f['mcu_ms']}u, {f['caps']}u, "
                f"{f['model_capacity']}u, {f['arena_capacity']}u, {f['max_frame']}, "
                f"{f['model_slots']}, {_c_str(f['device_id'])}, {_c_str(f['fw_version'])}}};"
                f" CHECK_PACK(pack_hello(buf, &h), {p}); }}"
            )
        elif name == "Heartbeat":
            out.append(f"    CHECK_PACK(pack_heartbeat(buf, {f['mcu_ms']}u, {f['status']}), {p});")
        elif name == "Readings":
            items = ", ".join(
                f"{{{r['sensor']}, {r['dt_ms']}, {_c_float(r['value'])}}}" for r in f["items"]
            )
            out.append(
                f"    {{ reading_t r[] = {{{items}}}; CHECK_PACK(pack_readings(buf, "
                f"{f['first_seq']}u, {f['base_ms']}u, r, {len(f['items'])}), {p}); }}"
            )
        elif name == "ActuatorResultMsg":
            out.append(
                f"    CHECK_PACK(pack_actuator_result(buf, {f['command_id']}ull, {f['actuator']}, "
                f"{f['status']}, {f['duplicate']}, {_c_float(f['applied'])}, {f['mcu_ms']}u), {p});"
            )
        elif name == "ModelLoadStatusMsg":
            out.append(
                f"    CHECK_PACK(pack_load_status(buf, {f['transfer']}, {f['status']}, "
                f"{f['received']}u, {_c_str(f['model_id'])}), {p});"
            )
        elif name == "InferResp":
            vals = ", ".join(_c_float(x) for x in f["values"])
            out.append(
                f"    {{ float vals[] = {{{vals}}}; CHECK_INFER_RESP({f['request']}, {f['status']}, "
                f"{f['rows']}, {f['latency_us']}u, vals, {len(f['values'])}, {p}); }}"
            )
        elif name == "ErrorMsg":
            out.append(
                f"    CHECK_PACK(pack_error(buf, {f['code']}, {f['ref_type']}, {f['ref_seq']}, "
                f"{_c_str(f['message'])}), {p});"
            )
        elif name == "HelloReq":
            out.append(f"    CHECK_HELLO_REQ({p}, {f['session']}u);")
        elif name == "ActuatorCmd":
            out.append(
                f"    CHECK_ACTUATOR_CMD({p}, {f['command_id']}ull, {f['actuator']}, "
                f"{_c_float(f['value'])});"
            )
        elif name == "ModelLoadBegin":
            out.append(
                f"    CHECK_LOAD_BEGIN({p}, {f['transfer']}, {f['size']}u, "
                f"{_c_bytes(f['sha256'])}, {_c_str(f['model_id'])});"
            )
        elif name == "ModelLoadChunk":
            out.append(
                f"    CHECK_LOAD_CHUNK({p}, {f['transfer']}, {f['offset']}u, {_c_bytes(f['data'])});"
            )
        elif name == "ModelLoadCommit":
            out.append(f"    CHECK_LOAD_COMMIT({p}, {f['transfer']});")
        elif name == "InferReq":
            vals = ", ".join(_c_float(x) for x in f["values"])
            out.append(
                f"    {{ float vals[] = {{{vals}}}; CHECK_INFER_REQ({p}, {f['request']}, "
                f"{f['rows']}, {_c_str(f['model_id'])}, vals, {len(f['values'])}); }}"
            )
        else:  # pragma: no cover - a new message type needs its C check written here
            raise SystemExit(f"no C check for {name}")
    out.append("}")
    top = [
        "/* Generated by firmware_bridge/make_protocol_vectors.py from protocol_vectors.json:",
        " * do not edit. Included by vectors_check.c, which defines the CHECK_* macros. */",
        "static const uint8_t V_EMPTY[1] = {0};",
        *_ARRAYS,
    ]
    return "\n".join(top + out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = ap.parse_args(argv)
    doc = build()
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    head = header(doc)
    if args.check:
        stale = [
            str(p) for p, want in ((JSON_PATH, text), (HEADER_PATH, head))
            if not p.exists() or p.read_text() != want
        ]  # fmt: skip
        if stale:
            print(
                f"stale protocol vectors: {', '.join(stale)}; run {__spec__.name}", file=sys.stderr
            )  # type: ignore[name-defined]
            return 1
        return 0
    JSON_PATH.write_text(text)
    HEADER_PATH.write_text(head)
    print(f"wrote {JSON_PATH} and {HEADER_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
