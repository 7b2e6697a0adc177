"""THE feature definitions of FarmIQ Edge: the barn set.

Edit features here and nowhere else. The Feast repository (control plane) and the gateway's
SQLite cache are both generated from these objects, and the schema version changes with them.

Sensors (names used by the firmware bridge and the ingest API), units:
``temperature`` deg C, ``humidity`` % RH, ``co2`` ppm, ``ammonia`` ppm,
``water_flow`` litres per reading interval, ``feed_flow`` kg per reading interval.
"""

from __future__ import annotations

from farmiq.features.definitions import (
    Aggregation,
    Entity,
    Feature,
    FeatureSchema,
    FeatureView,
    MissingRule,
    SourceKind,
)

BARN = Entity("barn", "barn_id", "A house of birds; sensors are installed per barn.")
FLOCK = Entity("flock", "flock_id", "One placement of birds in a barn, from arrival to depletion.")
DEVICE = Entity("device", "device_id", "A gateway or MCU; carries health features.")

HOUR = 3600
DAY = 24 * HOUR
_CLIMATE_TTL = 10 * 60  # a climate sensor silent for 10 minutes is treated as dead
_FLOW_TTL = 2 * HOUR  # flow meters report on pulses; quiet periods are normal


def _climate(name: str, sensor: str, agg: Aggregation, rule: MissingRule, desc: str) -> Feature:
    return Feature(
        name=name,
        dtype="float32",
        sensor=sensor,
        aggregation=agg,
        staleness_ttl_s=_CLIMATE_TTL,
        missing=rule,
        description=desc,
    )


_LV = MissingRule.LAST_VALUE_FLAGGED

BARN_CLIMATE_1H = FeatureView(
    name="barn_climate_1h",
    entity=BARN,
    source=SourceKind.SENSOR,
    window_s=HOUR,
    description="Air quality over the trailing hour (t-1h, t].",
    features=(
        _climate("temperature_mean_1h", "temperature", Aggregation.MEAN, _LV, "deg C"),
        _climate("temperature_max_1h", "temperature", Aggregation.MAX, _LV, "deg C"),
        _climate("humidity_mean_1h", "humidity", Aggregation.MEAN, _LV, "% RH"),
        _climate("humidity_max_1h", "humidity", Aggregation.MAX, _LV, "% RH"),
        _climate("co2_mean_1h", "co2", Aggregation.MEAN, _LV, "ppm"),
        _climate("co2_max_1h", "co2", Aggregation.MAX, _LV, "ppm"),
        # Ammonia drives welfare alarms: guessing it is worse than refusing to predict.
        _climate("ammonia_max_1h", "ammonia", Aggregation.MAX, MissingRule.ERROR, "ppm"),
    ),
)

BARN_CONSUMPTION_24H = FeatureView(
    name="barn_consumption_24h",
    entity=BARN,
    source=SourceKind.SENSOR,
    window_s=DAY,
    description="Water and feed delivered over the trailing 24 hours (t-24h, t].",
    features=(
        Feature(
            name="water_flow_sum_24h",
            dtype="float32",
            sensor="water_flow",
            aggregation=Aggregation.SUM,
            staleness_ttl_s=_FLOW_TTL,
            missing=_LV,
            description="litres",
        ),
        Feature(
            name="feed_flow_sum_24h",
            dtype="float32",
            sensor="feed_flow",
            aggregation=Aggregation.SUM,
            staleness_ttl_s=_FLOW_TTL,
            missing=_LV,
            description="kg",
        ),
    ),
)

BREEDS = ("ross_308", "cobb_500", "hubbard_jv", "other")

FLOCK_PROFILE = FeatureView(
    name="flock_profile",
    entity=FLOCK,
    source=SourceKind.CLOUD,
    description="Farm records kept in the cloud and pushed to the barn's gateway.",
    features=(
        Feature(
            name="flock_age_days",
            dtype="int64",
            staleness_ttl_s=2 * DAY,  # published at least daily
            missing=_LV,
            description="days since placement",
        ),
        Feature(
            name="breed",
            dtype="string",
            categories=BREEDS,
            staleness_ttl_s=60 * DAY,
            missing=MissingRule.DEFAULT,
            default="other",
            description="encoded as the index in BREEDS",
        ),
    ),
)

VIEWS: tuple[FeatureView, ...] = (BARN_CLIMATE_1H, BARN_CONSUMPTION_24H, FLOCK_PROFILE)
ENTITIES: tuple[Entity, ...] = (BARN, FLOCK, DEVICE)


def _refs(*views: FeatureView) -> tuple[str, ...]:
    return tuple(f"{v.name}:{f.name}" for v in views for f in v.features)


BARN_SCHEMA = FeatureSchema(
    name="barn",
    major=1,
    features=_refs(BARN_CLIMATE_1H, BARN_CONSUMPTION_24H, FLOCK_PROFILE),
    views=VIEWS,
)

SCHEMAS: dict[str, FeatureSchema] = {BARN_SCHEMA.name: BARN_SCHEMA}
