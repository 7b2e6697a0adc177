"""Property tests of the frame codec and message codec: any input, no exception, resync."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.framing import (
    DEFAULT_MAX_FRAME,
    Frame,
    FrameDecoder,
    encode_frame,
    max_encoded_size,
)
from firmware_bridge.messages import (
    ActuatorCmd,
    Hello,
    InferReq,
    MessageError,
    ModelLoadBegin,
    MsgType,
    RawReading,
    Readings,
    decode_message,
)

payloads = st.binary(max_size=DEFAULT_MAX_FRAME - 6)
frames = st.builds(Frame, st.just(1), st.integers(0, 255), st.integers(0, 0xFFFF), payloads)


def enc(f: Frame) -> bytes:
    return encode_frame(f.type, f.seq, f.payload)


@given(st.lists(frames, max_size=8), st.integers(1, 64))
def test_roundtrip_in_any_chunking(fs: list[Frame], chunk: int) -> None:
    stream = b"".join(enc(f) for f in fs)
    dec = FrameDecoder()
    out: list[Frame] = []
    for i in range(0, len(stream), chunk):
        out += dec.feed(stream[i : i + chunk])
    assert out == fs
    assert dec.stats.errors == 0


@given(st.binary(max_size=4096))
def test_any_bytes_never_raise(data: bytes) -> None:
    dec = FrameDecoder()
    for f in dec.feed(data):  # whatever comes out passed the CRC: it is well formed
        assert 0 <= f.seq <= 0xFFFF
        assert len(f.payload) <= DEFAULT_MAX_FRAME - 6


@given(st.binary(min_size=1, max_size=600), frames, frames)
def test_resync_after_garbage(garbage: bytes, f1: Frame, f2: Frame) -> None:
    # Garbage swallows at most the frame it runs into; the next frame always comes through.
    dec = FrameDecoder()
    out = dec.feed(garbage + enc(f1) + enc(f2))
    assert out[-1] == f2
    assert dec.feed(enc(f1)) == [f1]  # and the decoder is clean afterwards


@settings(max_examples=300)
@given(st.lists(frames, min_size=3, max_size=6), st.data())
def test_single_bit_error_never_yields_a_wrong_frame(fs: list[Frame], data: st.DataObject) -> None:
    stream = bytearray(b"".join(enc(f) for f in fs))
    pos = data.draw(st.integers(0, len(stream) - 1))
    stream[pos] ^= 1 << data.draw(st.integers(0, 7))
    dec = FrameDecoder()
    out = dec.feed(bytes(stream))
    assert all(f in fs for f in out), "a corrupted frame passed the CRC"
    # one flipped bit costs at most the frame it hit and, if it hit a delimiter, its neighbour
    assert len(out) >= len(fs) - 2
    assert dec.stats.errors >= 1 or len(out) < len(fs)


def test_runaway_frame_is_dropped_and_decoder_recovers() -> None:
    dec = FrameDecoder()
    good = encode_frame(MsgType.HEARTBEAT, 7, b"\x01\x02\x03\x04\x00")
    out = dec.feed(b"\x55" * (max_encoded_size(DEFAULT_MAX_FRAME) * 3))
    assert out == []
    out = dec.feed(b"\x00" + good)
    assert [f.seq for f in out] == [7]
    assert dec.stats.oversize == 1


def test_wire_overhead_for_256_byte_payload() -> None:
    wire = encode_frame(MsgType.MODEL_LOAD_CHUNK, 1, bytes(range(256)))
    assert len(wire) / 256 <= 1.05
    wire = encode_frame(MsgType.MODEL_LOAD_CHUNK, 1, b"\x00" * 256)  # worst case for COBS
    assert len(wire) / 256 <= 1.05


msg_types = st.sampled_from([int(t) for t in MsgType] + [0, 0x99])


@given(msg_types, st.binary(max_size=300))
def test_decode_message_only_raises_message_error(msg_type: int, payload: bytes) -> None:
    try:
        decode_message(msg_type, payload)
    except MessageError:
        pass


f32 = st.floats(width=32, allow_nan=False)
u32 = st.integers(0, 2**32 - 1)
messages = st.one_of(
    st.builds(
        Readings,
        u32,
        u32,
        st.lists(
            st.builds(RawReading, st.integers(0, 255), st.integers(0, 0xFFFF), f32), max_size=34
        ).map(tuple),
    ),
    st.builds(ActuatorCmd, st.integers(0, 2**64 - 1), st.integers(0, 255), f32),
    st.builds(
        Hello,
        st.integers(0, 255),
        u32,
        u32,
        st.integers(64, 0xFFFF),
        u32,
        u32,
        st.text(min_size=1, max_size=40),
        st.text(max_size=40),
    ),
    st.builds(
        ModelLoadBegin,
        st.integers(0, 0xFFFF),
        u32,
        st.binary(min_size=32, max_size=32),
        st.text(max_size=40),
    ),
    st.builds(
        InferReq,
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.text(max_size=20),
        st.lists(f32, max_size=20).map(tuple),
    ),
)


@given(messages)
def test_message_roundtrip(msg: object) -> None:
    packed = msg.pack()  # type: ignore[attr-defined]
    assert decode_message(msg.TYPE, packed) == msg  # type: ignore[attr-defined]


def test_truncated_readings_is_an_error_not_a_crash() -> None:
    good = Readings(1, 2, (RawReading(1, 0, 1.5), RawReading(2, 0, 2.5))).pack()
    for cut in range(len(good)):
        try:
            decode_message(MsgType.READINGS, good[:cut])
        except MessageError:
            continue
        raise AssertionError(f"truncation at {cut} was accepted")
