"""Feature definitions shared by the control plane (Feast) and the gateway (SQLite cache).

Light on purpose: dataclasses only, so gateways can import it. See docs/features.md.
"""

from farmiq.features.barn import (
    BARN,
    BARN_SCHEMA,
    DEVICE,
    ENTITIES,
    FLOCK,
    SCHEMAS,
    VIEWS,
)
from farmiq.features.definitions import (
    Aggregation,
    DefinitionError,
    Entity,
    Feature,
    FeatureRef,
    FeatureSchema,
    FeatureView,
    MissingRule,
    SourceKind,
)

__all__ = [
    "BARN",
    "BARN_SCHEMA",
    "DEVICE",
    "ENTITIES",
    "FLOCK",
    "SCHEMAS",
    "VIEWS",
    "Aggregation",
    "DefinitionError",
    "Entity",
    "Feature",
    "FeatureRef",
    "FeatureSchema",
    "FeatureView",
    "MissingRule",
    "SourceKind",
]
