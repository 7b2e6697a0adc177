"""One protocol, byte for byte: the Python side passes firmware_bridge/protocol_vectors.json
(the C side passes the same file in test_mcu_c_reference.py and test_mcu_qemu.py), and the
committed vectors are what the committed script makes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cobs import cobs

from firmware_bridge import make_protocol_vectors as mpv
from firmware_bridge.framing import FrameDecoder, crc16, encode_frame
from firmware_bridge.messages import command_hash, decode_message

ROOT = Path(__file__).resolve().parents[2]
DOC = json.loads((ROOT / "firmware_bridge" / "protocol_vectors.json").read_text())


def test_committed_vectors_are_what_the_script_makes() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "firmware_bridge.make_protocol_vectors", "--check"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_crc_cobs_sha256_vectors() -> None:
    for v in DOC["crc16_ccitt_false"]:
        assert crc16(bytes.fromhex(v["data"])) == v["crc"]
    assert (
        next(v["crc"] for v in DOC["crc16_ccitt_false"] if v["data"] == b"123456789".hex())
        == 0x29B1
    )
    for v in DOC["cobs"]:
        assert cobs.encode(bytes.fromhex(v["data"])).hex() == v["encoded"]
        assert cobs.decode(bytes.fromhex(v["encoded"])).hex() == v["data"]
    for v in DOC["sha256"]:
        assert hashlib.sha256(bytes.fromhex(v["data"])).hexdigest() == v["digest"]


@pytest.mark.parametrize("v", DOC["messages"], ids=lambda v: v["name"])
def test_message_vectors_pack_and_decode(v: dict) -> None:
    payload = bytes.fromhex(v["payload"])
    msg = decode_message(v["type"], payload)
    assert type(msg).__name__ == v["name"]
    fields = {f.name: mpv._jsonable(getattr(msg, f.name)) for f in dataclasses.fields(msg)}  # type: ignore[arg-type]
    assert fields == v["fields"]
    assert msg.pack() == payload
    assert encode_frame(v["type"], v["seq"], payload).hex() == v["wire"]
    (frame,) = FrameDecoder().feed(bytes.fromhex(v["wire"]))
    assert (frame.type, frame.seq, frame.payload) == (v["type"], v["seq"], payload)


def test_frame_vectors() -> None:
    dec = FrameDecoder()
    for v in DOC["frames"]:
        assert encode_frame(v["type"], v["seq"], bytes.fromhex(v["payload"])).hex() == v["wire"]
        (frame,) = dec.feed(bytes.fromhex(v["wire"]))
        assert frame.payload.hex() == v["payload"]


def test_command_id_is_blake2b_with_digest_size_8_as_the_doc_says() -> None:
    for v in DOC["command_id"]:
        h8 = hashlib.blake2b(v["command_id"].encode(), digest_size=8).digest()
        assert command_hash(v["command_id"]) == v["wire_id"] == int.from_bytes(h8, "little")
        assert h8.hex() == v["wire_le"]
        # not the first 8 bytes of the default BLAKE2b-512 (what the doc used to say)
        assert hashlib.blake2b(v["command_id"].encode()).digest()[:8] != h8
    doc = (ROOT / "docs" / "mcu-protocol.md").read_text()
    assert "digest_size=8" in doc and "first 8 bytes of BLAKE2b" not in doc
