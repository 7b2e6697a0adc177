"""A believable barn for the MCU simulator: what its sensors read and how actuators act.

Temperature follows a diurnal sine plus noise, the heater warms and the fan cools; relative
humidity moves against temperature; ammonia builds up slowly, spikes after litter events
(bedding disturbed) and decays, faster with the fan on; CO2 follows animal activity and
ventilation; water and feed flow peak at feeding times (and the feeder actuator).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class Barn:
    seed: int | None = None
    litter_event_rate: float = 1 / 1800  # per second of barn time
    fan: float = 0.0  # 0..1
    heater: float = 0.0  # 0..1
    feeder: float = 0.0  # 0..1
    light: float = 0.0
    water_valve: float = 1.0
    _rng: random.Random = field(init=False)
    _nh3_spike: float = 0.0
    _last_t: float | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def sample(self, t: float) -> dict[int, float]:
        """Sensor id -> value at epoch time ``t`` (ids as in messages.SENSOR_NAMES)."""
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        g = self._rng.gauss
        hour = (t / 3600.0) % 24
        diurnal = math.sin((hour - 9) / 24 * 2 * math.pi)  # peak mid-afternoon
        temp = 20 + 4 * diurnal + 3 * self.heater - 2.5 * self.fan + g(0, 0.15)
        hum = min(100.0, max(20.0, 65 - 2.2 * (temp - 20) - 6 * self.fan + g(0, 0.8)))
        if self._rng.random() < self.litter_event_rate * dt:
            self._nh3_spike += self._rng.uniform(10, 25)
        self._nh3_spike *= math.exp(-dt / (300 if self.fan > 0.3 else 900))
        nh3 = max(0.0, 6 + 2 * (1 - self.fan) + self._nh3_spike + g(0, 0.3))
        activity = 0.5 + 0.5 * max(0.0, diurnal)
        co2 = max(400.0, 900 + 900 * activity - 600 * self.fan + g(0, 25))
        feeding = 1.0 if 6 <= hour < 7 or 17 <= hour < 18 else 0.2
        feed = max(0.0, 30 * max(feeding, self.feeder) + g(0, 0.5))
        water = max(0.0, self.water_valve * (4 + 6 * feeding + 2 * max(0.0, temp - 22) + g(0, 0.3)))
        return {1: temp, 2: hum, 3: nh3, 4: co2, 5: water, 6: feed}
