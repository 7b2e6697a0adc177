"""Domain errors -> HTTP answers: the one place where a router error gets a status."""

from __future__ import annotations

from edge_agent.api.local_api import ApiError
from edge_agent.inference.router import (
    AllTargetsFailed,
    BudgetExhausted,
    InvalidInput,
    NoTarget,
    RoutingError,
    UnknownModel,
)

# Most specific first (BudgetExhausted is an AllTargetsFailed).
STATUS: tuple[tuple[type[RoutingError], int], ...] = (
    (UnknownModel, 404),
    (InvalidInput, 422),
    (BudgetExhausted, 504),
    (AllTargetsFailed, 503),
    (NoTarget, 503),
)


def status_of(exc: RoutingError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def api_error(exc: RoutingError) -> ApiError:
    return ApiError(status_of(exc), exc.message, **exc.extra)
