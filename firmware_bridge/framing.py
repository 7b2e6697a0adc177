"""Frame codec for the MCU serial protocol (docs/mcu-protocol.md, section 1).

wire = COBS(version:u8 type:u8 seq:u16 payload crc16) 0x00

COBS comes from the well-kept ``cobs`` package (C implementation). The CRC is
CRC-16/CCITT-FALSE, which the standard library already has in C as ``binascii.crc_hqx``
(with init 0xFFFF), so no CRC package is needed.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field

from cobs import cobs

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"
HEADER = struct.Struct("<BBH")
HEADER_SIZE = HEADER.size  # 4
CRC_SIZE = 2
MIN_FRAME = HEADER_SIZE + CRC_SIZE
DEFAULT_MAX_FRAME = 512


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)."""
    return binascii.crc_hqx(data, 0xFFFF)


def max_encoded_size(max_frame: int) -> int:
    """Upper bound of the COBS-encoded size of a frame of ``max_frame`` bytes."""
    return max_frame + max_frame // 254 + 1


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded, CRC-checked frame."""

    version: int
    type: int
    seq: int
    payload: bytes


class FrameTooLarge(ValueError):
    """The frame would exceed the peer's maximum frame size."""


def encode_frame(
    msg_type: int,
    seq: int,
    payload: bytes = b"",
    *,
    version: int = PROTOCOL_VERSION,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> bytes:
    """Build the on-wire bytes of one frame, delimiter included."""
    body = HEADER.pack(version & 0xFF, msg_type & 0xFF, seq & 0xFFFF) + payload
    if len(body) + CRC_SIZE > max_frame:
        raise FrameTooLarge(f"frame of {len(body) + CRC_SIZE} bytes exceeds max {max_frame}")
    body += crc16(body).to_bytes(2, "little")
    return cobs.encode(body) + DELIMITER


@dataclass
class DecoderStats:
    frames: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    short_frames: int = 0
    oversize: int = 0

    @property
    def errors(self) -> int:
        return self.crc_errors + self.cobs_errors + self.short_frames + self.oversize


@dataclass
class FrameDecoder:
    """Streaming decoder: feed it any bytes, get back the valid frames.

    It never raises on input: bad COBS, short frames, bad CRC and runaway frames without a
    delimiter are counted in ``stats`` and dropped, and decoding resumes at the next
    0x00 delimiter.
    """

    max_frame: int = DEFAULT_MAX_FRAME
    stats: DecoderStats = field(default_factory=DecoderStats)
    _buf: bytearray = field(default_factory=bytearray)
    _discarding: bool = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        limit = max_encoded_size(self.max_frame)
        start = 0
        while True:
            end = data.find(0, start)
            if end < 0:
                chunk = data[start:]
                if not self._discarding:
                    self._buf += chunk
                    if len(self._buf) > limit:
                        self.stats.oversize += 1
                        self._buf.clear()
                        self._discarding = True
                return frames
            if self._discarding:
                self._discarding = False
            else:
                self._buf += data[start:end]
                if len(self._buf) > limit:
                    self.stats.oversize += 1
                else:
                    frame = self._decode(bytes(self._buf))
                    if frame is not None:
                        frames.append(frame)
            self._buf.clear()
            start = end + 1

    def _decode(self, encoded: bytes) -> Frame | None:
        if not encoded:
            return None  # back-to-back delimiters: idle/flush, not an error
        try:
            body = cobs.decode(encoded)
        except cobs.DecodeError:
            self.stats.cobs_errors += 1
            return None
        if len(body) < MIN_FRAME:
            self.stats.short_frames += 1
            return None
        if crc16(body[:-CRC_SIZE]) != int.from_bytes(body[-CRC_SIZE:], "little"):
            self.stats.crc_errors += 1
            return None
        version, msg_type, seq = HEADER.unpack_from(body)
        self.stats.frames += 1
        return Frame(version, msg_type, seq, body[HEADER_SIZE:-CRC_SIZE])
