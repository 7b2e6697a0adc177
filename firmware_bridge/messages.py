"""Typed messages of the MCU protocol and their compact binary form (docs/mcu-protocol.md).

Each wire message is a frozen dataclass with ``TYPE``, ``pack()`` and ``unpack(payload)``.
``decode_message(type, payload)`` raises :class:`MessageError` (a ValueError) on anything
malformed. The public result types of the manager (:class:`Reading`, :class:`MCUInfo`,
:class:`ActuatorResult`) live here too, so importing them stays light (stdlib only).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self


class MsgType(enum.IntEnum):
    ACK = 0x01
    NACK = 0x02
    HELLO_REQ = 0x03
    HELLO = 0x04
    HEARTBEAT = 0x05
    READINGS = 0x10
    ACTUATOR_CMD = 0x20
    ACTUATOR_RESULT = 0x21
    MODEL_LOAD_BEGIN = 0x30
    MODEL_LOAD_CHUNK = 0x31
    MODEL_LOAD_COMMIT = 0x32
    MODEL_LOAD_STATUS = 0x33
    INFER_REQ = 0x40
    INFER_RESP = 0x41
    ERROR = 0x7F


class NackCode(enum.IntEnum):
    UNSUPPORTED_VERSION = 1
    UNKNOWN_TYPE = 2
    MALFORMED = 3
    TOO_LARGE = 4
    BUSY = 5


class Capability(enum.IntFlag):
    READINGS = 1
    ACTUATORS = 2
    MODEL_LOAD = 4
    INFER = 8


class ActuatorStatus(enum.IntEnum):
    OK = 0
    UNKNOWN_ACTUATOR = 1
    OUT_OF_RANGE = 2
    FAULT = 3


class ModelLoadStatus(enum.IntEnum):
    READY = 0
    COMMITTED = 1
    TOO_LARGE = 2
    HASH_MISMATCH = 3
    INCOMPLETE = 4
    INVALID_MODEL = 5
    NO_TRANSFER = 6


class InferStatus(enum.IntEnum):
    OK = 0
    NO_MODEL = 1
    BAD_SHAPE = 2
    RUNTIME_ERROR = 3


class ErrorCode(enum.IntEnum):
    MALFORMED = 0x0101
    UNKNOWN_ACTUATOR = 0x0201
    NO_TRANSFER = 0x0301
    NO_MODEL = 0x0401
    INTERNAL = 0x0501


SENSOR_NAMES: dict[int, str] = {
    1: "temperature_c",
    2: "humidity_pct",
    3: "nh3_ppm",
    4: "co2_ppm",
    5: "water_l_min",
    6: "feed_kg_h",
}
SENSOR_IDS: dict[str, int] = {v: k for k, v in SENSOR_NAMES.items()}

ACTUATOR_NAMES: dict[int, str] = {1: "fan", 2: "heater", 3: "feeder", 4: "light", 5: "water_valve"}
ACTUATOR_IDS: dict[str, int] = {v: k for k, v in ACTUATOR_NAMES.items()}

MAX_READINGS_PER_BATCH = 34  # 13 + 7 * 34 = 251 payload bytes


def sensor_name(sensor_id: int) -> str:
    return SENSOR_NAMES.get(sensor_id, f"sensor_{sensor_id}")


def command_hash(command_id: str) -> int:
    """The 64-bit wire id of a command id string.

    BLAKE2b with ``digest_size=8`` (an 8-byte BLAKE2b, which is *not* the first 8 bytes of
    the default 64-byte BLAKE2b: the digest size is part of BLAKE2's parameter block) over
    the UTF-8 bytes of the id, no key, read as a little-endian u64.
    """
    return int.from_bytes(hashlib.blake2b(command_id.encode(), digest_size=8).digest(), "little")


class MessageError(ValueError):
    """A payload that does not decode as its message type."""


def _str8(s: str) -> bytes:
    raw = s.encode()
    if len(raw) > 255:
        raise ValueError(f"string too long for the wire ({len(raw)} > 255 bytes)")
    return bytes([len(raw)]) + raw


def _read_str8(buf: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(buf):
        raise MessageError("missing string length")
    n = buf[pos]
    end = pos + 1 + n
    if end > len(buf):
        raise MessageError("string runs past payload")
    try:
        return buf[pos + 1 : end].decode(), end
    except UnicodeDecodeError as exc:
        raise MessageError("string is not UTF-8") from exc


def _unpack(st: struct.Struct, buf: bytes, pos: int = 0) -> tuple:
    if len(buf) < pos + st.size:
        raise MessageError(f"payload too short: {len(buf)} < {pos + st.size}")
    return st.unpack_from(buf, pos)


def _exact(buf: bytes, end: int) -> None:
    if len(buf) != end:
        raise MessageError(f"{len(buf) - end} unexpected trailing bytes")


class Message(Protocol):
    TYPE: ClassVar[MsgType]

    def pack(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Nack:
    TYPE: ClassVar[MsgType] = MsgType.NACK
    code: NackCode
    _S: ClassVar[struct.Struct] = struct.Struct("<B")

    def pack(self) -> bytes:
        return self._S.pack(self.code)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        (code,) = _unpack(cls._S, p)
        _exact(p, 1)
        try:
            return cls(NackCode(code))
        except ValueError as exc:
            raise MessageError(f"unknown NACK code {code}") from exc


@dataclass(frozen=True, slots=True)
class HelloReq:
    TYPE: ClassVar[MsgType] = MsgType.HELLO_REQ
    session: int
    _S: ClassVar[struct.Struct] = struct.Struct("<I")

    def pack(self) -> bytes:
        return self._S.pack(self.session)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        (session,) = _unpack(cls._S, p)
        _exact(p, cls._S.size)
        return cls(session)


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[MsgType] = MsgType.HELLO
    proto: int
    boot_id: int
    mcu_ms: int
    max_frame: int
    caps: int
    model_capacity: int
    device_id: str
    fw_version: str
    # Optional tail (absent in older firmware, then 0 = not declared): the RAM the MCU
    # gives a model's tensor arena and its number of model slots (2 = A/B).
    arena_capacity: int = 0
    model_slots: int = 0
    _S: ClassVar[struct.Struct] = struct.Struct("<BIIHII")
    _TAIL: ClassVar[struct.Struct] = struct.Struct("<IB")

    def pack(self) -> bytes:
        head = self._S.pack(
            self.proto, self.boot_id, self.mcu_ms, self.max_frame, self.caps, self.model_capacity
        )
        tail = self._TAIL.pack(self.arena_capacity, self.model_slots)
        return head + _str8(self.device_id) + _str8(self.fw_version) + tail

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        proto, boot_id, mcu_ms, max_frame, caps, cap = _unpack(cls._S, p)
        device_id, pos = _read_str8(p, cls._S.size)
        fw, pos = _read_str8(p, pos)
        arena = slots = 0
        if len(p) > pos:
            arena, slots = _unpack(cls._TAIL, p, pos)
            pos += cls._TAIL.size
        _exact(p, pos)
        if not device_id:
            raise MessageError("HELLO without a device id")
        if max_frame < 64:
            raise MessageError(f"max_frame {max_frame} is below the protocol minimum of 64")
        return cls(proto, boot_id, mcu_ms, max_frame, caps, cap, device_id, fw, arena, slots)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    mcu_ms: int
    status: int = 0
    _S: ClassVar[struct.Struct] = struct.Struct("<IB")

    def pack(self) -> bytes:
        return self._S.pack(self.mcu_ms, self.status)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        mcu_ms, status = _unpack(cls._S, p)
        _exact(p, cls._S.size)
        return cls(mcu_ms, status)


@dataclass(frozen=True, slots=True)
class RawReading:
    sensor: int
    dt_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class Readings:
    TYPE: ClassVar[MsgType] = MsgType.READINGS
    first_seq: int
    base_ms: int
    items: tuple[RawReading, ...]
    _S: ClassVar[struct.Struct] = struct.Struct("<IIB")
    _R: ClassVar[struct.Struct] = struct.Struct("<BHf")

    def pack(self) -> bytes:
        if len(self.items) > MAX_READINGS_PER_BATCH:
            raise ValueError(f"at most {MAX_READINGS_PER_BATCH} readings per batch")
        out = bytearray(self._S.pack(self.first_seq, self.base_ms, len(self.items)))
        for r in self.items:
            out += self._R.pack(r.sensor, r.dt_ms, r.value)
        return bytes(out)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        first_seq, base_ms, count = _unpack(cls._S, p)
        _exact(p, cls._S.size + count * cls._R.size)
        items = tuple(
            RawReading(*cls._R.unpack_from(p, cls._S.size + i * cls._R.size)) for i in range(count)
        )
        return cls(first_seq, base_ms, items)


@dataclass(frozen=True, slots=True)
class ActuatorCmd:
    TYPE: ClassVar[MsgType] = MsgType.ACTUATOR_CMD
    command_id: int
    actuator: int
    value: float
    _S: ClassVar[struct.Struct] = struct.Struct("<QBf")

    def pack(self) -> bytes:
        return self._S.pack(self.command_id, self.actuator, self.value)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        cid, act, value = _unpack(cls._S, p)
        _exact(p, cls._S.size)
        return cls(cid, act, value)


@dataclass(frozen=True, slots=True)
class ActuatorResultMsg:
    TYPE: ClassVar[MsgType] = MsgType.ACTUATOR_RESULT
    command_id: int
    actuator: int
    status: int
    duplicate: bool
    applied: float
    mcu_ms: int
    _S: ClassVar[struct.Struct] = struct.Struct("<QBBBfI")

    def pack(self) -> bytes:
        return self._S.pack(
            self.command_id, self.actuator, self.status, int(self.duplicate), self.applied,
            self.mcu_ms,
        )  # fmt: skip

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        cid, act, status, dup, applied, ms = _unpack(cls._S, p)
        _exact(p, cls._S.size)
        return cls(cid, act, status, bool(dup), applied, ms)


@dataclass(frozen=True, slots=True)
class ModelLoadBegin:
    TYPE: ClassVar[MsgType] = MsgType.MODEL_LOAD_BEGIN
    transfer: int
    size: int
    sha256: bytes
    model_id: str
    _S: ClassVar[struct.Struct] = struct.Struct("<HI32s")

    def pack(self) -> bytes:
        return self._S.pack(self.transfer, self.size, self.sha256) + _str8(self.model_id)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        transfer, size, digest = _unpack(cls._S, p)
        model_id, pos = _read_str8(p, cls._S.size)
        _exact(p, pos)
        return cls(transfer, size, digest, model_id)


@dataclass(frozen=True, slots=True)
class ModelLoadChunk:
    TYPE: ClassVar[MsgType] = MsgType.MODEL_LOAD_CHUNK
    transfer: int
    offset: int
    data: bytes
    _S: ClassVar[struct.Struct] = struct.Struct("<HI")
    OVERHEAD: ClassVar[int] = 6

    def pack(self) -> bytes:
        return self._S.pack(self.transfer, self.offset) + self.data

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        transfer, offset = _unpack(cls._S, p)
        return cls(transfer, offset, bytes(p[cls._S.size :]))


@dataclass(frozen=True, slots=True)
class ModelLoadCommit:
    TYPE: ClassVar[MsgType] = MsgType.MODEL_LOAD_COMMIT
    transfer: int
    _S: ClassVar[struct.Struct] = struct.Struct("<H")

    def pack(self) -> bytes:
        return self._S.pack(self.transfer)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        (transfer,) = _unpack(cls._S, p)
        _exact(p, cls._S.size)
        return cls(transfer)


@dataclass(frozen=True, slots=True)
class ModelLoadStatusMsg:
    TYPE: ClassVar[MsgType] = MsgType.MODEL_LOAD_STATUS
    transfer: int
    status: int
    received: int
    model_id: str
    _S: ClassVar[struct.Struct] = struct.Struct("<HBI")

    def pack(self) -> bytes:
        return self._S.pack(self.transfer, self.status, self.received) + _str8(self.model_id)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        transfer, status, received = _unpack(cls._S, p)
        model_id, pos = _read_str8(p, cls._S.size)
        _exact(p, pos)
        return cls(transfer, status, received, model_id)


def _floats(p: bytes, pos: int) -> tuple[float, ...]:
    n, rem = divmod(len(p) - pos, 4)
    if rem:
        raise MessageError("float data is not a whole number of f32")
    return struct.unpack_from(f"<{n}f", p, pos)


@dataclass(frozen=True, slots=True)
class InferReq:
    TYPE: ClassVar[MsgType] = MsgType.INFER_REQ
    request: int
    rows: int
    model_id: str
    values: tuple[float, ...]
    _S: ClassVar[struct.Struct] = struct.Struct("<HH")

    def pack(self) -> bytes:
        head = self._S.pack(self.request, self.rows) + _str8(self.model_id)
        return head + struct.pack(f"<{len(self.values)}f", *self.values)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        request, rows = _unpack(cls._S, p)
        model_id, pos = _read_str8(p, cls._S.size)
        return cls(request, rows, model_id, _floats(p, pos))


@dataclass(frozen=True, slots=True)
class InferResp:
    TYPE: ClassVar[MsgType] = MsgType.INFER_RESP
    request: int
    status: int
    rows: int
    latency_us: int
    values: tuple[float, ...]
    _S: ClassVar[struct.Struct] = struct.Struct("<HBHI")

    def pack(self) -> bytes:
        head = self._S.pack(self.request, self.status, self.rows, self.latency_us)
        return head + struct.pack(f"<{len(self.values)}f", *self.values)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        request, status, rows, lat = _unpack(cls._S, p)
        return cls(request, status, rows, lat, _floats(p, cls._S.size))


@dataclass(frozen=True, slots=True)
class ErrorMsg:
    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: int
    ref_type: int
    ref_seq: int
    message: str
    _S: ClassVar[struct.Struct] = struct.Struct("<HBH")

    def pack(self) -> bytes:
        msg = self.message.encode()[:255].decode(errors="ignore")
        return self._S.pack(self.code, self.ref_type, self.ref_seq) + _str8(msg)

    @classmethod
    def unpack(cls, p: bytes) -> Self:
        code, ref_type, ref_seq = _unpack(cls._S, p)
        message, pos = _read_str8(p, cls._S.size)
        _exact(p, pos)
        return cls(code, ref_type, ref_seq, message)


AnyMessage = (
    Nack | HelloReq | Hello | Heartbeat | Readings | ActuatorCmd | ActuatorResultMsg
    | ModelLoadBegin | ModelLoadChunk | ModelLoadCommit | ModelLoadStatusMsg | InferReq
    | InferResp | ErrorMsg
)  # fmt: skip

_DECODERS: dict[int, Any] = {
    cls.TYPE: cls
    for cls in (
        Nack,
        HelloReq,
        Hello,
        Heartbeat,
        Readings,
        ActuatorCmd,
        ActuatorResultMsg,
        ModelLoadBegin,
        ModelLoadChunk,
        ModelLoadCommit,
        ModelLoadStatusMsg,
        InferReq,
        InferResp,
        ErrorMsg,
    )
}


def is_known_type(msg_type: int) -> bool:
    return msg_type in _DECODERS or msg_type == MsgType.ACK


def decode_message(msg_type: int, payload: bytes) -> AnyMessage:
    """Decode one payload; raises MessageError for unknown types or bad payloads."""
    cls = _DECODERS.get(msg_type)
    if cls is None:
        raise MessageError(f"unknown message type 0x{msg_type:02x}")
    try:
        msg: AnyMessage = cls.unpack(payload)
    except struct.error as exc:  # defensive: _unpack checks sizes first
        raise MessageError(str(exc)) from exc
    return msg


# ---- public result types of the manager ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One sensor reading, stamped in gateway time."""

    device_id: str
    sensor: str
    value: float
    timestamp: float  # gateway clock, epoch seconds
    mcu_seq: int  # per-boot reading sequence number on the MCU
    boot_id: int = 0


@dataclass(frozen=True, slots=True)
class MCUInfo:
    device_id: str
    fw_version: str
    boot_id: int
    capabilities: Capability
    max_frame: int
    model_capacity: int
    port: str  # the URL it is attached on now (informative; identity is device_id)
    online: bool
    models: tuple[str, ...] = field(default_factory=tuple)
    arena_capacity: int = 0  # bytes of tensor arena the MCU declared (0: not declared)
    model_slots: int = 0


@dataclass(frozen=True, slots=True)
class ActuatorResult:
    device_id: str
    actuator: str
    command_id: str
    status: ActuatorStatus
    applied_value: float
    duplicate: bool  # True when the MCU had already run this command id

    @property
    def ok(self) -> bool:
        return self.status == ActuatorStatus.OK
