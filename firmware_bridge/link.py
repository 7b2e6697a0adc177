"""One serial port, kept open: asyncio link over pyserial with reconnect and backoff.

``serial.serial_for_url`` opens ``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, a pty path,
``loop://`` and ``socket://host:port`` alike. A reader thread blocks in ``read()`` (pyserial
waits in select() with a timeout: no busy loop) and hands bytes to the event loop; a writer
thread drains a queue, so a slow or stuck port never blocks the loop. When the port fails
(unplug shows up as a read error) the link fails the outstanding sends, closes, and reopens
with exponential backoff and jitter. On every open it sends HELLO_REQ so the MCU
introduces itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

import serial

from firmware_bridge.framing import DEFAULT_MAX_FRAME
from firmware_bridge.messages import AnyMessage, HelloReq
from firmware_bridge.reliability import LinkDown, ReliableEndpoint

log = logging.getLogger(__name__)

MessageHandler = Callable[["SerialLink", int, AnyMessage], None]
StateHandler = Callable[["SerialLink", bool], None]


class SerialLink:
    def __init__(
        self,
        url: str,
        on_message: MessageHandler,
        *,
        on_state: StateHandler | None = None,
        session: int = 0,
        baudrate: int = 115200,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        ack_timeout: float = 0.15,
        max_retries: int = 8,
        window: int = 8,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.url = url
        self._on_message = on_message
        self._on_state = on_state
        self._session = session
        self._baudrate = baudrate
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.endpoint = ReliableEndpoint(
            write=self._write,
            on_message=self._dispatch,
            max_frame=max_frame,
            ack_timeout=ack_timeout,
            max_retries=max_retries,
            window=window,
        )
        self.endpoint.close(LinkDown("not connected"))
        self.device_id: str | None = None
        self.connected = False
        self.connects = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lost: asyncio.Future[None] | None = None
        self._writeq: queue.SimpleQueue[bytes | None] | None = None
        self._conn_id = 0

    # ---- public --------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.url)

    async def stop(self) -> None:
        self._stopping = True
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def send(self, msg: AnyMessage) -> None:
        """Send reliably (waits for the ACK); raises LinkError when it cannot."""
        await self.endpoint.send(msg)

    # ---- internals -----------------------------------------------------------------
    def _dispatch(self, seq: int, msg: AnyMessage) -> None:
        self._on_message(self, seq, msg)

    def _write(self, data: bytes) -> None:
        q = self._writeq
        if q is not None:
            q.put(data)

    def _set_state(self, up: bool) -> None:
        self.connected = up
        if self._on_state is not None:
            try:
                self._on_state(self, up)
            except Exception:
                log.exception("state handler failed")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._backoff_initial
        while not self._stopping:
            try:
                ser = await asyncio.to_thread(
                    serial.serial_for_url,
                    self.url,
                    baudrate=self._baudrate,
                    timeout=0.2,
                    write_timeout=2.0,
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                log.debug("open %s failed: %s; retry in %.2fs", self.url, exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self._backoff_max)
                continue
            backoff = self._backoff_initial
            self.connects += 1
            await self._serve(loop, ser)
            if not self._stopping:
                await asyncio.sleep(self._backoff_initial)

    async def _serve(self, loop: asyncio.AbstractEventLoop, ser: Any) -> None:
        self._conn_id += 1
        conn_id = self._conn_id
        lost: asyncio.Future[None] = loop.create_future()
        self._lost = lost
        stop = threading.Event()
        writeq: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

        def on_lost(cid: int, exc: BaseException | None) -> None:
            if cid == self._conn_id and not lost.done():
                log.info("link %s lost: %s", self.url, exc)
                lost.set_result(None)

        def reader() -> None:
            try:
                while not stop.is_set():
                    n = ser.in_waiting
                    data = ser.read(n if n > 0 else 1)
                    if data:
                        loop.call_soon_threadsafe(self._feed, conn_id, data)
            except Exception as exc:
                if not stop.is_set():
                    loop.call_soon_threadsafe(on_lost, conn_id, exc)

        def writer() -> None:
            try:
                while True:
                    item = writeq.get()
                    if item is None:
                        return
                    parts = [item]
                    while True:  # coalesce what is queued into one write
                        try:
                            nxt = writeq.get_nowait()
                        except queue.Empty:
                            break
                        if nxt is None:
                            ser.write(b"".join(parts))
                            return
                        parts.append(nxt)
                    ser.write(b"".join(parts))
            except Exception as exc:
                if not stop.is_set():
                    loop.call_soon_threadsafe(on_lost, conn_id, exc)

        rt = threading.Thread(target=reader, name=f"mcu-rx {self.url}", daemon=True)
        wt = threading.Thread(target=writer, name=f"mcu-tx {self.url}", daemon=True)
        self._writeq = writeq
        rt.start()
        wt.start()
        self.endpoint.reopen()
        self._set_state(True)
        writeq.put(b"\x00")  # flush any half frame in the MCU's receiver
        hello_req = self.endpoint.post(HelloReq(self._session))
        try:
            await lost
        finally:
            hello_req.cancel()
            stop.set()
            self._writeq = None
            writeq.put(None)
            self.endpoint.close(LinkDown(f"{self.url} closed"))
            self.endpoint.decoder.feed(b"\x00")  # drop any partial frame
            self._set_state(False)
            cancel_read = getattr(ser, "cancel_read", None)
            try:
                if cancel_read is not None:
                    cancel_read()
            except Exception:
                pass
            await asyncio.to_thread(_close, ser, rt, wt)

    def _feed(self, conn_id: int, data: bytes) -> None:
        if conn_id == self._conn_id:
            self.endpoint.feed(data)


def _close(ser: Any, *threads: threading.Thread) -> None:
    for t in threads:
        t.join(timeout=1.0)
    try:
        ser.close()
    except Exception:
        pass
