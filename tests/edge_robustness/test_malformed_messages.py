"""A live agent fed malformed messages on every ``down/`` leaf stays up, keeps serving the
model it had, writes nothing outside its state directory, and still installs a good
bundle afterwards.

Everything goes over the real broker to a real ``farmiq agent run`` process, exactly as a
broken (or hostile) control plane would send it.
"""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path
from typing import Any

from farmiq import topics
from tests.edge_robustness.helpers import Gateway, make_bundle

GARBAGE = bytes(range(256)) * 4
NESTED = b"[" * 100_000 + b"]" * 100_000  # deeper than any JSON parser's recursion
COMMON: list[bytes] = [
    b"",
    GARBAGE,
    b"\xff\xfe\x00{",
    b"null",
    b"[]",
    b"42",
    b'"text"',
    b"{}",
    b"{" * 50,
    NESTED,
    b"1e400",
    b"NaN",
]


def chunk(header: Any, data: bytes = b"x", *, raw_len: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">4sH", b"FQC1", len(h) if raw_len is None else raw_len) + h + data


def desired(models: dict[str, Any], rev: int = 1) -> bytes:
    return json.dumps({"rev": rev, "models": models}).encode()


def escape_marker() -> str:
    return f"escape-{uuid.uuid4().hex[:8]}"


MARKER = escape_marker()

PER_LEAF: dict[str, list[bytes]] = {
    topics.BUNDLE: [b"FQB1" + GARBAGE, b"\x1f\x8b" + GARBAGE, b"\x00" * 3_000_000],
    topics.DESIRED: [
        b'{"rev": "one"}',
        b'{"rev": 1, "models": []}',
        b'{"rev": 1, "models": {"barn": 7}}',
        desired({"barn": {"version": "x"}}),
        desired({"barn": {"version": -1}}),
        desired({"barn": {"version": 10**30, "bundle_id": "b", "chunks": ["0" * 64]}}),
        # a path in the bundle id: chunks must never be written outside the state dir
        desired(
            {
                "barn": {
                    "version": 9,
                    "bundle_id": f"../../../{MARKER}",
                    "size": 10,
                    "sha256": "0" * 64,
                    "chunk_size": 1024,
                    "chunks": ["0" * 64],
                }
            }
        ),
        # sizes that do not add up, and a bundle far over the gateway's limit
        desired(
            {
                "barn": {
                    "version": 9,
                    "bundle_id": "b" * 16,
                    "size": 10,
                    "sha256": "0" * 64,
                    "chunk_size": 1024,
                    "chunks": ["0" * 64] * 50,
                }
            }
        ),
        desired(
            {
                "barn": {
                    "version": 9,
                    "bundle_id": "c" * 16,
                    "size": 2**62,
                    "sha256": "0" * 64,
                    "chunk_size": 2**61,
                    "chunks": ["0" * 64] * 2,
                }
            }
        ),
        desired({f"m{i}": {"blocked": [i]} for i in range(2000)}),
        desired({}, rev=0),  # back to nothing asked: stops any transfer started above
    ],
    topics.CHUNK: [
        b"FQC1",
        chunk(b"{}", raw_len=65535),
        chunk(b"not json"),
        chunk({"b": "x"}),
        chunk({"b": "x", "i": "one", "n": 1}),
        chunk({"b": "x", "i": 10**40, "n": 1}),
        chunk({"b": "x", "i": -1, "n": 1}),
        chunk(b'{"b": "x", "i": 1e400, "n": 1}'),
        chunk(b'{"b": "x", "i": NaN, "n": 1}'),
        chunk({"b": ["x"], "i": 0, "n": 1}),
    ],
    topics.OUTBOX_ACK: [
        b'{"keys": "abc"}',
        b'{"keys": [1, null, {}, []]}',
        json.dumps({"keys": [f"k{i}" for i in range(20_000)]}).encode(),
        b'{"keys": {"a": 1}}',
    ],
    topics.FEATURES: [
        b'{"kind": "farmiq-features/1"}',
        b'{"kind": "farmiq-features/1", "views": []}',
        b'{"kind": "farmiq-features/1", "views": {"nope": []}}',
        b'{"kind": "farmiq-features/1", "views": {"flock_profile": "x"}}',
        b'{"kind": "farmiq-features/1", "views": {"flock_profile": [{"entity_id": "f1", '
        b'"event_ts": 1e308, "values": {"flock_age_days": 3}}]}}',
        b'{"kind": "farmiq-features/1", "views": {"flock_profile": [{"entity_id": "f1", '
        b'"event_ts": 1.0, "values": {"flock_age_days": NaN}}]}}',
        b'{"kind": "farmiq-features/1", "views": {"flock_profile": [{"entity_id": "f1", '
        b'"event_ts": 1.0, "values": {"flock_age_days": 1e999}}]}}',
        b'{"kind": "farmiq-features/1", "views": {"flock_profile": [{"entity_id": "f1", '
        b'"event_ts": 1.0, "values": {"flock_age_days": ' + b"9" * 5000 + b"}}]}}",
    ],
    topics.ACTUATOR: [
        b'{"command_id": "c1", "actuator": "fan", "value": "fast"}',
        b'{"command_id": "c1", "actuator": "fan", "value": 1e999}',
    ],
    topics.TRUST: [
        b'{"signed": {}, "signatures": []}',
        b'{"signed": {"_type": "root", "version": 99}, "signatures": "x"}',
        b"{" * 20_000,
        b"x" * 2_000_000,
    ],
}
UNKNOWN_LEAVES = ["nope", "bundle/extra", "desired/", "", "../up/state", "a" * 2000]


def test_malformed_messages_on_every_leaf(gateway: Gateway) -> None:
    gw = gateway
    for leaf, payloads in PER_LEAF.items():
        for payload in COMMON + payloads:
            gw.listener.publish(topics.down(gw.id, leaf), payload)
        gw.assert_alive(f"after malformed {leaf!r} messages")
    for leaf in UNKNOWN_LEAVES:
        for payload in (b"", GARBAGE, b"{}"):
            gw.listener.publish(topics.down(gw.id, leaf), payload)
    gw.assert_alive("after messages on unknown leaves")

    # Each rejected bundle was answered (nothing hangs in the install path) ...
    assert gw.listener.on(gw.install_topic), "no install answer for any malformed bundle"
    # ... the trust root is untouched, nothing escaped the state directory ...
    status = gw.agent.get("/api/v1/status").json()
    assert status["ready"] is True and status["broker_connected"] is True, status
    escaped = [p for p in Path(gw.agent.workdir).parent.parent.rglob(f"*{MARKER}*")]
    assert not escaped, f"chunks written outside the state directory: {escaped}"
    # ... and a good bundle still installs and serves.
    ack = gw.push(make_bundle(gw.signer, 3))
    assert ack["ok"] and ack["version"] == 3, ack
    assert gw.answer() == 3.0
    # Every malformed message was refused with a reason, none escaped as a handler crash.
    log = gw.agent.log_text()
    crashed = [line for line in log.splitlines() if "handler failed" in line]
    assert not crashed, "\n".join(crashed)[:6000]
