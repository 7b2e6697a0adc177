"""Simulators (MCUs, fleets, barns) for demos and tests; never needed by a gateway."""
