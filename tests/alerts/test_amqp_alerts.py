"""Alerts on the machine's RabbitMQ: a durable topic exchange, routing key
``<kind>.<severity>``, persistent messages after publisher confirms, and no alert lost
while RabbitMQ is unreachable (kept on disk, across a restart, sent once it is back)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from control_plane.alerts.amqp_publisher import AmqpPublisher
from control_plane.alerts.bus import AlertBus
from control_plane.alerts.model import Alert, Kind, Severity
from control_plane.alerts.spool import AlertSpool
from tests.alerts.conftest import Consumer, TcpProxy


def _alert(kind: Kind, severity: Severity, n: int) -> Alert:
    return Alert(kind=kind, severity=severity, message=f"test alert {n}", device_id=f"gw-{n}")


def _wait(pred, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_alerts_are_published_persistent_and_routed_by_kind_and_severity(
    rabbitmq: str, consumer: Consumer, tmp_path: Path
) -> None:
    spool = AlertSpool(tmp_path / "spool.db")
    pub = AmqpPublisher(rabbitmq, consumer.exchange, spool)
    pub.start()
    bus = AlertBus(spool=spool, amqp=pub)
    try:
        sent = [
            bus.send(_alert(Kind.GATEWAY_OFFLINE, Severity.WARNING, 1)),
            bus.send(_alert(Kind.INSTALL_REJECTED, Severity.WARNING, 2)),
            bus.send(_alert(Kind.ROLLOUT_SUCCEEDED, Severity.INFO, 3)),
        ]
        assert all("amqp" in s for s in sent)
        got = consumer.get(3)
        assert [m.routing_key for m, _, _ in got] == [
            "gateway_offline.warning",
            "install_rejected.warning",
            "rollout_succeeded.info",
        ]
        assert all(p.delivery_mode == 2 for _, p, _ in got)  # persistent
        assert [json.loads(b)["message"] for _, _, b in got] == [
            f"test alert {i}" for i in (1, 2, 3)
        ]
        assert _wait(lambda: len(spool) == 0)  # deleted only once confirmed
        # A repeat of the same condition is one alert, not two.
        assert bus.send(_alert(Kind.GATEWAY_OFFLINE, Severity.WARNING, 1)) == []
    finally:
        bus.close()


def test_alerts_wait_on_disk_while_rabbitmq_is_down_and_are_sent_when_it_is_back(
    rabbitmq: str, proxy: TcpProxy, consumer: Consumer, tmp_path: Path
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    path = tmp_path / "spool.db"
    spool = AlertSpool(path)
    pub = AmqpPublisher(url, consumer.exchange, spool)
    pub.start()  # RabbitMQ unreachable from the start: nothing listens on the proxy's port
    bus = AlertBus(spool=spool, amqp=pub)
    bus.send(_alert(Kind.DRIFT, Severity.WARNING, 1))
    bus.send(_alert(Kind.MCU_FAULT, Severity.CRITICAL, 2))
    time.sleep(1.5)
    assert len(spool) == 2 and pub.published == 0 and consumer.get(1, timeout=0.5) == []

    proxy.up()  # RabbitMQ is back: the publisher reconnects by itself (back-off)
    got = consumer.get(2, timeout=30)
    assert [m.routing_key for m, _, _ in got] == ["drift.warning", "mcu_fault.critical"]
    assert _wait(lambda: len(spool) == 0)

    proxy.down()  # an outage while connected...
    assert _wait(lambda: not pub.connected.is_set(), timeout=10)
    bus.send(_alert(Kind.BREAKER_OPEN, Severity.WARNING, 3))
    pub.stop()  # ...and the control plane restarts before it ends
    spool.close()
    assert consumer.get(1, timeout=0.5) == []

    spool = AlertSpool(path)  # the alert is still on disk
    assert len(spool) == 1
    proxy.up()
    pub = AmqpPublisher(url, consumer.exchange, spool)
    pub.start()
    try:
        (got_one,) = consumer.get(1, timeout=30)
        assert got_one[0].routing_key == "breaker_open.warning"
        assert json.loads(got_one[2])["device_id"] == "gw-3"
        assert _wait(lambda: len(spool) == 0)
    finally:
        pub.stop()
        spool.close()
