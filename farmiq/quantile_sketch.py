"""KLL quantile sketches (Apache DataSketches) of a drift window's numeric columns.

A drift window carries, per numeric column, a KLL sketch instead of raw rows: a few KB
whatever the rows seen, mergeable without loss of its error guarantee (windows merged in
the outbox, windows of a period and gateways of a fleet on the control plane), and no row
of a farm's data leaves the barn. With the default ``k = 200`` a quantile's rank is within
about 1.3 % of the truth (DataSketches' normalized rank error, 99 % confidence).

The sketches hold float32 values (farm sensors have fewer digits than that) and skip
missing and non-finite values, which the window counts apart. On the wire a sketch is its
DataSketches serialization in base64 (``kll`` of a column, docs/drift.md), so any
DataSketches library (Java, C++, Python) reads it.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketches import kll_floats_sketch

# datasketches is imported where a sketch is first made or read (2 MB, 10 ms): a gateway
# that has served nothing yet has not paid for it.

DEFAULT_K = 200
MAX_ENCODED = 64 * 1024  # far above a k=200 sketch's ~3 KB: anything bigger is not ours


class SketchError(ValueError):
    pass


class ColumnSketches:
    """One KLL sketch per column, updated a batch at a time (one C++ call per batch)."""

    def __init__(self, columns: int, k: int = DEFAULT_K) -> None:
        self.columns = columns
        self._v = None
        if columns:
            from datasketches import vector_of_kll_floats_sketches

            self._v = vector_of_kll_floats_sketches(k, columns)

    def update(self, x: np.ndarray) -> None:
        """Add rows ``[n, columns]``; NaN and +-inf are skipped."""
        if self._v is None or x.shape[0] == 0:
            return
        x32 = np.where(np.isfinite(x), x, np.nan).astype(np.float32)
        self._v.update(np.ascontiguousarray(x32))

    def encoded(self) -> list[str | None]:
        """Each column's sketch in base64 (None for a column that saw no finite value)."""
        if self._v is None:
            return []
        n = self._v.get_n()
        return [
            base64.b64encode(b).decode() if n[i] else None
            for i, b in enumerate(self._v.serialize())
        ]


_HEAD_CHARS = 4 * -(-(20 + 4 * 61) // 3)  # base64 of the longest header + levels array


def check_encoded(encoded: str, *, header_only: bool = False) -> bytes:
    """The serialized sketch in ``encoded`` (base64), checked; SketchError if it is not
    one. ``header_only`` (the ingest path: a fleet burst checks thousands): decode only
    the header and levels, and take the size from the text's length; the items are then
    decoded, strictly, when the sketch is read."""
    if not isinstance(encoded, str) or len(encoded) > MAX_ENCODED or len(encoded) % 4:
        raise SketchError("not a KLL sketch (not a base64 string of a sketch's size)")
    text = encoded[:_HEAD_CHARS] if header_only else encoded
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        raise SketchError("not a KLL sketch: not base64") from None
    size = len(encoded) // 4 * 3 - (len(encoded) - len(encoded.rstrip("=")))
    check_layout(raw, size)
    return raw


def decode(encoded: str) -> kll_floats_sketch:
    """The sketch a window carries; SketchError for anything that is not one."""
    from datasketches import kll_floats_sketch

    raw = check_encoded(encoded)
    try:
        return kll_floats_sketch.deserialize(raw)
    except (ValueError, RuntimeError, IndexError, OverflowError) as exc:
        # the C++ binding reports a corrupt buffer as any of these
        raise SketchError(f"not a KLL sketch: {exc}") from None


# -- the serialized layout, checked before the C++ deserializer sees it ----------------------
# DataSketches' deserializer trusts the levels array of a "full" sketch: a flipped byte
# there made it read out of bounds and crash the process (a fuzz run of tests/drift/
# test_quantile_sketch.py found it). The control plane decodes what gateways send, so
# every field is checked against the format here first: header, sizes, levels and the
# KLL invariant that the levels' weights add up to n.
_EMPTY, _SORTED, _SINGLE = 1, 2, 4
_FAMILY_KLL = 15
_M = 8
_FULL_HEADER = struct.Struct("<BBBBHBxQHBx")  # preamble ints .. num levels: 20 bytes


@lru_cache(maxsize=1024)
def _capacity(k: int, num_levels: int) -> int:
    """kll_helper::compute_total_capacity: the items a sketch of ``num_levels`` holds."""

    def cap_aux(k: int, depth: int) -> int:
        if depth > 30:
            half = depth // 2
            return cap_aux(cap_aux(k, half), depth - half)
        return ((2 * k << depth) // 3**depth + 1) >> 1

    return sum(max(_M, cap_aux(k, num_levels - h - 1)) for h in range(num_levels))


def check_layout(raw: bytes, size: int | None = None) -> None:
    """SketchError unless ``raw`` is a well-formed serialized KLL float sketch (or, with
    ``size``, the start of one that is ``size`` bytes long)."""
    size = len(raw) if size is None else size
    if len(raw) < 8:
        raise SketchError("not a KLL sketch: shorter than its header")
    pre, ver, family, flags, k, m = struct.unpack_from("<BBBBHB", raw)
    if family != _FAMILY_KLL or m != _M or k < 8 or flags & ~(_EMPTY | _SORTED | _SINGLE):
        raise SketchError("not a KLL sketch: bad header")
    if flags & _EMPTY:
        if (pre, size) != (2, 8) or ver not in (1, 2):
            raise SketchError("not a KLL sketch: bad empty sketch")
        return
    if flags & _SINGLE:
        if (pre, ver, size) != (2, 2, 12):
            raise SketchError("not a KLL sketch: bad single-item sketch")
        return
    if (pre, ver) != (5, 1) or len(raw) < _FULL_HEADER.size:
        raise SketchError("not a KLL sketch: bad full-sketch header")
    _, _, _, _, _, _, n, min_k, num_levels = _FULL_HEADER.unpack_from(raw)
    if not (1 <= num_levels <= 61 and _M <= min_k <= k and n >= 1):
        raise SketchError("not a KLL sketch: bad sizes")
    if len(raw) < _FULL_HEADER.size + 4 * num_levels:
        raise SketchError("not a KLL sketch: truncated levels")
    capacity = _capacity(k, num_levels)
    levels = (*struct.unpack_from(f"<{num_levels}I", raw, _FULL_HEADER.size), capacity)
    if size != _FULL_HEADER.size + 4 * num_levels + 8 + 4 * (capacity - levels[0]):
        raise SketchError("not a KLL sketch: size does not match its levels")
    weight, prev = 0, levels[0]
    for h in range(num_levels):
        nxt = levels[h + 1]
        if nxt < prev:
            raise SketchError("not a KLL sketch: levels out of order")
        weight += (nxt - prev) << h
        prev = nxt
    if weight != n:
        raise SketchError("not a KLL sketch: levels do not add up to n")


def encode(sketch: kll_floats_sketch) -> str:
    return base64.b64encode(sketch.serialize()).decode()


def merge(encoded: Iterable[str | None]) -> kll_floats_sketch | None:
    """One sketch of every value the given sketches saw (None when there are none)."""
    out: kll_floats_sketch | None = None
    for e in encoded:
        if e is None:
            continue
        sk = decode(e)
        if out is None:
            out = sk
        else:
            out.merge(sk)
    return out


def merge_encoded(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    merged = merge([a, b])
    return encode(merged) if merged is not None else None


def representative_values(sketch: kll_floats_sketch, m: int) -> np.ndarray:
    """``m`` values whose empirical distribution is the sketch's: its quantiles at the
    mid-ranks ``(i + 0.5) / m``. Sorted; shuffle before pairing columns into rows."""
    if m <= 0 or sketch.is_empty():
        return np.empty(0)
    ranks: Sequence[float] = ((np.arange(m) + 0.5) / m).tolist()
    return np.asarray(sketch.get_quantiles(ranks), dtype=np.float64)
