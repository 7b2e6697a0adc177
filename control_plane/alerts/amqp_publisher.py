"""Alerts to a durable RabbitMQ topic exchange, from a disk spool, with publisher confirms.

One daemon thread owns the pika ``BlockingConnection`` (pika connections are not
thread-safe). Callers only append to the :class:`AlertSpool` and wake the thread, so an
alert source never waits for RabbitMQ and an outage loses nothing: the thread connects
with exponential back-off (0.5 s doubling to 30 s), declares the exchange (durable,
``topic``), turns on publisher confirms, and publishes the spool in order as persistent
messages (``delivery_mode=2``). An alert leaves the spool only once the broker confirmed
it; a connection lost between publish and confirm sends it again (at-least-once: the
body carries the alert's ``id``, so consumers can drop the repeat).
"""

from __future__ import annotations

import logging
import threading

import pika
import pika.exceptions

from control_plane.alerts.spool import AlertSpool

log = logging.getLogger(__name__)
# pika logs every refused connection at ERROR with a traceback; an outage is reported here
# once, as one warning line, and its recovery as one info line.
logging.getLogger("pika").setLevel(logging.CRITICAL)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0


class AmqpPublisher:
    def __init__(self, url: str, exchange: str, spool: AlertSpool) -> None:
        self.params = pika.URLParameters(url)
        self.params.connection_attempts = 1
        self.params.socket_timeout = 3.0
        self.params.blocked_connection_timeout = 10.0
        self.params.heartbeat = 30
        self.exchange = exchange
        self.spool = spool
        self.published = 0
        self.connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._conn: pika.BlockingConnection | None = None
        self._channel: object | None = None
        self._thread = threading.Thread(target=self._run, name="alerts-amqp", daemon=True)
        # For logs: the broker without credentials.
        self.where = f"{self.params.host}:{self.params.port}"

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    # -- the publisher thread ---------------------------------------------------------------
    def _connect(self) -> None:
        conn = pika.BlockingConnection(self.params)
        ch = conn.channel()
        ch.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        ch.confirm_delivery()
        self._conn, self._channel = conn, ch
        self.connected.set()
        log.info("alerts: connected to RabbitMQ %s, exchange %s", self.where, self.exchange)

    def _drop(self) -> None:
        self.connected.clear()
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing to close cleanly
                pass

    def _publish_spool(self) -> None:
        ch = self._channel
        assert ch is not None
        while not self._stop.is_set():
            batch = self.spool.peek(100)
            if not batch:
                return
            for seq, key, body in batch:
                ch.basic_publish(  # type: ignore[attr-defined]
                    self.exchange,
                    key,
                    body,
                    pika.BasicProperties(
                        content_type="application/json", delivery_mode=2, message_id=str(seq)
                    ),
                )  # with confirms on: returns once the broker acked it, raises on a nack
                self.spool.delete([seq])
                self.published += 1

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        failing = False
        while not self._stop.is_set():
            try:
                if self._conn is None or not self._conn.is_open:
                    self._drop()
                    self._connect()
                    if failing:
                        log.info("alerts: RabbitMQ back; sending %d kept alerts", len(self.spool))
                    failing, backoff = False, BACKOFF_MIN_S
                self._publish_spool()
                # Idle: serve heartbeats while waiting for the next alert.
                self._wake.clear()
                if len(self.spool) == 0:
                    assert self._conn is not None
                    self._conn.process_data_events(time_limit=0)
                    self._wake.wait(1.0)
            except (pika.exceptions.AMQPError, OSError) as exc:
                self._drop()
                if not failing:
                    log.warning(
                        "alerts: RabbitMQ %s unavailable (%s); keeping alerts on disk (%d)",
                        self.where,
                        type(exc).__name__,
                        len(self.spool),
                    )
                failing = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._drop()
