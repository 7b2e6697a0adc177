"""Deterministic sensor streams shared by the features tests and benchmarks."""

from __future__ import annotations

import random

T0 = 1_700_000_000.0  # a fixed epoch (2023-11-14) so failures are reproducible
SENSOR_RANGES = {
    "temperature": (18.0, 32.0),
    "humidity": (40.0, 85.0),
    "co2": (500.0, 3000.0),
    "ammonia": (2.0, 25.0),
    "water_flow": (0.0, 40.0),
    "feed_flow": (0.0, 12.0),
}


def make_readings(
    barns: list[str], hours: float, seed: int = 7, start: float = T0
) -> list[tuple[str, str, float, float]]:
    """Irregular readings (20-150 s apart, ms timestamps), with silent gaps longer than an
    hour for some series, so windows empty out and refill."""
    rnd = random.Random(seed)
    out = []
    end = start + hours * 3600
    for barn in barns:
        for sensor, (lo, hi) in SENSOR_RANGES.items():
            t = start + rnd.uniform(0, 60)
            while t < end:
                out.append((barn, sensor, round(t, 3), round(rnd.uniform(lo, hi), 3)))
                step = rnd.uniform(20, 150)
                if rnd.random() < 0.004:
                    step += rnd.uniform(3700, 9000)  # the sensor goes silent for > 1 h
                t += step
    out.sort(key=lambda r: r[2])
    return out
