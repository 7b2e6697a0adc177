"""An MCU in software, on a pseudo-terminal: the gateway cannot tell it from firmware.

It speaks protocol v1 (docs/mcu-protocol.md) on the master side of a pty; the gateway opens
the slave path (``sim.path``). With ``link_path`` the simulator keeps a symlink there that
always points at its current pty, the way ``/dev/serial/by-id/...`` follows a USB device.

What it models, with the state a real MCU would keep in RAM or in flash:
  RAM (lost on ``reset()``): boot id, clock, frame seqs, the reading queue, a model transfer
    in progress, actuator positions.
  flash (kept across resets): the ring of executed actuator command ids with their results,
    committed models.
Faults on demand (``FaultConfig`` or ``--faults`` on the CLI): garbage bytes, dropped and
corrupted frames both ways, replayed reading batches, a reset mid-transfer, a slow link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import time
import tty
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from farmiq_sim.mcu.barn import Barn
from firmware_bridge.messages import (
    ACTUATOR_NAMES,
    MAX_READINGS_PER_BATCH,
    ActuatorCmd,
    ActuatorResultMsg,
    ActuatorStatus,
    AnyMessage,
    Capability,
    ErrorCode,
    ErrorMsg,
    Heartbeat,
    Hello,
    HelloReq,
    InferReq,
    InferResp,
    InferStatus,
    ModelLoadBegin,
    ModelLoadChunk,
    ModelLoadCommit,
    ModelLoadStatus,
    ModelLoadStatusMsg,
    MsgType,
    NackCode,
    RawReading,
    Readings,
)
from firmware_bridge.reliability import LinkError, ReliableEndpoint

log = logging.getLogger(__name__)

COMMAND_RING = 32
ACTUATOR_RANGE = {1: (0.0, 1.0), 2: (0.0, 1.0), 3: (0.0, 1.0), 4: (0.0, 1.0), 5: (0.0, 1.0)}


@dataclass
class FaultConfig:
    """Probabilities are per frame; ``slow_bps`` throttles the MCU's output."""

    garbage: float = 0.0  # random bytes (no 0x00-free guarantee) before a frame
    drop: float = 0.0  # an outgoing frame is lost
    corrupt: float = 0.0  # a byte of an outgoing frame is flipped
    rx_drop: float = 0.0  # an incoming chunk of bytes is lost
    rx_corrupt: float = 0.0  # a byte of an incoming chunk is flipped
    replay: float = 0.0  # an already-acknowledged reading batch is sent again
    slow_bps: int = 0  # 0 = full speed
    reset_after_chunks: int = 0  # reset once when this many model chunks have arrived
    corrupt_staging: bool = False  # flash write error: staged model bytes get damaged
    seed: int | None = None

    _PROBABILITIES = ("garbage", "drop", "corrupt", "rx_drop", "rx_corrupt", "replay")
    _COUNTS = ("slow_bps", "reset_after_chunks")

    def __post_init__(self) -> None:
        for name in self._PROBABILITIES:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:  # also refuses NaN
                raise ValueError(f"fault {name}={v}: a probability must be between 0 and 1")
        for name in self._COUNTS:
            v = getattr(self, name)
            if v < 0:
                raise ValueError(f"fault {name}={v}: must be 0 (off) or a positive number")

    @classmethod
    def parse(cls, spec: str) -> FaultConfig:
        """``"garbage=0.05,drop=0.02,slow_bps=9600,reset_after_chunks=3"``.

        Raises ValueError with a one-line reason for an unknown fault or a bad value.
        """
        values: dict[str, Any] = {}
        kinds = {f.name: f.type for f in fields(cls)}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, raw = part.partition("=")
            name = name.strip().replace("-", "_")
            raw = raw.strip()
            if name not in kinds:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(kinds)}")
            kind = str(kinds[name])
            try:
                if "bool" in kind:
                    if raw.lower() not in ("", "1", "true", "yes", "on", "0", "false", "no", "off"):
                        raise ValueError
                    values[name] = raw.lower() in ("", "1", "true", "yes", "on")
                elif "float" in kind:
                    values[name] = float(raw)
                else:
                    values[name] = int(raw)
            except ValueError:
                want = (
                    "on/off" if "bool" in kind else "a number" if "float" in kind else "an integer"
                )
                raise ValueError(f"fault {name}={raw!r}: expected {want}") from None
        return cls(**values)


@dataclass
class _Transfer:
    transfer: int
    model_id: str
    size: int
    sha256: bytes
    buf: bytearray
    have: set[int] = field(default_factory=set)  # offsets of chunks received
    received: int = 0


class MCUSimulator:
    def __init__(
        self,
        device_id: str = "sim-0001",
        *,
        faults: FaultConfig | None = None,
        reading_interval: float = 0.5,
        heartbeat_interval: float = 1.0,
        link_path: str | os.PathLike[str] | None = None,
        fw_version: str = "sim-1.0.0",
        model_capacity: int = 64 * 1024,
        arena_capacity: int = 16 * 1024,
        max_frame: int = 512,
        ack_timeout: float = 0.1,
        seed: int | None = None,
    ) -> None:
        self.device_id = device_id
        self.faults = faults or FaultConfig()
        self.reading_interval = reading_interval
        self.heartbeat_interval = heartbeat_interval
        self.link_path = Path(link_path) if link_path else None
        self.fw_version = fw_version
        self.model_capacity = model_capacity
        self.arena_capacity = arena_capacity  # TFLite Micro tensor arena, declared in HELLO
        self.max_frame = max_frame
        self.ack_timeout = ack_timeout
        self._rng = random.Random(self.faults.seed if self.faults.seed is not None else seed)
        self.barn = Barn(seed=seed)
        # flash
        self.command_ring: OrderedDict[int, ActuatorResultMsg] = OrderedDict()
        self.models: dict[str, bytes] = {}
        # observable counters for tests and the CLI
        self.executions: Counter[int] = Counter()  # command hash -> times the actuator ran
        self.readings_emitted: list[int] = []  # reading seqs of the current boot
        self.boots = 0
        self.chunks_seen = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._out: asyncio.Queue[bytes] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._micro_models: dict[str, Any] = {}
        self.endpoint: ReliableEndpoint | None = None

    # ---- lifecycle -----------------------------------------------------------------
    @property
    def path(self) -> str:
        """What the gateway should open: the stable link path or the pty slave."""
        return str(self.link_path) if self.link_path else self._slave_name

    async def start(self) -> str:
        self._open_pty()
        self._boot()
        return self.path

    async def stop(self) -> None:
        self._halt()
        self._close_pty()
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    def reset(self) -> None:
        """Reboot: RAM state is lost, flash (command ring, models) stays."""
        log.info("simulated reset of %s", self.device_id)
        self._halt()
        self._boot()

    async def unplug(self) -> None:
        """Pull the cable: the pty disappears, the MCU loses power and will reboot."""
        self._halt()
        self._close_pty()

    async def replug(self) -> str:
        """Plug back in: a new pty (usually a different /dev/pts number), then boot."""
        self._open_pty()
        self._boot()
        return self.path

    # ---- pty -----------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a byte pipe, like a UART
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_name = os.ttyname(slave)
        if self.link_path is not None:
            tmp = self.link_path.with_name(self.link_path.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(self._slave_name, tmp)
            os.replace(tmp, self.link_path)
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        self._out = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def _close_pty(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while nobody has the slave open: nothing to read
        if not data or self.endpoint is None:
            return
        f = self.faults
        if f.rx_drop and self._rng.random() < f.rx_drop:
            return
        if f.rx_corrupt and self._rng.random() < f.rx_corrupt:
            data = _flip(data, self._rng)
        self.endpoint.feed(data)

    def _write(self, frame: bytes) -> None:
        f = self.faults
        if f.drop and self._rng.random() < f.drop:
            return
        if f.corrupt and self._rng.random() < f.corrupt:
            frame = _flip(frame, self._rng)
        if f.garbage and self._rng.random() < f.garbage:
            frame = self._rng.randbytes(self._rng.randint(1, 40)) + frame
        if self._out is not None:
            self._out.put_nowait(frame)

    async def _write_loop(self) -> None:
        assert self._out is not None
        while True:
            data = await self._out.get()
            while not self._out.empty():
                data += self._out.get_nowait()
            if self.faults.slow_bps:
                await asyncio.sleep(len(data) * 10 / self.faults.slow_bps)
            if self._master is None:
                continue
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self._master, view)
                except BlockingIOError:
                    break  # UART without flow control: the bytes are lost
                except OSError:
                    break
                view = view[n:]

    # ---- boot ----------------------------------------------------------------------
    def _boot(self) -> None:
        self.boots += 1
        self.boot_id = self._rng.getrandbits(32)
        self._t0 = time.monotonic()
        self._session: int | None = None
        self._reading_seq = 0
        self.readings_emitted = []
        self._sent_batches: deque[Readings] = deque(maxlen=16)
        self._queue: deque[Readings] = deque(maxlen=64)
        self._transfer: _Transfer | None = None
        for name in ACTUATOR_NAMES.values():  # actuators come up off after a reset
            if name != "water_valve":
                setattr(self.barn, name, 0.0)
        self.endpoint = ReliableEndpoint(
            write=self._write,
            on_message=self._on_message,
            max_frame=self.max_frame,
            ack_timeout=self.ack_timeout,
            max_retries=6,
            window=4,
            initial_seq=self._rng.getrandbits(16),
            admit=self._admit,
        )
        self._hello_acked = asyncio.Event()
        self._qev = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._announce()),
            loop.create_task(self._sample_loop()),
            loop.create_task(self._send_loop()),
            loop.create_task(self._heartbeat_loop()),
        ]

    def _halt(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        if self.endpoint is not None:
            self.endpoint.close(ConnectionResetError("MCU reset"))
            self.endpoint = None

    def _admit(self, msg_type: int) -> NackCode | None:
        """Until the gateway ACKed this boot's HELLO, it may still think we are the MCU that
        was on this port before: run nothing it sends (BUSY makes it retry later)."""
        if self._hello_acked.is_set() or msg_type in (MsgType.HELLO_REQ, MsgType.HEARTBEAT):
            return None
        return NackCode.BUSY

    def mcu_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000) & 0xFFFFFFFF

    def _hello(self) -> Hello:
        caps = Capability.READINGS | Capability.ACTUATORS | Capability.MODEL_LOAD
        return Hello(
            proto=1,
            boot_id=self.boot_id,
            mcu_ms=self.mcu_ms(),
            max_frame=self.max_frame,
            caps=int(caps | Capability.INFER),
            model_capacity=self.model_capacity,
            arena_capacity=self.arena_capacity,
            model_slots=0,  # a model per id, as many as model_capacity allows each
            device_id=self.device_id,
            fw_version=self.fw_version,
        )

    async def _announce(self) -> None:
        """Send HELLO until it is ACKed; nothing else goes out before that."""
        ep = self.endpoint
        assert ep is not None
        while True:
            try:
                await ep.send(self._hello())
                self._hello_acked.set()
                return
            except LinkError:
                await asyncio.sleep(0.2)

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reading_interval)
            base = self.mcu_ms()
            items = tuple(
                RawReading(sensor, 0, value)
                for sensor, value in self.barn.sample(time.time()).items()
            )
            batch = Readings(self._reading_seq, base, items[:MAX_READINGS_PER_BATCH])
            self._reading_seq += len(batch.items)
            self.readings_emitted.extend(range(batch.first_seq, self._reading_seq))
            self._queue.append(batch)  # a full queue drops the oldest (RAM is small)
            self._qev.set()

    async def _send_loop(self) -> None:
        await self._hello_acked.wait()
        ev = self._qev
        while True:
            if not self._queue:
                ev.clear()
                await ev.wait()
                continue
            batch = self._queue[0]
            ep = self.endpoint
            assert ep is not None
            try:
                await ep.send(batch)
            except LinkError:
                await asyncio.sleep(0.2)  # keep it queued and try again (new frame seq)
                continue
            if self._queue and self._queue[0] is batch:
                self._queue.popleft()
            self._sent_batches.append(batch)
            f = self.faults
            if f.replay and self._sent_batches and self._rng.random() < f.replay:
                self._queue.append(self._rng.choice(list(self._sent_batches)))

    async def _heartbeat_loop(self) -> None:
        await self._hello_acked.wait()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            ep = self.endpoint
            if ep is not None and ep.in_flight < ep.window:
                ep.post(Heartbeat(self.mcu_ms(), 0))

    # ---- incoming ------------------------------------------------------------------
    def _post(self, msg: AnyMessage) -> None:
        """Send in the background; like all but HELLO, only once HELLO was ACKed."""
        ep = self.endpoint
        if ep is None:
            return
        if self._hello_acked.is_set():
            ep.post(msg)
            return

        async def later() -> None:
            await self._hello_acked.wait()
            await ep.send(msg)

        task = asyncio.get_running_loop().create_task(later())
        self._tasks.append(task)

    def _on_message(self, seq: int, msg: AnyMessage) -> None:
        if isinstance(msg, HelloReq):
            if msg.session != self._session and self.endpoint is not None:
                self._session = msg.session
                self.endpoint.reset_rx_window()
            if self._hello_acked.is_set():
                self._post(self._hello())
        elif isinstance(msg, ActuatorCmd):
            self._on_actuator(msg)
        elif isinstance(msg, ModelLoadBegin):
            self._on_begin(msg)
        elif isinstance(msg, ModelLoadChunk):
            self._on_chunk(seq, msg)
        elif isinstance(msg, ModelLoadCommit):
            self._on_commit(msg)
        elif isinstance(msg, InferReq):
            self._on_infer(msg)
        elif isinstance(msg, Heartbeat | ErrorMsg):
            pass
        else:
            self._post(ErrorMsg(ErrorCode.MALFORMED, msg.TYPE, seq, "unexpected message"))

    def _on_actuator(self, cmd: ActuatorCmd) -> None:
        stored = self.command_ring.get(cmd.command_id)
        if stored is not None:  # already run: answer the stored result, run nothing
            self._post(
                ActuatorResultMsg(
                    stored.command_id, stored.actuator, stored.status, True, stored.applied,
                    self.mcu_ms(),
                )
            )  # fmt: skip
            return
        status, applied = ActuatorStatus.OK, cmd.value
        if cmd.actuator not in ACTUATOR_NAMES:
            status, applied = ActuatorStatus.UNKNOWN_ACTUATOR, 0.0
        else:
            lo, hi = ACTUATOR_RANGE[cmd.actuator]
            if not lo <= cmd.value <= hi:
                status, applied = ActuatorStatus.OUT_OF_RANGE, 0.0
        result = ActuatorResultMsg(cmd.command_id, cmd.actuator, status, False, applied, 0)
        # Persist first, then move the actuator: a reset in between never runs it twice.
        self.command_ring[cmd.command_id] = result
        while len(self.command_ring) > COMMAND_RING:
            self.command_ring.popitem(last=False)
        if status == ActuatorStatus.OK:
            self.executions[cmd.command_id] += 1
            setattr(self.barn, ACTUATOR_NAMES[cmd.actuator], applied)
        self._post(
            ActuatorResultMsg(cmd.command_id, cmd.actuator, status, False, applied, self.mcu_ms())
        )

    def _status(self, t: _Transfer | None, transfer: int, status: ModelLoadStatus) -> None:
        self._post(
            ModelLoadStatusMsg(transfer, status, t.received if t else 0, t.model_id if t else "")
        )

    def _on_begin(self, m: ModelLoadBegin) -> None:
        if self._transfer is not None and self._transfer.transfer == m.transfer:
            self._status(self._transfer, m.transfer, ModelLoadStatus.READY)  # retransmitted
            return
        if m.size > self.model_capacity:
            self._transfer = None
            self._status(None, m.transfer, ModelLoadStatus.TOO_LARGE)
            return
        self._transfer = _Transfer(m.transfer, m.model_id, m.size, m.sha256, bytearray(m.size))
        self._status(self._transfer, m.transfer, ModelLoadStatus.READY)

    def _on_chunk(self, seq: int, m: ModelLoadChunk) -> None:
        t = self._transfer
        if t is None or t.transfer != m.transfer:
            self._post(
                ErrorMsg(ErrorCode.NO_TRANSFER, MsgType.MODEL_LOAD_CHUNK, seq, "no transfer")
            )
            return
        if m.offset + len(m.data) > t.size:
            self._post(ErrorMsg(ErrorCode.MALFORMED, MsgType.MODEL_LOAD_CHUNK, seq, "past end"))
            return
        t.buf[m.offset : m.offset + len(m.data)] = m.data
        if m.offset not in t.have:
            t.have.add(m.offset)
            t.received += len(m.data)
        self.chunks_seen += 1
        if self.faults.corrupt_staging and t.received == t.size and t.size:
            t.buf[t.size // 2] ^= 0xFF
        if self.faults.reset_after_chunks and self.chunks_seen == self.faults.reset_after_chunks:
            asyncio.get_running_loop().call_soon(self.reset)

    def _on_commit(self, m: ModelLoadCommit) -> None:
        t = self._transfer
        if t is None or t.transfer != m.transfer:
            self._status(None, m.transfer, ModelLoadStatus.NO_TRANSFER)
            return
        if t.received != t.size:
            self._status(t, m.transfer, ModelLoadStatus.INCOMPLETE)
            return
        if hashlib.sha256(t.buf).digest() != t.sha256:
            self._transfer = None
            self._status(t, m.transfer, ModelLoadStatus.HASH_MISMATCH)
            return
        try:
            micro = _load_micro(bytes(t.buf), self.arena_capacity)
        except ValueError as exc:
            log.warning("model %s rejected: %s", t.model_id, exc)
            self._transfer = None
            self._status(t, m.transfer, ModelLoadStatus.INVALID_MODEL)
            return
        # The swap: one assignment each, after every check passed.
        self.models[t.model_id] = bytes(t.buf)
        self._micro_models[t.model_id] = micro
        self._status(t, m.transfer, ModelLoadStatus.COMMITTED)
        # keep the transfer so a retransmitted COMMIT gets COMMITTED again

    def _on_infer(self, m: InferReq) -> None:
        micro = self._micro_models.get(m.model_id)
        if micro is None and m.model_id in self.models:
            micro = self._micro_models[m.model_id] = _load_micro(
                self.models[m.model_id], self.arena_capacity
            )
        if micro is None:
            self._post(InferResp(m.request, InferStatus.NO_MODEL, 0, 0, ()))
            return
        if m.rows == 0 or len(m.values) != m.rows * micro.n_inputs:
            self._post(InferResp(m.request, InferStatus.BAD_SHAPE, 0, 0, ()))
            return
        t0 = time.perf_counter()
        try:
            out = micro.run(np.asarray(m.values, dtype=np.float32))
        except Exception as exc:
            log.warning("inference failed: %s", exc)
            self._post(InferResp(m.request, InferStatus.RUNTIME_ERROR, 0, 0, ()))
            return
        us = int((time.perf_counter() - t0) * 1e6)
        self._post(InferResp(m.request, InferStatus.OK, m.rows, us, tuple(out.ravel().tolist())))


def _load_micro(model: bytes, arena_size: int) -> Any:
    from farmiq_sim.mcu.tflm_runner import MicroModel  # TFLite Micro only when a model arrives

    return MicroModel(model, arena_size)


def _flip(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    i = rng.randrange(len(b))
    b[i] ^= 1 << rng.randrange(8)
    return bytes(b)
