"""The durable outbox against a real Mosquitto: outages lose nothing, lost acks cause a
resend that the control plane stores once, and a full disk merges instead of dropping."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from control_plane.drift.ingest import DriftService
from edge_agent.telemetry.drift_stats import merge_encoded, window_item
from edge_agent.uplink.outbox import Outbox, OutboxFull
from farmiq import topics
from tests.drift.conftest import WindowFactory

DEV = "gw-out"


def _client(cid: str, port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
    c.reconnect_delay_set(1, 1)
    c.connect_async("127.0.0.1", port, keepalive=10)
    return c


def _put_window(box: Outbox, topic: str, window: dict[str, Any]) -> bool:
    payload, key, group = window_item(window)
    return box.put(topic, payload, key, merge_group=group)


class FakeControlPlane:
    """The control plane's ingest path: store, then acknowledge the stored keys."""

    def __init__(self, service: DriftService, port: int) -> None:
        self.service = service
        self.drop_acks: set[str] = set()  # ack lost once for these keys
        self.duplicates: list[str] = []
        self.c = _client("cp-test", port)
        self.c.on_connect = lambda c, *a: c.subscribe(topics.FLEET_UP, qos=1)
        self.c.on_message = self._on_message
        self.c.loop_start()

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = topics.parse_up(msg.topic)
        assert parsed is not None
        res = self.service.ingest_window(parsed[0], bytes(msg.payload))
        self.duplicates += res.duplicates
        keys = [k for k in res.ack_keys if k not in self.drop_acks]
        self.drop_acks -= set(res.ack_keys)
        if keys:
            c.publish(res.ack_topic, json.dumps({"keys": keys}), qos=1)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Gateway:
    def __init__(self, path: Path, port: int, **kw: Any) -> None:
        self.c = _client(DEV, port)
        self.outbox = Outbox(
            path, self.publish, is_connected=self.c.is_connected, merge=merge_encoded, **kw
        )
        self.loop = asyncio.get_running_loop()
        self.c.on_connect = lambda c, *a: c.subscribe(topics.down(DEV, topics.OUTBOX_ACK), qos=1)
        self.c.on_message = lambda c, u, m: self.loop.call_soon_threadsafe(  # type: ignore[assignment,return-value]
            self.outbox.handle_ack_message, bytes(m.payload)
        )
        self.c.loop_start()
        self.task = asyncio.create_task(self.outbox.run())

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.c.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(mqtt.error_string(info.rc))

    async def stop(self) -> None:
        self.task.cancel()
        self.c.loop_stop()
        self.c.disconnect()


async def _until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def _stored(service: DriftService) -> int:
    _, meta = service.analyze("barn", level="fleet", since=0, until=1e12)
    return int(meta["windows"])


async def test_outage_loses_nothing_and_redelivery_is_idempotent(
    tmp_path: Path,
    service: DriftService,
    make_window: WindowFactory,
    mosquitto_factory: Callable[..., Any],
) -> None:
    broker = mosquitto_factory()
    cp = FakeControlPlane(service, broker.port)
    gw = Gateway(
        tmp_path / "outbox.db", broker.port, ack_timeout_s=1.0, retry_min_s=0.1, retry_max_s=0.5
    )
    try:
        windows = [make_window(DEV, n=300, seed=i, start=3600.0 * i) for i in range(8)]
        for w in windows:
            w.pop("_raw")
        await _until(lambda: gw.c.is_connected() and cp.c.is_connected())
        cp.drop_acks = {windows[0]["id"]}  # this ack gets lost: the gateway must resend
        for w in windows[:3]:
            _put_window(gw.outbox, topics.up(DEV, topics.DRIFT), w)
        await _until(lambda: gw.outbox.pending() == 0)
        assert _stored(service) == 3
        assert cp.duplicates == [windows[0]["id"]]  # resent once, stored once

        broker.stop()
        await _until(lambda: not gw.c.is_connected())
        for w in windows[3:]:
            _put_window(gw.outbox, topics.up(DEV, topics.DRIFT), w)
        await asyncio.sleep(1.0)  # the outage lasts: nothing may disappear meanwhile
        assert gw.outbox.pending() == 5

        # A gateway restart during the outage: the queue is on disk.
        await gw.stop()
        gw.outbox.close()
        broker.start()
        gw = Gateway(
            tmp_path / "outbox.db", broker.port, ack_timeout_s=1.0, retry_min_s=0.1, retry_max_s=0.5
        )
        assert gw.outbox.pending() == 5
        await _until(lambda: gw.outbox.pending() == 0, timeout=30)
        assert _stored(service) == 8
        an, _ = service.analyze("barn", level="fleet", since=0, until=1e12)
        assert int(an.rows[0]) == 8 * 300  # every row counted exactly once
    finally:
        await gw.stop()
        cp.stop()


def test_disk_budget_merges_oldest_windows_instead_of_dropping(
    tmp_path: Path,
    service: DriftService,
    make_window: WindowFactory,
) -> None:
    windows = [make_window(DEV, n=200, seed=i, start=3600.0 * i) for i in range(12)]
    for w in windows:
        w.pop("_raw")
    size = len(json.dumps(windows[0]))
    box = Outbox(tmp_path / "o.db", disk_budget_bytes=int(size * 4.5), merge=merge_encoded)
    topic = topics.up(DEV, topics.DRIFT)
    for w in windows:
        _put_window(box, topic, w)
    assert box.size_bytes() <= int(size * 4.5)
    assert box.merges > 0 and box.pending() < 12
    items = box.items()
    assert items[0][0].startswith("merged/")  # the oldest were merged, the newest kept
    assert items[-1][0] == windows[-1]["id"]
    # Everything still arrives: the control plane sees all rows of all 12 hours.
    for _key, _t, payload in items:
        assert service.ingest_window(DEV, payload).stored
    an, _ = service.analyze("barn", level="fleet", since=0, until=1e12)
    assert int(an.rows[0]) == 12 * 200
    # A generic item that cannot fit is refused loudly, not dropped silently.
    with pytest.raises(OutboxFull):
        box.put(topics.up(DEV, topics.OUTBOX), b"x" * size * 5, "big")
    assert box.put(topic, items[-1][2], items[-1][0]) is False  # same key: idempotent
    box.close()


def test_malformed_ack_is_ignored(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put("t", b"{}", "k1")
    assert box.handle_ack_message(b"not json") == 0
    assert box.handle_ack_message(b'{"keys": "k1"}') == 0
    assert box.handle_ack_message(b'{"keys": ["k1", 5]}') == 1
    assert box.pending() == 0
    box.close()
