"""ACK/NACK, retransmit, windowing and duplicate suppression (docs/mcu-protocol.md, section 2).

:class:`ReliableEndpoint` is transport-agnostic: it gets bytes through ``feed()`` and
writes frames through a ``write`` callable. The gateway link and the MCU simulator both
use it, so the two sides share one implementation of the rules (the C reference is the
independent one).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware_bridge.framing import (
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    encode_frame,
)
from firmware_bridge.messages import (
    AnyMessage,
    MessageError,
    MsgType,
    Nack,
    NackCode,
    decode_message,
    is_known_type,
)

log = logging.getLogger(__name__)


class LinkError(Exception):
    """A reliable send did not get through."""


class LinkDown(LinkError):
    """The port closed (unplug, reset of the USB bridge, stop)."""


class LinkTimeout(LinkError):
    """No ACK after all retransmits."""


class NackError(LinkError):
    def __init__(self, code: NackCode) -> None:
        super().__init__(f"peer refused the frame: {code.name}")
        self.code = code


class SeqWindow:
    """Remembers the last ``size`` keys seen (bounded memory duplicate filter)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._order: deque[object] = deque()
        self._seen: set[object] = set()

    def add(self, key: object) -> bool:
        """Record ``key``; return False if it was already there."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return True

    def clear(self) -> None:
        self._order.clear()
        self._seen.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._seen


@dataclass
class EndpointStats:
    sent: int = 0
    retransmits: int = 0
    received: int = 0
    duplicates: int = 0
    nacks_sent: int = 0
    timeouts: int = 0


@dataclass
class _Pending:
    frame: bytes
    future: asyncio.Future[None]
    tries: int = 0
    timer: asyncio.TimerHandle | None = None


ALWAYS_DELIVER = frozenset({MsgType.HELLO, MsgType.HELLO_REQ})


@dataclass(eq=False)
class ReliableEndpoint:
    write: Callable[[bytes], None]
    on_message: Callable[[int, AnyMessage], None]
    max_frame: int = DEFAULT_MAX_FRAME  # what we accept
    peer_max_frame: int = DEFAULT_MAX_FRAME  # what we may send
    ack_timeout: float = 0.15
    max_ack_timeout: float = 1.0
    max_retries: int = 8
    window: int = 8
    initial_seq: int = 0
    rx_window: int = 256
    stats: EndpointStats = field(default_factory=EndpointStats)
    # Called with a valid frame's type before it is ACKed; a NackCode refuses it. An MCU
    # answers BUSY to everything but HELLO_REQ until its HELLO was ACKed (section 2).
    admit: Callable[[int], NackCode | None] | None = None

    def __post_init__(self) -> None:
        self.decoder = FrameDecoder(self.max_frame)
        self._seq = self.initial_seq & 0xFFFF
        self._pending: dict[int, _Pending] = {}
        self._slots = asyncio.Semaphore(self.window)
        self._rx_seen = SeqWindow(self.rx_window)
        self._closed_exc: BaseException | None = None

    # ---- receive -------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self._on_frame(frame)

    def _on_frame(self, f: Frame) -> None:
        if f.type == MsgType.ACK:
            p = self._pending.pop(f.seq, None)
            if p is not None:
                if p.timer:
                    p.timer.cancel()
                if not p.future.done():
                    p.future.set_result(None)
            return
        if f.version != PROTOCOL_VERSION:
            if f.type != MsgType.NACK:
                self._nack(f.seq, NackCode.UNSUPPORTED_VERSION)
            return
        if f.type == MsgType.NACK:
            self._on_nack(f)
            return
        if not is_known_type(f.type):
            self._nack(f.seq, NackCode.UNKNOWN_TYPE)
            return
        try:
            msg = decode_message(f.type, f.payload)
        except MessageError as exc:
            log.warning("malformed type 0x%02x seq %d: %s", f.type, f.seq, exc)
            self._nack(f.seq, NackCode.MALFORMED)
            return
        if self.admit is not None:
            refused = self.admit(f.type)
            if refused is not None:
                self._nack(f.seq, refused)
                return
        self.write(encode_frame(MsgType.ACK, f.seq))
        if f.type not in ALWAYS_DELIVER and not self._rx_seen.add(f.seq):
            self.stats.duplicates += 1
            return
        if f.type in ALWAYS_DELIVER:
            self._rx_seen.add(f.seq)
        self.stats.received += 1
        try:
            self.on_message(f.seq, msg)
        except Exception:  # a handler bug must not kill the link
            log.exception("handler failed for %s", type(msg).__name__)

    def _on_nack(self, f: Frame) -> None:
        try:
            nack = decode_message(MsgType.NACK, f.payload)
        except MessageError:
            return
        assert isinstance(nack, Nack)
        if nack.code == NackCode.BUSY:
            return  # the retransmit timer will try again
        p = self._pending.pop(f.seq, None)
        if p is not None:
            if p.timer:
                p.timer.cancel()
            if not p.future.done():
                p.future.set_exception(NackError(nack.code))

    def _nack(self, seq: int, code: NackCode) -> None:
        self.stats.nacks_sent += 1
        self.write(encode_frame(MsgType.NACK, seq, Nack(code).pack()))

    def reset_rx_window(self) -> None:
        """Forget received seqs (the peer rebooted or a new session began)."""
        self._rx_seen.clear()

    # ---- send ----------------------------------------------------------------------
    async def send(self, msg: AnyMessage) -> None:
        """Send reliably; return once the peer ACKed. Raises LinkError subclasses."""
        payload = msg.pack()
        limit = min(self.peer_max_frame, self.max_frame)
        if len(payload) + 6 > limit:
            raise FrameTooLarge(f"{type(msg).__name__} needs {len(payload) + 6} > {limit}")
        if self._closed_exc is not None:
            raise LinkDown(str(self._closed_exc))
        async with self._slots:
            if self._closed_exc is not None:
                raise LinkDown(str(self._closed_exc))
            seq = self._seq
            self._seq = (self._seq + 1) & 0xFFFF
            frame = encode_frame(msg.TYPE, seq, payload, max_frame=limit)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            p = _Pending(frame, fut)
            self._pending[seq] = p
            self.stats.sent += 1
            self.write(frame)
            self._arm(seq, p)
            try:
                await fut
            finally:
                if self._pending.get(seq) is p:
                    del self._pending[seq]
                    if p.timer:
                        p.timer.cancel()

    def post(self, msg: AnyMessage) -> asyncio.Task[None]:
        """Fire-and-forget reliable send; failures are logged at debug level."""
        task = asyncio.get_running_loop().create_task(self.send(msg))
        task.add_done_callback(_log_failure)
        return task

    def _arm(self, seq: int, p: _Pending) -> None:
        delay = min(self.ack_timeout * (2**p.tries), self.max_ack_timeout)
        p.timer = asyncio.get_running_loop().call_later(delay, self._retransmit, seq)

    def _retransmit(self, seq: int) -> None:
        p = self._pending.get(seq)
        if p is None or p.future.done():
            return
        if p.tries >= self.max_retries:
            del self._pending[seq]
            self.stats.timeouts += 1
            p.future.set_exception(LinkTimeout(f"no ACK for seq {seq} after {p.tries} retries"))
            return
        p.tries += 1
        self.stats.retransmits += 1
        self.write(p.frame)
        self._arm(seq, p)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every outstanding send (the port went away)."""
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.timer:
                p.timer.cancel()
            if not p.future.done():
                p.future.set_exception(exc)

    def close(self, exc: BaseException) -> None:
        self._closed_exc = exc
        self.fail_all(LinkDown(str(exc)))

    def reopen(self) -> None:
        self._closed_exc = None

    @property
    def in_flight(self) -> int:
        return len(self._pending)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("background send failed: %s", task.exception())
