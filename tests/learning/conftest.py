"""The drift tests' synthetic barns (reference, drift service, window factory)."""

from tests.drift.conftest import make_window, reference, reference_data, service

__all__ = ["make_window", "reference", "reference_data", "service"]
