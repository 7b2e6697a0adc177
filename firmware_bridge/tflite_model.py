"""What an MCU model (.tflite) needs, read from the file itself: flash, arena, operators.

The gateway checks a model against the budget an MCU declared in HELLO (model slot size,
tensor arena) *before* it sends a byte, so a model that cannot run there is refused on the
gateway with a clear reason instead of after a transfer. This needs no TFLite runtime: a
.tflite file is a FlatBuffer, and the few fields used here (tensors with shape, type and
buffer; operators and their codes) are read with ``struct`` and bounds checks. We read the
FlatBuffer by hand because the gateway must not depend on TensorFlow or tflite-micro (a
sim/dev package), and the generated ``tflite`` schema package is unmaintained; the layout
(root offset, vtables, vectors) is stable since FlatBuffers 1.0.

The arena estimate is deliberately an upper bound of what TFLite Micro plans (tested
against the tflite-micro interpreter in tests/firmware_bridge/test_mcu_tflite_micro.py):
every non-constant tensor gets its own 16-byte aligned buffer (no memory reuse), plus a
fixed per-tensor, per-operator and per-model overhead for the runtime's bookkeeping.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# TensorType -> bytes per element (schema.fbs); unknown types are refused.
_TYPE_SIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 16: 4}
_TYPE_NAME = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool",
              7: "int16", 9: "int8", 10: "float64", 16: "uint32"}  # fmt: skip
BUILTIN_OPS = {
    0: "ADD", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 18: "MUL", 19: "RELU",
    21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 28: "TANH", 41: "SUB", 114: "QUANTIZE",
}  # fmt: skip

# Overheads of the arena estimate, sized for a 64-bit host (the larger case): TFLite
# Micro keeps a TfLiteEvalTensor and, while planning, temporary TfLiteTensor structs per
# tensor, a node and op data per operator, and the planner's own records.
ARENA_PER_TENSOR = 128
ARENA_PER_OP = 256
ARENA_FIXED = 1024
ALIGN = 16


class ModelFormatError(ValueError):
    """The bytes are not a .tflite model this check can read."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    constant: bool  # has data in the file (weights, biases, constants)


@dataclass(frozen=True, slots=True)
class ModelNeeds:
    flash_bytes: int  # the file as stored in a model slot
    arena_bytes: int  # upper bound of the tensor arena at run time
    activation_bytes: int  # sum of the non-constant tensors
    ops: tuple[str, ...]
    tensors: tuple[TensorInfo, ...]


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.d = data

    def u8(self, pos: int) -> int:
        return self._get("<B", pos)

    def u16(self, pos: int) -> int:
        return self._get("<H", pos)

    def i32(self, pos: int) -> int:
        return self._get("<i", pos)

    def u32(self, pos: int) -> int:
        return self._get("<I", pos)

    def _get(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.d):
            raise ModelFormatError(f"offset {pos} runs past the {len(self.d)}-byte model")
        return int(struct.unpack_from(fmt, self.d, pos)[0])

    def field(self, table: int, index: int) -> int:
        """Absolute position of field ``index`` of ``table``, or 0 when absent."""
        vtable = table - self.i32(table)
        vt_size = self.u16(vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return 0
        off = self.u16(vtable + slot)
        return table + off if off else 0

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) if absent."""
        pos = self.field(table, index)
        if not pos:
            return 0, 0
        vec = self.deref(pos)
        n = self.u32(vec)
        if n > len(self.d):
            raise ModelFormatError("vector length past the end of the model")
        return vec + 4, n

    def tables(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index)
        return [self.deref(start + 4 * i) for i in range(n)]

    def ints(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index)
        return [self.i32(start + 4 * i) for i in range(n)]


def model_needs(model: bytes) -> ModelNeeds:
    """Parse ``model`` and say what it needs; raises ModelFormatError when unreadable."""
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ModelFormatError("not a .tflite model (no TFL3 identifier)")
    b = _Buf(bytes(model))
    root = b.deref(0)
    buffers = b.tables(root, 4)
    subgraphs = b.tables(root, 2)
    if len(subgraphs) != 1:
        raise ModelFormatError(f"MCU models have one subgraph, this one has {len(subgraphs)}")
    codes = []
    for oc in b.tables(root, 1):
        pos = b.field(oc, 3)
        code = b.i32(pos) if pos else 0
        dep_pos = b.field(oc, 0)
        dep = b.u8(dep_pos) if dep_pos else 0
        codes.append(max(code, dep))  # builtin_code, or deprecated_builtin_code (< 127)
    sg = subgraphs[0]
    tensors: list[TensorInfo] = []
    for t in b.tables(sg, 0):
        shape = tuple(b.ints(t, 0))
        tpos = b.field(t, 1)
        ttype = b.u8(tpos) if tpos else 0
        if ttype not in _TYPE_SIZE:
            raise ModelFormatError(f"tensor type {ttype} is not supported on an MCU")
        bpos = b.field(t, 2)
        buf_index = b.u32(bpos) if bpos else 0
        constant = False
        if 0 < buf_index < len(buffers):
            _, n = b.vector(buffers[buf_index], 0)
            constant = n > 0
        elems = 1
        for d in shape:
            elems *= max(d, 1)
        tensors.append(TensorInfo(shape, _TYPE_NAME[ttype], elems * _TYPE_SIZE[ttype], constant))
    ops: list[str] = []
    for op in b.tables(sg, 3):
        pos = b.field(op, 0)
        idx = b.u32(pos) if pos else 0
        if idx >= len(codes):
            raise ModelFormatError(f"operator code index {idx} out of range")
        ops.append(BUILTIN_OPS.get(codes[idx], f"BUILTIN_{codes[idx]}"))
    activations = sum(t.nbytes for t in tensors if not t.constant)
    arena = (
        sum(-(-t.nbytes // ALIGN) * ALIGN for t in tensors if not t.constant)
        + ARENA_PER_TENSOR * len(tensors)
        + ARENA_PER_OP * len(ops)
        + ARENA_FIXED
    )
    return ModelNeeds(len(model), arena, activations, tuple(ops), tuple(tensors))
