"""The agent's HTTP/1.1 server (edge_agent/api/http_server.py) on real sockets: what a
client sees for keep-alive, pipelining, chunked and 100-continue bodies, the limits, bad
input, timeouts and a graceful stop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edge_agent.api.http_server import HttpServer
from edge_agent.api.local_api import LocalApi, Request, Response, json_response


def _api(release: threading.Event) -> LocalApi:
    api = LocalApi()

    @api.route("POST", "/echo")
    async def echo(req: Request) -> Response:
        return json_response({"len": len(req.body), "body": req.body.decode()})

    @api.route("GET", "/models/{name}")
    async def model(req: Request) -> Response:
        return json_response({"name": req.params["name"], "query": req.query.decode()})

    @api.route("GET", "/slow")
    async def slow(req: Request) -> Response:
        while not release.is_set():
            await asyncio.sleep(0.01)
        return json_response({"slow": True})

    @api.route("GET", "/boom")
    async def boom(req: Request) -> Response:
        raise RuntimeError("a bug")

    return api


class Running:
    def __init__(self, **kw: Any) -> None:
        self.release = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.kw = kw
        self.server: HttpServer | None = None
        ready = threading.Event()

        async def main() -> None:
            self.server = HttpServer(_api(self.release), "127.0.0.1", 0, **kw)
            await self.server.start()
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(main(), self.loop).result(10)
        assert ready.is_set() and self.server is not None
        self.port = self.server.port

    def stop(self, deadline_s: float = 5.0) -> float:
        assert self.server is not None
        t0 = time.monotonic()
        asyncio.run_coroutine_threadsafe(self.server.stop(deadline_s), self.loop).result(30)
        return time.monotonic() - t0

    def close(self) -> None:
        self.release.set()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def srv() -> Iterator[Running]:
    r = Running(keepalive_s=1.0, request_s=1.0, max_body=1024)
    yield r
    r.close()


def _conn(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def _read_answers(s: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """n HTTP answers from the socket (content-length framed)."""
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(out)} answers: {buf!r}")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        if status == 100:
            continue
        size = int(headers["content-length"])
        while len(buf) < size:
            buf += s.recv(65536)
        out.append((status, headers, buf[:size]))
        buf = buf[size:]
    return out


def _closed(s: socket.socket, within: float = 3.0) -> bool:
    s.settimeout(within)
    try:
        while True:
            if not s.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_keep_alive_pipelining_and_answers_in_order(srv: Running) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}") as c:
        for i in range(3):  # one kept-alive connection
            r = c.post("/echo", content=b"x" * i)
            assert r.status_code == 200 and r.json()["len"] == i
            assert r.headers["content-type"] == "application/json" and "date" in r.headers
    s = _conn(srv.port)
    reqs = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (b"one", b"two", b"three")
    )
    s.sendall(reqs)  # three requests in one write: three answers, in order
    got = _read_answers(s, 3)
    assert [a[2] for a in got] == [
        b'{"len":3,"body":"one"}',
        b'{"len":3,"body":"two"}',
        b'{"len":5,"body":"three"}',
    ]
    s.close()


def test_chunked_body_100_continue_head_and_decoded_paths(srv: Running) -> None:
    s = _conn(srv.port)
    s.sendall(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert _read_answers(s, 1)[0][2] == b'{"len":5,"body":"abcde"}'
    s.sendall(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert s.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"hi")
    assert _read_answers(s, 1)[0][2] == b'{"len":2,"body":"hi"}'
    s.close()
    r = httpx.head(f"http://127.0.0.1:{srv.port}/models/barn")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 0
    r = httpx.get(f"http://127.0.0.1:{srv.port}/models/barn%2Dfan?v=2")
    assert r.json() == {"name": "barn-fan", "query": "v=2"}
    assert httpx.get(f"http://127.0.0.1:{srv.port}/nope").status_code == 404
    assert httpx.get(f"http://127.0.0.1:{srv.port}/echo").status_code == 405
    r = httpx.get(f"http://127.0.0.1:{srv.port}/boom")  # a bug in a route: 500, served on
    assert r.status_code == 500 and "RuntimeError" in r.json()["error"]


def test_limits_and_bad_input_answer_once_then_close(
    srv: Running, caplog: pytest.LogCaptureFixture
) -> None:
    cases = [
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"GET /models/a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"\x16\x03\x01 not http\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n", 400),
    ]
    for raw, status in cases:
        s = _conn(srv.port)
        s.sendall(raw)
        got = _read_answers(s, 1)[0]
        assert got[0] == status and b"error" in got[2], (raw[:40], got)
        assert got[1].get("connection") == "close"
        assert _closed(s), raw[:40]
        s.close()
    s = _conn(srv.port)  # too large, asking to continue: refused before any 100 Continue
    s.sendall(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    assert s.recv(64).startswith(b"HTTP/1.1 413 ")
    s.close()
    s = _conn(srv.port)  # chunks past the body limit, no content-length
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    s.sendall(b"400\r\n" + b"a" * 1024 + b"\r\n400\r\n" + b"a" * 1024 + b"\r\n")
    assert _read_answers(s, 1)[0][0] == 413
    s.close()
    assert any("Invalid HTTP request" in r.getMessage() for r in caplog.records)
    assert httpx.post(f"http://127.0.0.1:{srv.port}/echo", content=b"ok").status_code == 200


def test_http_10_closes_and_connection_close_is_honoured(srv: Running) -> None:
    for raw in (
        b"GET /models/a HTTP/1.0\r\n\r\n",
        b"GET /models/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        s = _conn(srv.port)
        s.sendall(raw)
        status, headers, _ = _read_answers(s, 1)[0]
        assert status == 200 and headers["connection"] == "close"
        assert _closed(s)
        s.close()


def test_idle_and_stalled_connections_time_out(srv: Running) -> None:
    idle = _conn(srv.port)
    idle.sendall(b"GET /models/a HTTP/1.1\r\nHost: x\r\n\r\n")
    _read_answers(idle, 1)
    stalled = _conn(srv.port)
    stalled.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    t0 = time.monotonic()
    assert _closed(idle, within=4.0)  # keepalive_s=1 (+ the sweep's second)
    got = _read_answers(stalled, 1)[0]
    assert got[0] == 408 and time.monotonic() - t0 < 4.0
    idle.close()
    stalled.close()


def test_stop_finishes_in_flight_requests_and_refuses_new_ones() -> None:
    srv = Running()
    try:
        s = _conn(srv.port)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        half = _conn(srv.port)  # a request whose body is still on its way
        half.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        idle = _conn(srv.port)
        time.sleep(0.2)
        done = threading.Thread(target=srv.stop, args=(5.0,))
        done.start()
        time.sleep(0.3)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{srv.port}/models/a", timeout=1)
        assert _closed(idle)
        half.sendall(b"cd")
        assert _read_answers(half, 1)[0][2] == b'{"len":4,"body":"abcd"}'
        srv.release.set()
        status, headers, body = _read_answers(s, 1)[0]
        assert status == 200 and body == b'{"slow":true}' and headers["connection"] == "close"
        done.join(10)
        assert not done.is_alive()
    finally:
        srv.close()


def test_stop_gives_up_on_a_request_past_the_deadline() -> None:
    srv = Running()
    try:
        s = _conn(srv.port)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        took = srv.stop(deadline_s=0.5)
        assert 0.4 < took < 3.0
        assert _closed(s)
    finally:
        srv.close()
