"""The agent's HTTP/1.1 server: httptools parses, this module serves ``LocalApi`` routes.

Why not uvicorn: measured under wrk on a 2-core gateway (bench/inference_http.py), uvicorn's
per-request bookkeeping (an ASGI scope and two message dicts, a per-request keep-alive timer,
header validation on the way out, the response head and body written by two syscalls) cost
about as much CPU as the whole inference path of the tiny barn model. This server keeps the
same parser (httptools, uvicorn's own) and the same event loop, and does per request only
what HTTP/1.1 needs: one ``Request``, one task, one write of head and body together. What it
serves is the agent's own API, so it speaks exactly what that API needs:

- keep-alive (HTTP/1.1 default, HTTP/1.0 on request), ``Connection: close``, pipelining
  (requests of one connection are answered in order), chunked request bodies (httptools
  decodes them), ``Expect: 100-continue``;
- limits: the body (413), the header block (431), a connection's requests waiting behind a
  slow one (reading pauses), a peer that stops reading (reading pauses until the transport
  drains);
- timeouts from one sweep a second, not a timer per request: an idle keep-alive connection
  closes after ``keepalive_s``, a request whose head or body stalls after ``request_s``;
- malformed input is one warning line and a 400, then the connection closes; nothing a
  client sends raises out of the protocol;
- graceful stop: stop listening, close idle connections, let in-flight requests finish
  within a deadline, then close the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from edge_agent.api.local_api import LocalApi, Response

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_PIPELINED = 16  # complete requests held behind the one being answered, per connection

_REASONS = {s.value: s.phrase.encode("latin-1") for s in HTTPStatus}


def _head(status: int, content_type: bytes, length: int, date: bytes, close: bool) -> bytes:
    reason = _REASONS.get(status, b"Unknown")
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\ndate: %s\r\n%s" % (
        status, reason, content_type, length, date, b"connection: close\r\n" if close else b""
    )  # fmt: skip


class _PendingRequest:
    __slots__ = ("body", "headers", "keep_alive", "method", "url")

    def __init__(
        self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
        keep_alive: bool,
    ) -> None:  # fmt: skip
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class _Connection(asyncio.Protocol):
    """One client connection: httptools' callbacks build requests, answered in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.api = server.api
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # The request being read
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._reading_since: float | None = None  # a request's first byte came (timeouts)
        # Requests read, answered in order (pipelining); one at a time
        self._queue: deque[_PendingRequest] = deque()
        self._busy = False
        self._closing = False
        self._paused_reading = False
        self._paused_writing = False
        self._close_when_done = False  # answer what was read, then close
        self.idle_since = time.monotonic()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.server.connections.discard(self)
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A request asking to switch protocols (WebSocket, h2c): the request itself was
            # read and is answered over HTTP/1.1; the connection closes after it.
            self._stop_reading_after_queue()
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised (a limit, here) in its own error
            why = exc.__context__
            if isinstance(why, _Refused):
                self._reject(why.status, why.message)
            else:
                self._reject(400, f"Invalid HTTP request: {exc}")

    def pause_writing(self) -> None:  # the peer is not reading: stop reading from it
        self._paused_writing = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        if len(self._queue) < MAX_PIPELINED:
            self._resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = []
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._reading_since = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _Refused(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _Refused(431, "request header fields too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        expect_continue = False
        for name, value in self._headers:
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    raise _Refused(400, "Invalid HTTP request: bad content-length") from None
                if size > self.server.max_body:
                    raise _Refused(413, "request body too large")
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        if expect_continue and self.transport is not None:  # the limits passed: send it
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.max_body:
            raise _Refused(413, "request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._reading_since = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        req = _PendingRequest(
            self.parser.get_method(), url, self._headers, body, self.parser.should_keep_alive()
        )
        if self._busy:
            self._queue.append(req)
            if len(self._queue) >= MAX_PIPELINED:
                self._pause_reading()
        else:
            self._start(req)

    # -- answering -------------------------------------------------------------------------
    def _start(self, req: _PendingRequest) -> None:
        self._busy = True
        self.server.in_flight += 1
        task = self.loop.create_task(self._answer(req))
        task.add_done_callback(self.server.tasks.discard)
        self.server.tasks.add(task)

    async def _answer(self, req: _PendingRequest) -> None:
        try:
            url = req.url
            q = url.find(b"?")
            path, query = (url, b"") if q < 0 else (url[:q], url[q + 1 :])
            text = path.decode("latin-1")
            if "%" in text:  # routes see the decoded path, as ASGI's scope["path"]
                from urllib.parse import unquote

                text = unquote(text)
            method = req.method.decode("latin-1")
            resp = await self.api.handle(
                "GET" if method == "HEAD" else method, text, query, req.body, req.headers
            )
            self._write(resp, req.keep_alive, head_only=method == "HEAD")
        except Exception:  # LocalApi.handle answers every route error; this is a last guard
            log.exception("HTTP request failed outside its route")
            self._write(_error_response(500, "internal error"), False)
        finally:
            self.server.in_flight -= 1
            self._busy = False
            self._next()

    def _next(self) -> None:
        if self._closing:
            return
        if self._queue:
            self._start(self._queue.popleft())
            if len(self._queue) < MAX_PIPELINED and not self._paused_writing:
                self._resume_reading()
        elif self._close_when_done or self.server.stopping:
            self._close()
        else:
            self.idle_since = time.monotonic()

    def _write(self, resp: Response, keep_alive: bool, head_only: bool = False) -> None:
        t = self.transport
        if t is None or self._closing:
            return
        close = not keep_alive or self.server.stopping
        head = _head(resp.status, resp.content_type, len(resp.body), self.server.date, close)
        if resp.headers:
            head += b"".join(b"%s: %s\r\n" % kv for kv in resp.headers)
        t.write(head + b"\r\n" + (b"" if head_only else resp.body))  # one syscall
        if close:
            self._close()

    # -- errors, flow, closing -------------------------------------------------------------
    def _reject(self, status: int, message: str) -> None:
        """A request that cannot be read: answer once, then close (the stream is lost)."""
        log.warning("%s (%s)", message, _peer(self.transport))
        self._queue.clear()
        if not self._busy:
            self._write(_error_response(status, message), False)
        else:  # the answer in progress goes out first, then the connection closes
            self._stop_reading_after_queue()

    def _stop_reading_after_queue(self) -> None:
        """Answer what was read, then close: the stream cannot be read further."""
        self._pause_reading()
        self._close_when_done = True
        if not self._busy and not self._queue:
            self._close()

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None and not self._closing:
            self._paused_reading = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None and not self._closing:
            if self._close_when_done:
                return
            self._paused_reading = False
            self.transport.resume_reading()

    def _close(self) -> None:
        if self.transport is not None and not self._closing:
            self._closing = True
            self.transport.close()

    def active(self) -> bool:
        """A request is being read, answered or waits to be."""
        return self._busy or bool(self._queue) or self._reading_since is not None

    def sweep(self, now: float) -> None:
        """Called once a second: close a stalled request or an idle keep-alive."""
        if self._closing:
            return
        if self._reading_since is not None:
            if now - self._reading_since > self.server.request_s:
                self._reject(408, "request timed out")
        elif not self._busy and not self._queue and now - self.idle_since > self.server.keepalive_s:
            self._close()


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_response(status: int, message: str) -> Response:
    from edge_agent.api.local_api import json_response

    return json_response({"error": message}, status)


def _peer(transport: asyncio.Transport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unknown peer"


class HttpServer:
    """Serves one ``LocalApi`` on ``host:port``; ``start``, then ``stop`` with a deadline."""

    def __init__(
        self,
        api: LocalApi,
        host: str,
        port: int,
        *,
        keepalive_s: float = 5.0,
        request_s: float = 30.0,
        max_body: int | None = None,
    ) -> None:
        from edge_agent.api.local_api import MAX_BODY

        self.api = api
        self.host = host
        self.requested_port = port
        self.keepalive_s = keepalive_s
        self.request_s = request_s
        self.max_body = MAX_BODY if max_body is None else max_body
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.stopping = False
        self.date = formatdate(usegmt=True).encode()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "HttpServer.start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; an ``OSError`` (address in use, no permission) says why it cannot."""
        self._server = await self.loop.create_server(
            lambda: _Connection(self), self.host, self.requested_port, reuse_address=True,
            backlog=2048,
        )  # fmt: skip
        self._sweep()

    def _sweep(self) -> None:
        self.date = formatdate(usegmt=True).encode()  # RFC 9110: a Date on every answer
        now = time.monotonic()
        for conn in list(self.connections):
            conn.sweep(now)
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    async def stop(self, deadline_s: float) -> None:
        """Stop listening, close idle connections, let requests being read or answered
        finish up to ``deadline_s``, then close every connection."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        end = time.monotonic() + deadline_s
        while True:
            for conn in list(self.connections):
                if not conn.active():
                    conn._close()
            left = end - time.monotonic()
            if left <= 0 or not self.connections:
                break
            # Bounded and only while stopping: a request's body may still be on its way.
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=min(0.05, left))
            else:
                await asyncio.sleep(min(0.05, left))
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections):
            conn._close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
