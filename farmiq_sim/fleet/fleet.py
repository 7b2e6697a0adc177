"""A fleet of simulated gateways against a real broker, with failure knobs."""

from __future__ import annotations

import asyncio
import hashlib
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

from edge_agent.rollout.transfer_receiver import ByteBudget
from farmiq.bundle.trust import TrustRoot
from farmiq_sim.fleet.gateway import SimGateway


def _share(salt: str, device_id: str) -> float:
    return (
        int.from_bytes(hashlib.sha256(f"{salt}:{device_id}".encode()).digest()[:8], "big") / 2**64
    )


@dataclass
class FleetConfig:
    gateways: int = 100
    host: str = "127.0.0.1"
    port: int = 1883
    model: str = "barn-ventilation"
    initial_version: int | None = 1
    prefix: str = "sim"
    farms: int = 10
    tags: list[str] = field(default_factory=lambda: ["sim"])
    fail_rate: float = 0.0  # share of gateways whose installs fail their health check
    error_rate: float = 0.0  # inference error rate the failing gateways report
    slow_link: float = 0.0  # share of gateways on a slow link
    slow_bps: float = 256 * 1024
    slow_budget: int | None = None  # byte budget of a slow (metered, cellular) link...
    budget_period_s: float = 3600.0  # ...per this period
    offline_rate: float = 0.0  # share of gateways that drop off for offline_s during the run
    offline_s: float = 10.0
    window: int = 4
    connect_batch: int = 100


class Fleet:
    def __init__(self, cfg: FleetConfig, trust: TrustRoot) -> None:
        self.cfg = cfg
        self.trust = trust
        self.gateways: list[SimGateway] = []

    async def start(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < min(hard, self.cfg.gateways * 2 + 256):  # one socket per gateway
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (min(hard, self.cfg.gateways * 2 + 256), hard)
            )
        c = self.cfg
        for i in range(c.gateways):
            dev = f"{c.prefix}-{i:05d}"
            slow = _share("slow", dev) < c.slow_link
            gw = SimGateway(
                dev,
                host=c.host,
                port=c.port,
                trust=self.trust,
                model=c.model,
                version=c.initial_version,
                farm_id=f"farm-{i % max(1, c.farms):03d}",
                tags=list(c.tags),
                fails=_share("fail", dev) < c.fail_rate,
                error_rate=c.error_rate if _share("fail", dev) < c.fail_rate else 0.0,
                slow_bps=c.slow_bps if slow else None,
                byte_budget=ByteBudget(c.slow_budget, c.budget_period_s)
                if slow and c.slow_budget
                else None,
                window=c.window,
            )
            self.gateways.append(gw)
            gw.connect()
            if (i + 1) % c.connect_batch == 0:
                await asyncio.sleep(0.05)
        deadline = time.time() + 30
        while sum(g.online for g in self.gateways) < c.gateways and time.time() < deadline:
            await asyncio.sleep(0.1)

    def churners(self) -> list[SimGateway]:
        """The gateways (a stable ``offline_rate`` share) that ``offline_churn`` takes away."""
        return [g for g in self.gateways if _share("offline", g.device_id) < self.cfg.offline_rate]

    def slow(self) -> list[SimGateway]:
        return [g for g in self.gateways if g.slow_bps]

    async def offline_churn(self, duration_s: float, *, at_once: bool = False) -> None:
        """Take ``offline_rate`` of the fleet offline once for ``offline_s``, at random
        times in the run (``at_once``: all of them now)."""
        chosen = self.churners()

        async def one(g: SimGateway) -> None:
            if not at_once:
                await asyncio.sleep(random.random() * max(0.1, duration_s - self.cfg.offline_s))
            g.go_offline()
            await asyncio.sleep(self.cfg.offline_s)
            g.connect()

        await asyncio.gather(*(one(g) for g in chosen))

    def versions(self) -> Counter[int | None]:
        return Counter(g.models.get(self.cfg.model, (None, ""))[0] for g in self.gateways)

    def online(self) -> int:
        return sum(g.online for g in self.gateways)

    async def stop(self) -> None:
        for g in self.gateways:
            g.go_offline()
        await asyncio.sleep(0.2)
