"""Training rows from the Feast offline store: the features an entity-keyed model saw.

A model served by entity (its bundle names a feature schema: the gateway builds the vector
from its feature cache) gets labels as ``(entity, time, truth)``. Its training rows are
the schema's features for each (entity, time), point in time, from the control plane's
Feast offline store (``FeastFeatureStore.historical_features``: the sensor views'
aggregates rebuilt from the gateways' readings, the cloud views' records), encoded as the
gateway encodes its vector (a category is its index) and with the schema's missing-value
rules: a default where the rule names one; a row with a value still missing is left out
(counted), as the gateway would have refused or flagged it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from farmiq.features.definitions import FeatureSchema, MissingRule


def training_rows(
    store: Any, schema: FeatureSchema, entities: Sequence[dict[str, str]], ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(X [n_kept, f] float32 in the schema's vector order, kept row indices)."""
    import pandas as pd

    if not len(entities):
        return np.zeros((0, len(schema.features)), np.float32), np.zeros(0, np.int64)
    keys = sorted({r.view.entity.join_key for r in schema.refs})
    missing = [k for k in keys if any(k not in e for e in entities)]
    if missing:
        raise ValueError(f"entity examples lack the join keys {missing} of schema {schema.name}")
    entity_df = pd.DataFrame([{k: e[k] for k in keys} for e in entities])
    entity_df["event_timestamp"] = pd.to_datetime(np.asarray(ts) * 1000, unit="ms", utc=True)
    df = store.historical_features(list(schema.features), entity_df)
    cols = []
    for r in schema.refs:
        f = r.feature
        raw = df[f.name].tolist()
        fill = np.nan
        if f.missing is MissingRule.DEFAULT and f.default is not None:
            fill = f.encode(f.default)
        cols.append([fill if _missing(v) else f.encode(v) for v in raw])
    X = np.asarray(cols, dtype=np.float32).T.reshape(len(entities), len(schema.refs))
    kept = np.flatnonzero(np.isfinite(X).all(axis=1))
    return X[kept], kept


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)
