"""Evidently drill-downs: what the gateways saw against the reference sample.

The gateways' side is their raw sample rows where a farm opted in to sending them, and
otherwise rows rebuilt from the windows' KLL sketches and histograms
(``DriftService.gateway_rows``).

Evidently needs raw rows, so this is the slow, detailed path (about a second for 5k rows x
10 columns) next to the histogram statistics that watch the whole fleet. Imported only
when a report is asked for: evidently and pandas take seconds to import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")


def _frames(
    columns: Sequence[str],
    reference_rows: Sequence[Sequence[Any]],
    current_rows: Sequence[Sequence[Any]],
) -> tuple[Any, Any]:
    import pandas as pd

    ref = pd.DataFrame(list(reference_rows), columns=list(columns), dtype="float64")
    cur = pd.DataFrame(list(current_rows), columns=list(columns), dtype="float64")
    return ref, cur


def run_data_drift(reference: Any, current: Any, categorical: Sequence[str] = ()) -> Any:
    """Evidently DataDriftPreset on two DataFrames; returns the snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cat = [c for c in reference.columns if c in set(categorical)]
    num = [c for c in reference.columns if c not in set(cat)]
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    return Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=dd),
        Dataset.from_pandas(reference, data_definition=dd),
    )


def column_verdicts(snapshot: Any) -> dict[str, dict[str, Any]]:
    """Per column: Evidently's method, value, threshold and drift verdict."""
    out: dict[str, dict[str, Any]] = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        if not str(cfg.get("type", "")).endswith("ValueDrift"):
            continue
        method, value, threshold = str(cfg.get("method")), float(m["value"]), cfg.get("threshold")
        p_value = "p_value" in method.lower()
        drift = value < threshold if p_value else value >= threshold
        out[str(cfg["column"])] = {
            "method": method,
            "value": value,
            "threshold": threshold,
            "drift": bool(drift),
        }
    return out


def report_html(
    reference: Mapping[str, Any],
    current_columns: Sequence[str],
    current_rows: Sequence[Sequence[Any]],
    title: str = "",
    facts: Mapping[str, Any] | None = None,
) -> str:
    """HTML report: the reference's raw sample vs rows sampled on the gateways. ``facts``
    (model, version, rows, period...) head the body, so a saved report says what it is."""
    sample = reference.get("sample") or {}
    if not sample.get("rows"):
        raise ValueError("the reference has no raw sample; rebuild it with sample_size > 0")
    if not current_rows:
        raise ValueError("no sampled rows from gateways in this period")
    columns = list(sample["columns"])
    if list(current_columns) != columns:
        raise ValueError("gateway samples and reference sample have different columns")
    ref, cur = _frames(columns, sample["rows"], current_rows)
    cats = [n for n, s in reference["features"].items() if s["kind"] == "categorical"]
    pred = reference.get("prediction")
    if pred is not None and pred["kind"] == "categorical":
        cats.append(columns[-1])
    snap = run_data_drift(ref, cur, cats)
    html = str(snap.get_html_str(as_iframe=False))
    if title:
        html = html.replace("<head>", f"<head><title>{_esc(title)}</title>", 1)
    head = "".join(
        f"<div><b>{_esc(str(k))}</b>: <span data-fact='{_esc(str(k))}'>{_esc(str(v))}</span></div>"
        for k, v in {**(facts or {}), "reference rows": len(sample["rows"])}.items()
    )
    banner = (
        "<div id='farmiq-report-facts' style='font:14px system-ui,sans-serif;padding:12px 16px;"
        f"border-bottom:1px solid #ddd'><h2 style='margin:0 0 6px'>{_esc(title)}</h2>{head}</div>"
    )
    body_at = html.find("<body")
    if body_at >= 0:
        end = html.find(">", body_at) + 1
        return html[:end] + banner + html[end:]
    return banner + html


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
