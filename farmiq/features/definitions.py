"""The vocabulary of feature definitions: plain frozen dataclasses, no Feast, no pandas.

One module (``farmiq.features.barn``) uses this vocabulary to declare the real feature set.
The control plane turns those declarations into a Feast repository
(``control_plane.feature_store``) and the gateway into SQLite tables and in-memory windowed
aggregates (``edge_agent.features.feature_cache``). Because both sides read the same objects, the
window, the type and the missing-value rule of a feature cannot drift apart.

Window semantics, identical on both sides: a sensor feature with window ``W`` evaluated at
time ``t`` aggregates every reading whose timestamp ``ts`` satisfies ``t - W < ts <= t``
(a trailing window, open on the left, closed on the right). Timestamps are quantised to
integer milliseconds (``ts_ms = round(ts * 1000)``; query times are floored) so that the
float comparisons at the window edge are exact on both sides. An empty window has no value
(it is *missing*, never zero).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

# The ``down/features`` message format (control plane -> gateway), see docs/features.md
CLOUD_PAYLOAD_KIND = "farmiq-features/1"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DTYPES = ("float32", "int64", "string")


class Aggregation(StrEnum):
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    SUM = "sum"
    COUNT = "count"
    LAST = "last"


class MissingRule(StrEnum):
    """What serving does when a value is missing or older than its staleness TTL.

    - ``error``: refuse to build the vector (the caller gets the feature and the reason);
    - ``default``: use the declared default and flag the feature ``default``;
    - ``last_value_flagged``: use the last value computed while fresh and flag it ``stale``;
      a value never seen at all is an error.
    """

    ERROR = "error"
    DEFAULT = "default"
    LAST_VALUE_FLAGGED = "last_value_flagged"


class SourceKind(StrEnum):
    SENSOR = "sensor"  # raw sensor readings, aggregated over the view's window
    CLOUD = "cloud"  # values computed in the cloud (farm records) and pushed to gateways


class DefinitionError(ValueError):
    """A feature definition is inconsistent; the message names the offending object."""


@dataclass(frozen=True)
class Entity:
    name: str
    join_key: str
    description: str = ""

    def __post_init__(self) -> None:
        for what, value in (("entity name", self.name), ("join key", self.join_key)):
            if not NAME_RE.match(value):
                raise DefinitionError(f"{what} {value!r} must match {NAME_RE.pattern}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "join_key": self.join_key, "description": self.description}


@dataclass(frozen=True)
class Feature:
    """One served value.

    ``sensor``/``aggregation`` are set for sensor views and absent for cloud views.
    ``staleness_ttl_s`` bounds the age of the newest input (the newest reading of the sensor,
    or the event time of a cloud value) before the value counts as stale.
    ``categories`` encodes a ``string`` feature as its index in the vector.
    """

    name: str
    dtype: str
    staleness_ttl_s: float
    missing: MissingRule
    sensor: str | None = None
    aggregation: Aggregation | None = None
    default: float | int | str | None = None
    categories: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise DefinitionError(f"feature name {self.name!r} must match {NAME_RE.pattern}")
        if self.dtype not in DTYPES:
            raise DefinitionError(f"feature {self.name}: dtype {self.dtype!r} not in {DTYPES}")
        if not self.staleness_ttl_s > 0:
            raise DefinitionError(f"feature {self.name}: staleness_ttl_s must be > 0")
        if (self.sensor is None) != (self.aggregation is None):
            raise DefinitionError(f"feature {self.name}: sensor and aggregation go together")
        if self.dtype == "string" and not self.categories:
            raise DefinitionError(f"feature {self.name}: a string feature needs categories")
        if self.missing is MissingRule.DEFAULT:
            if self.default is None:
                raise DefinitionError(
                    f"feature {self.name}: missing rule 'default' needs a default"
                )
            self.encode(self.default)  # a default that cannot be encoded is a definition bug

    def encode(self, value: float | int | str) -> float:
        """The number this value takes in a float32 feature vector."""
        if self.dtype == "string":
            try:
                return float(self.categories.index(str(value)))
            except ValueError:
                raise DefinitionError(
                    f"feature {self.name}: {value!r} is not one of {list(self.categories)}"
                ) from None
        if isinstance(value, (str, bool)):
            raise DefinitionError(f"feature {self.name}: expected a number, got {value!r}")
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "staleness_ttl_s": self.staleness_ttl_s,
            "missing": self.missing.value,
            "sensor": self.sensor,
            "aggregation": self.aggregation.value if self.aggregation else None,
            "default": self.default,
            "categories": list(self.categories),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Feature:
        try:
            return cls(
                name=d["name"],
                dtype=d["dtype"],
                staleness_ttl_s=float(d["staleness_ttl_s"]),
                missing=MissingRule(d["missing"]),
                sensor=d.get("sensor"),
                aggregation=Aggregation(d["aggregation"]) if d.get("aggregation") else None,
                default=d.get("default"),
                categories=tuple(d.get("categories") or ()),
                description=d.get("description", ""),
            )
        except (KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, DefinitionError):
                raise
            raise DefinitionError(f"feature {d.get('name')!r}: {exc!r}") from None


@dataclass(frozen=True)
class FeatureView:
    """A group of features of one entity from one source (and, for sensors, one window)."""

    name: str
    entity: Entity
    source: SourceKind
    features: tuple[Feature, ...]
    window_s: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise DefinitionError(f"view name {self.name!r} must match {NAME_RE.pattern}")
        if not self.features:
            raise DefinitionError(f"view {self.name}: no features")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise DefinitionError(f"view {self.name}: duplicate feature names")
        if self.source is SourceKind.SENSOR:
            if not self.window_s or self.window_s <= 0:
                raise DefinitionError(f"view {self.name}: a sensor view needs window_s > 0")
            for f in self.features:
                if f.sensor is None or f.dtype != "float32":
                    raise DefinitionError(
                        f"view {self.name}: feature {f.name} needs a sensor, an aggregation "
                        "and dtype float32"
                    )
        else:
            if self.window_s is not None:
                raise DefinitionError(f"view {self.name}: a cloud view has no window")
            for f in self.features:
                if f.sensor is not None:
                    raise DefinitionError(f"view {self.name}: cloud feature {f.name} has a sensor")

    @property
    def window_ms(self) -> int:
        return int(self.window_s or 0) * 1000

    @property
    def sensors(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.sensor for f in self.features if f.sensor))

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"view {self.name} has no feature {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entity": self.entity.to_dict(),
            "source": self.source.value,
            "window_s": self.window_s,
            "features": [f.to_dict() for f in self.features],
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureView:
        try:
            ent = d["entity"]
            return cls(
                name=d["name"],
                entity=Entity(ent["name"], ent["join_key"], ent.get("description", "")),
                source=SourceKind(d["source"]),
                window_s=int(d["window_s"]) if d.get("window_s") is not None else None,
                features=tuple(Feature.from_dict(f) for f in d["features"]),
                description=d.get("description", ""),
            )
        except (KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, DefinitionError):
                raise
            raise DefinitionError(f"view {d.get('name')!r}: {exc!r}") from None


@dataclass(frozen=True)
class FeatureRef:
    view: FeatureView
    feature: Feature

    @property
    def ref(self) -> str:
        return f"{self.view.name}:{self.feature.name}"


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered feature vector a model consumes.

    ``version`` is ``v<major>-<12 hex>``: the major number is bumped by hand for intent, the
    hash is computed from every definition the vector depends on (windows, aggregations,
    dtypes, TTLs, rules, defaults, categories, order). Any change to the definitions gives a
    new version, so a bundle built against one definition is never fed another's vector.
    """

    name: str
    major: int
    features: tuple[str, ...]  # "view:feature" references, in vector order
    views: tuple[FeatureView, ...]
    refs: tuple[FeatureRef, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise DefinitionError(f"schema name {self.name!r} must match {NAME_RE.pattern}")
        by_name = {v.name: v for v in self.views}
        refs = []
        for r in self.features:
            view_name, _, feat_name = r.partition(":")
            if view_name not in by_name:
                raise DefinitionError(f"schema {self.name}: unknown view in {r!r}")
            try:
                refs.append(FeatureRef(by_name[view_name], by_name[view_name].feature(feat_name)))
            except KeyError as exc:
                raise DefinitionError(f"schema {self.name}: {exc.args[0]}") from None
        if len(set(self.features)) != len(self.features):
            raise DefinitionError(f"schema {self.name}: a feature appears twice")
        object.__setattr__(self, "refs", tuple(refs))

    @property
    def used_views(self) -> tuple[FeatureView, ...]:
        return tuple(dict.fromkeys(r.view for r in self.refs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "major": self.major,
            "features": list(self.features),
            "views": [v.to_dict() for v in self.used_views],
        }

    @cached_property
    def fingerprint(self) -> str:
        body = self.to_dict()
        # descriptions are documentation, not semantics: they must not change the version
        for v in body["views"]:
            v.pop("description", None)
            v["entity"].pop("description", None)
            for f in v["features"]:
                f.pop("description", None)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @cached_property
    def version(self) -> str:
        return f"v{self.major}-{self.fingerprint[:12]}"

    @property
    def names(self) -> tuple[str, ...]:
        """Column names of the vector (``feature`` part of each reference)."""
        return tuple(r.feature.name for r in self.refs)
