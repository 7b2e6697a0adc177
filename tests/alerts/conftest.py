"""Fixtures of the alert tests: the machine's RabbitMQ, a TCP proxy in front of it that
can be taken down (a RabbitMQ outage without stopping the shared broker), a consumer
queue bound to a test-only exchange, and a real HTTP webhook receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pika
import pytest

from farmiq_sim.net import free_port, port_open

RABBIT_PORT = 5672


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    if not port_open("127.0.0.1", RABBIT_PORT):
        pytest.fail("RabbitMQ on 127.0.0.1:5672 is required (scripts/test.sh starts it)")
    return f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}/"


class TcpProxy:
    """127.0.0.1:<port> -> target; ``down()`` closes the listener and every live link."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._links: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            ls, self._listener = self._listener, None
            links, self._links = self._links, []
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the proxy thread
            except OSError:
                pass
            ls.close()
        for s in links:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def proxy(rabbitmq: str) -> Iterator[TcpProxy]:
    p = TcpProxy(RABBIT_PORT)
    yield p
    p.down()


class Consumer:
    """A queue bound with ``#`` to a fresh test exchange on the real RabbitMQ."""

    def __init__(self, url: str) -> None:
        self.exchange = f"farmiq.alerts.test-{uuid.uuid4().hex[:8]}"
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.ch.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        q = self.ch.queue_declare("", exclusive=True)
        self.queue = q.method.queue
        self.ch.queue_bind(self.queue, self.exchange, routing_key="#")

    def get(self, n: int, timeout: float = 20.0) -> list[tuple[Any, Any, bytes]]:
        got: list[tuple[Any, Any, bytes]] = []
        deadline = time.time() + timeout
        while len(got) < n and time.time() < deadline:
            method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.conn.sleep(0.05)
                continue
            got.append((method, props, body))
        return got

    def close(self) -> None:
        try:
            self.ch.exchange_delete(self.exchange)
        finally:
            self.conn.close()


@pytest.fixture
def consumer(rabbitmq: str) -> Iterator[Consumer]:
    c = Consumer(rabbitmq)
    yield c
    c.close()


class WebhookReceiver:
    """A real HTTP server that records each POST's headers and raw body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.received.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 20.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.time() + timeout
        while len(self.received) < n and time.time() < deadline:
            time.sleep(0.05)
        return list(self.received)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()
