"""Turn request JSON into model input arrays, or say exactly what is wrong."""

from __future__ import annotations

from typing import Any

import numpy as np

from farmiq.bundle.format import Manifest, TensorSpec


class InputError(ValueError):
    """The request does not fit the model's input schema (answered with HTTP 422)."""


def _coerce(spec: TensorSpec, value: Any, max_batch: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=spec.dtype)
    except (ValueError, TypeError) as exc:
        raise InputError(f"input {spec.name!r}: cannot be read as {spec.dtype}: {exc}") from None
    rank = len(spec.shape)
    if rank >= 2 and arr.ndim == rank - 1:
        arr = arr[np.newaxis, ...]  # a single row: add the batch axis
    if arr.ndim != rank:
        raise InputError(
            f"input {spec.name!r}: expected {rank} dimensions {spec.shape}, got shape {list(arr.shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=True)):
        if want is not None and want != got:
            raise InputError(
                f"input {spec.name!r}: axis {axis} must be {want}, got {got} (shape {list(arr.shape)})"
            )
    if rank and arr.shape[0] > max_batch:
        raise InputError(
            f"input {spec.name!r}: batch of {arr.shape[0]} rows exceeds the limit {max_batch}"
        )
    if rank and arr.shape[0] == 0:
        raise InputError(f"input {spec.name!r}: empty batch")
    if arr.dtype.kind == "f" and not spec.allow_nan and not np.isfinite(arr).all():
        raise InputError(f"input {spec.name!r}: NaN or infinite values are not allowed")
    return arr


def parse_inputs(manifest: Manifest, inputs: Any, max_batch: int) -> dict[str, np.ndarray]:
    """Accept ``{"name": rows}`` or, for single-input models, just ``rows``."""
    specs = manifest.inputs
    if isinstance(inputs, dict):
        unknown = set(inputs) - {s.name for s in specs}
        if unknown:
            raise InputError(
                f"unknown input(s) {sorted(unknown)}; expected {[s.name for s in specs]}"
            )
        missing = [s.name for s in specs if s.name not in inputs]
        if missing:
            raise InputError(f"missing input(s) {missing}")
        return {s.name: _coerce(s, inputs[s.name], max_batch) for s in specs}
    if len(specs) != 1:
        raise InputError(f"model has {len(specs)} inputs; send an object keyed by input name")
    if not isinstance(inputs, list):
        raise InputError("inputs must be a list of rows or an object keyed by input name")
    return {specs[0].name: _coerce(specs[0], inputs, max_batch)}
