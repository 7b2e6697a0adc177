"""MCUManager: every MCU attached to a gateway, named by the device id from its HELLO.

Ports come and go (``add_port``/``remove_port``, or ``port_globs`` such as
``/dev/serial/by-id/*`` rescanned every few seconds); a device keeps its identity, clock
mapping, reading de-duplication and loaded models when it moves from one tty to another.

Operations retry end to end until their deadline, across link timeouts and reconnects:
actuator commands keep their command id (the MCU runs a command id at most once), model
loads restart from BEGIN after a reset (the MCU commits whole or not at all), inference
requests are simply repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from firmware_bridge.clock import ClockMap
from firmware_bridge.framing import DEFAULT_MAX_FRAME
from firmware_bridge.link import SerialLink
from firmware_bridge.messages import (
    ACTUATOR_IDS,
    ACTUATOR_NAMES,
    ActuatorCmd,
    ActuatorResult,
    ActuatorResultMsg,
    ActuatorStatus,
    AnyMessage,
    Capability,
    ErrorCode,
    ErrorMsg,
    Heartbeat,
    Hello,
    InferReq,
    InferResp,
    InferStatus,
    MCUInfo,
    ModelLoadBegin,
    ModelLoadChunk,
    ModelLoadCommit,
    ModelLoadStatus,
    ModelLoadStatusMsg,
    Reading,
    Readings,
    command_hash,
    sensor_name,
)
from firmware_bridge.reliability import LinkError, NackError, SeqWindow
from firmware_bridge.tflite_model import ModelFormatError, ModelNeeds, model_needs

log = logging.getLogger(__name__)

ReadingsCallback = Callable[[str, list[Reading]], Awaitable[None]]


class MCUError(Exception):
    """Base of the manager's errors."""


class DeviceUnavailable(MCUError, TimeoutError):
    """The device did not answer before the deadline."""


class ModelLoadError(MCUError):
    pass


class InferenceError(MCUError):
    pass


class ModelBudgetError(ModelLoadError):
    """The model does not fit the budget the MCU declared; refused before any transfer."""


class _DeviceReset(MCUError):
    pass


class IdentityChanged(LinkError):
    """The MCU on a port rebooted as another device: frames for the old one are dropped."""


@dataclass(eq=False)
class _Device:
    device_id: str
    hello: Hello
    link: SerialLink | None = None
    clock: ClockMap = field(default_factory=ClockMap)
    seen_readings: SeqWindow = field(default_factory=lambda: SeqWindow(8192))
    last_seen: float = 0.0
    models: dict[str, str] = field(default_factory=dict)  # model_id -> sha256 hex
    waiters: dict[tuple[str, int], asyncio.Future[Any]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    readings_dropped: int = 0
    slots: list[tuple[str, str]] = field(default_factory=list)  # (model_id, sha256), newest first
    identity_changes: int = 0
    boots: int = 1

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def fail_waiters(self, kinds: tuple[str, ...], exc: Exception) -> None:
        for key, fut in list(self.waiters.items()):
            if key[0] in kinds and not fut.done():
                fut.set_exception(exc)


class MCUManager:
    def __init__(
        self,
        ports: Iterable[str] = (),
        *,
        on_readings: ReadingsCallback | None = None,
        port_globs: Iterable[str] = (),
        rescan_interval: float = 3.0,
        baudrate: int = 115200,
        offline_after: float = 5.0,
        ack_timeout: float = 0.15,
        max_retries: int = 8,
        window: int = 8,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.on_readings = on_readings
        self._ports = list(dict.fromkeys(ports))
        self._globs = list(port_globs)
        self._rescan_interval = rescan_interval
        self._link_opts: dict[str, Any] = dict(
            baudrate=baudrate, ack_timeout=ack_timeout, max_retries=max_retries,
            window=window, max_frame=max_frame,
        )  # fmt: skip
        self._offline_after = offline_after
        self._session = random.getrandbits(32)
        self._links: dict[str, SerialLink] = {}
        self._devices: dict[str, _Device] = {}
        self._ids = itertools.count(random.getrandbits(15))
        self._readings_q: asyncio.Queue[tuple[str, list[Reading]]] = asyncio.Queue(maxsize=1000)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self.readings_dropped = 0

    # ---- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._deliver_readings(), name="mcu-readings"))
        if self._globs:
            self._tasks.append(loop.create_task(self._rescan(), name="mcu-rescan"))
        for url in self._ports:
            await self.add_port(url)

    async def stop(self) -> None:
        self._started = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        await asyncio.gather(*(link.stop() for link in self._links.values()))
        self._links.clear()

    async def add_port(self, url: str) -> None:
        """Watch one more port (a tty path or any pyserial URL)."""
        if url in self._links:
            return
        link = SerialLink(
            url, self._on_message, on_state=self._on_state, session=self._session,
            **self._link_opts,
        )  # fmt: skip
        self._links[url] = link
        if url not in self._ports:
            self._ports.append(url)
        await link.start()

    async def remove_port(self, url: str) -> None:
        link = self._links.pop(url, None)
        if url in self._ports:
            self._ports.remove(url)
        if link is not None:
            await link.stop()

    async def _rescan(self) -> None:
        while True:
            found = {p for pattern in self._globs for p in glob.glob(pattern)}
            for url in sorted(found - set(self._links)):
                log.info("new serial port %s", url)
                await self.add_port(url)
            await asyncio.sleep(self._rescan_interval)

    # ---- queries -------------------------------------------------------------------
    def _online(self, dev: _Device) -> bool:
        return (
            dev.link is not None
            and dev.link.connected
            and time.monotonic() - dev.last_seen < self._offline_after
        )

    def describe(self) -> list[dict[str, Any]]:
        """What the agent reports about each MCU (resources/status, up/state): JSON-ready.

        One dict per MCU ever seen, sorted by id: identity, firmware, port, online, the
        budget it declared (model slot bytes, tensor arena bytes, slots), the models the
        gateway committed on it (id and sha256), and link health.
        """
        now = time.monotonic()
        out: list[dict[str, Any]] = []
        for d in sorted(self._devices.values(), key=lambda d: d.device_id):
            link = d.link
            ep = link.endpoint if link is not None else None
            h = d.hello
            out.append(
                {
                    "id": d.device_id,
                    "firmware": h.fw_version,
                    "protocol": h.proto,
                    "boot_id": f"{h.boot_id:08x}",
                    "port": link.url if link is not None else None,
                    "online": self._online(d),
                    "capabilities": [c.name.lower() for c in Capability if c & h.caps and c.name],
                    "budget": {
                        "model_slot_bytes": h.model_capacity,
                        "arena_bytes": h.arena_capacity,
                        "model_slots": h.model_slots,
                        "max_frame": h.max_frame,
                    },
                    "models": [
                        {"model_id": m, "sha256": sha} for m, sha in sorted(d.models.items())
                    ],
                    # slot-limited MCUs (A/B): what each slot holds, the active (newest) first
                    "slots": [
                        {"slot": i, "model_id": m, "sha256": sha, "active": i == 0}
                        for i, (m, sha) in enumerate(d.slots)
                    ],
                    "link": {
                        "connected": bool(link is not None and link.connected),
                        "last_seen_s": round(now - d.last_seen, 3) if d.last_seen else None,
                        "connects": link.connects if link is not None else 0,
                        "boots": d.boots,
                        "identity_changes": d.identity_changes,
                        "frames_sent": ep.stats.sent if ep else 0,
                        "retransmits": ep.stats.retransmits if ep else 0,
                        "ack_timeouts": ep.stats.timeouts if ep else 0,
                        "frames_received": ep.stats.received if ep else 0,
                        "bad_frames": ep.decoder.stats.errors if ep else 0,
                        "readings_dropped": d.readings_dropped,
                    },
                }
            )
        return out

    def metric_families(self) -> Iterator[Metric]:
        """Prometheus families for a custom collector (``AgentMetrics.add_source``)."""
        dropped = CounterMetricFamily(
            "farmiq_mcu_readings_dropped",
            "Readings dropped on the gateway because the readings queue was full",
            labels=["mcu"],
        )
        online = GaugeMetricFamily("farmiq_mcu_online", "1 while the MCU is online", labels=["mcu"])
        retrans = CounterMetricFamily(
            "farmiq_mcu_link_retransmits", "Frames the gateway sent again", labels=["mcu"]
        )
        for d in self._devices.values():
            dropped.add_metric([d.device_id], d.readings_dropped)
            online.add_metric([d.device_id], 1.0 if self._online(d) else 0.0)
            ep = d.link.endpoint if d.link is not None else None
            retrans.add_metric([d.device_id], ep.stats.retransmits if ep else 0)
        yield dropped
        yield online
        yield retrans

    def collector(self) -> Collector:
        """This manager as a prometheus_client collector: ``registry.register(m.collector())``."""
        return _ManagerCollector(self)

    def devices(self) -> list[MCUInfo]:
        return [
            MCUInfo(
                device_id=d.device_id,
                fw_version=d.hello.fw_version,
                boot_id=d.hello.boot_id,
                capabilities=Capability(d.hello.caps),
                max_frame=d.hello.max_frame,
                model_capacity=d.hello.model_capacity,
                port=d.link.url if d.link else "",
                online=self._online(d),
                models=tuple(sorted(d.models)),
                arena_capacity=d.hello.arena_capacity,
                model_slots=d.hello.model_slots,
            )
            for d in self._devices.values()
        ]

    def has_model(self, model_id: str) -> str | None:
        """The id of a device that holds ``model_id`` (online devices first), or None."""
        holders = [d for d in self._devices.values() if model_id in d.models]
        holders.sort(key=lambda d: not self._online(d))
        return holders[0].device_id if holders else None

    async def wait_for_device(self, device_id: str, timeout: float = 10.0) -> MCUInfo:
        """Wait until ``device_id`` has introduced itself on some port and is online."""
        dev = await self._wait_link(device_id, time.monotonic() + timeout)
        return next(i for i in self.devices() if i.device_id == dev.device_id)

    # ---- incoming ------------------------------------------------------------------
    def _on_state(self, link: SerialLink, up: bool) -> None:
        if not up and link.device_id is not None:
            dev = self._devices.get(link.device_id)
            if dev is not None and dev.link is link:
                dev.notify()

    def _on_message(self, link: SerialLink, seq: int, msg: AnyMessage) -> None:
        now_mono = time.monotonic()
        if isinstance(msg, Hello):
            self._on_hello(link, msg)
            return
        if link.device_id is None:
            return  # not introduced yet (HELLO lost): ignore until it is
        dev = self._devices[link.device_id]
        dev.last_seen = now_mono
        if isinstance(msg, Heartbeat):
            dev.clock.observe(msg.mcu_ms, time.time())
        elif isinstance(msg, Readings):
            self._on_readings(dev, msg)
        elif isinstance(msg, ActuatorResultMsg):
            self._resolve(dev, ("act", msg.command_id), msg)
        elif isinstance(msg, ModelLoadStatusMsg):
            self._resolve(dev, ("load", msg.transfer), msg)
        elif isinstance(msg, InferResp):
            self._resolve(dev, ("infer", msg.request), msg)
        elif isinstance(msg, ErrorMsg):
            log.warning("%s reports error 0x%04x: %s", dev.device_id, msg.code, msg.message)
            if msg.code == ErrorCode.NO_TRANSFER:
                dev.fail_waiters(("load", "abort"), _DeviceReset("MCU lost the transfer"))

    def _on_hello(self, link: SerialLink, hello: Hello) -> None:
        previous = link.device_id
        if previous is not None and previous != hello.device_id:
            # The MCU on this port rebooted as another identity. Whatever was sent for the
            # old one must not run on this one: drop the frames still in flight (no more
            # retransmits) and detach the old device, whose commands now wait for it to
            # turn up again on some port (or fail at their deadline).
            log.warning("MCU on %s is now %r (was %r)", link.url, hello.device_id, previous)
            link.endpoint.fail_all(IdentityChanged(f"{link.url} is now {hello.device_id!r}"))
            old = self._devices.get(previous)
            if old is not None and old.link is link:
                old.link = None
                old.identity_changes += 1
                old.fail_waiters(("act", "load", "infer", "abort"), _DeviceReset("MCU replaced"))
                old.notify()
            link.device_id = None
        dev = self._devices.get(hello.device_id)
        if dev is None:
            dev = _Device(hello.device_id, hello)
            self._devices[hello.device_id] = dev
            new_boot = True
            log.info("MCU %s (fw %s) on %s", hello.device_id, hello.fw_version, link.url)
        else:
            new_boot = dev.hello.boot_id != hello.boot_id
            dev.hello = hello
            dev.boots += int(new_boot)
        if new_boot:
            dev.clock.reset()
            link.endpoint.reset_rx_window()
            dev.fail_waiters(("load", "abort"), _DeviceReset("MCU rebooted"))
        if dev.link is not link:
            if dev.link is not None and dev.link.device_id == dev.device_id:
                dev.link.device_id = None
            dev.link = link
        link.device_id = hello.device_id
        link.endpoint.peer_max_frame = hello.max_frame
        dev.last_seen = time.monotonic()
        dev.clock.observe(hello.mcu_ms, time.time())
        dev.notify()

    def _on_readings(self, dev: _Device, msg: Readings) -> None:
        boot = dev.hello.boot_id
        fallback = time.time()
        out: list[Reading] = []
        for i, r in enumerate(msg.items):
            seq = (msg.first_seq + i) & 0xFFFFFFFF
            if not dev.seen_readings.add((boot, seq)):
                continue
            ts = dev.clock.to_gateway((msg.base_ms + r.dt_ms) & 0xFFFFFFFF, fallback)
            out.append(Reading(dev.device_id, sensor_name(r.sensor), r.value, ts, seq, boot))
        if out:
            try:
                self._readings_q.put_nowait((dev.device_id, out))
            except asyncio.QueueFull:
                self.readings_dropped += len(out)
                dev.readings_dropped += len(out)
                log.warning("readings consumer is behind; dropped %d readings", len(out))

    async def _deliver_readings(self) -> None:
        while True:
            device_id, batch = await self._readings_q.get()
            if self.on_readings is None:
                continue
            try:
                await self.on_readings(device_id, batch)
            except Exception:
                log.exception("on_readings callback failed")

    @staticmethod
    def _resolve(dev: _Device, key: tuple[str, int], msg: Any) -> None:
        fut = dev.waiters.get(key)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    # ---- outgoing ------------------------------------------------------------------
    async def _wait_link(self, device_id: str, deadline: float) -> _Device:
        while True:
            dev = self._devices.get(device_id)
            if dev is not None and dev.link is not None and dev.link.connected:
                return dev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceUnavailable(f"MCU {device_id!r} is not connected")
            if dev is None:
                await asyncio.sleep(min(0.05, remaining))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dev.changed.wait(), min(remaining, 0.5))

    async def _request(
        self, device_id: str, key_kind: str, key_id: int, msg: AnyMessage, deadline: float,
        answer_wait: float = 1.0,
    ) -> Any:  # fmt: skip
        """Send ``msg`` and wait for the answer keyed (kind, id); repeat until deadline."""
        while True:
            dev = await self._wait_link(device_id, deadline)
            key = (key_kind, key_id)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            dev.waiters[key] = fut
            try:
                assert dev.link is not None
                await dev.link.send(msg)
                remaining = deadline - time.monotonic()
                return await asyncio.wait_for(fut, max(0.01, min(answer_wait, remaining)))
            except NackError as exc:
                raise MCUError(f"{device_id!r} refused {type(msg).__name__}: {exc}") from exc
            except (LinkError, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise DeviceUnavailable(f"no answer from {device_id!r}: {exc}") from exc
                log.debug("retrying %s to %s: %s", type(msg).__name__, device_id, exc)
            finally:
                if dev.waiters.get(key) is fut:
                    del dev.waiters[key]

    async def send_actuator(
        self, device_id: str, actuator: str, value: float, command_id: str, *,
        timeout: float = 10.0,
    ) -> ActuatorResult:  # fmt: skip
        """Run one actuator command at most once; returns the MCU's result.

        Safe to call again with the same ``command_id`` (e.g. after a crash): the MCU
        answers the stored result with ``duplicate=True`` instead of running it twice.
        """
        if actuator not in ACTUATOR_IDS:
            raise ValueError(f"unknown actuator {actuator!r}; known: {sorted(ACTUATOR_IDS)}")
        h = command_hash(command_id)
        cmd = ActuatorCmd(h, ACTUATOR_IDS[actuator], float(value))
        res: ActuatorResultMsg = await self._request(
            device_id, "act", h, cmd, time.monotonic() + timeout
        )
        return ActuatorResult(
            device_id=device_id,
            actuator=ACTUATOR_NAMES.get(res.actuator, actuator),
            command_id=command_id,
            status=ActuatorStatus(res.status)
            if res.status in ActuatorStatus.__members__.values()
            else ActuatorStatus.FAULT,
            applied_value=res.applied,
            duplicate=res.duplicate,
        )  # fmt: skip

    def check_budget(self, device_id: str, data: bytes) -> ModelNeeds:
        """Refuse (ModelBudgetError) a model that cannot run on ``device_id``.

        Checked on the gateway before a byte is sent, against what the MCU declared in
        HELLO: the model slot (flash) and the tensor arena (RAM, estimated from the model
        file as an upper bound of TFLite Micro's plan: firmware_bridge/tflite_model.py).
        """
        dev = self._devices.get(device_id)
        if dev is None:
            raise ModelLoadError(f"MCU {device_id!r} has not introduced itself")
        h = dev.hello
        if not h.caps & Capability.MODEL_LOAD:
            raise ModelBudgetError(f"MCU {device_id!r} (fw {h.fw_version}) cannot load models")
        try:
            needs = model_needs(data)
        except ModelFormatError as exc:
            raise ModelBudgetError(f"not an MCU model: {exc}") from exc
        if needs.flash_bytes > h.model_capacity:
            raise ModelBudgetError(
                f"model of {needs.flash_bytes} bytes does not fit the {h.model_capacity}-byte "
                f"model slot of {device_id!r}"
            )
        if h.arena_capacity and needs.arena_bytes > h.arena_capacity:
            raise ModelBudgetError(
                f"model needs up to {needs.arena_bytes} bytes of tensor arena; {device_id!r} "
                f"has {h.arena_capacity}"
            )
        return needs

    async def load_model(
        self, device_id: str, model_id: str, data: bytes, *, timeout: float = 60.0,
        attempts: int = 3,
    ) -> None:  # fmt: skip
        """Send a model in chunks and commit it atomically; raises ModelLoadError on failure.

        After a reset or a lost transfer the load restarts from BEGIN (up to ``attempts``).
        """
        self.check_budget(device_id, data)
        digest = hashlib.sha256(data).digest()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        for _attempt in range(attempts):
            try:
                await self._load_once(device_id, model_id, data, digest, deadline)
                return
            except _DeviceReset as exc:
                last = exc
                log.info("model load to %s restarts: %s", device_id, exc)
            except DeviceUnavailable as exc:
                raise ModelLoadError(f"model load to {device_id!r} failed: {exc}") from exc
        raise ModelLoadError(f"model load to {device_id!r} failed after {attempts} tries: {last}")

    async def _load_once(
        self, device_id: str, model_id: str, data: bytes, digest: bytes, deadline: float
    ) -> None:
        transfer = next(self._ids) & 0xFFFF
        begin = ModelLoadBegin(transfer, len(data), digest, model_id)
        st: ModelLoadStatusMsg = await self._request(device_id, "load", transfer, begin, deadline)
        if st.status == ModelLoadStatus.TOO_LARGE:
            raise ModelLoadError(f"model of {len(data)} bytes does not fit on {device_id!r}")
        if st.status != ModelLoadStatus.READY:
            raise ModelLoadError(f"MCU refused the load: {ModelLoadStatus(st.status).name}")
        dev = self._devices[device_id]
        boot = dev.hello.boot_id
        link = dev.link
        assert link is not None
        chunk = min(dev.hello.max_frame, link.endpoint.max_frame) - 6 - ModelLoadChunk.OVERHEAD
        # The MCU also fails the "load" waiter when it loses the transfer (ERROR NO_TRANSFER).
        abort: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        dev.waiters[("abort", transfer)] = abort

        async def send_chunk(off: int) -> None:
            await link.send(ModelLoadChunk(transfer, off, data[off : off + chunk]))

        try:
            sends = asyncio.gather(*(send_chunk(o) for o in range(0, len(data), chunk)))
            done, _ = await asyncio.wait(
                {sends, abort}, timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            if abort in done:
                sends.cancel()
                with contextlib.suppress(BaseException):
                    await sends
                abort.result()  # raises _DeviceReset
            if sends not in done:
                sends.cancel()
                raise DeviceUnavailable("model transfer timed out")
            try:
                sends.result()
            except LinkError as exc:
                raise _DeviceReset(f"link failed during transfer: {exc}") from exc
        finally:
            if dev.waiters.get(("abort", transfer)) is abort:
                del dev.waiters[("abort", transfer)]
            if not abort.done():
                abort.cancel()
        if dev.hello.boot_id != boot:
            raise _DeviceReset("MCU rebooted during transfer")
        st = await self._request(
            device_id, "load", transfer, ModelLoadCommit(transfer), deadline, answer_wait=3.0
        )
        if st.status == ModelLoadStatus.COMMITTED:
            dev.models[model_id] = digest.hex()
            if dev.hello.model_slots:
                # A/B slots: the new model goes into the slot of the older one, which is gone
                dev.slots.insert(0, (model_id, digest.hex()))
                del dev.slots[dev.hello.model_slots :]
                kept = {m for m, _ in dev.slots}
                for gone in [m for m in dev.models if m not in kept]:
                    del dev.models[gone]
            return
        if st.status in (ModelLoadStatus.INCOMPLETE, ModelLoadStatus.NO_TRANSFER):
            raise _DeviceReset(f"commit found {ModelLoadStatus(st.status).name}")
        raise ModelLoadError(f"MCU refused the commit: {ModelLoadStatus(st.status).name}")

    async def infer(
        self, device_id: str, model_id: str, inputs: np.ndarray, *, timeout: float = 5.0
    ) -> np.ndarray:
        """Run ``model_id`` on the MCU for one row (1-D input) or several rows (2-D)."""
        out, _ = await self.infer_timed(device_id, model_id, inputs, timeout=timeout)
        return out

    async def infer_timed(
        self, device_id: str, model_id: str, inputs: np.ndarray, *, timeout: float = 5.0
    ) -> tuple[np.ndarray, int]:
        """Like :meth:`infer`, plus the MCU's own compute time in microseconds (its clock)."""
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim not in (1, 2) or x.size == 0:
            raise ValueError(f"inputs must be a non-empty 1-D or 2-D array, got {x.shape}")
        rows = x.reshape(1, -1) if x.ndim == 1 else x
        dev = await self._wait_link(device_id, time.monotonic() + timeout)
        budget = min(dev.hello.max_frame, DEFAULT_MAX_FRAME) - 6 - 16 - len(model_id.encode())
        per_req = max(1, budget // 4 // rows.shape[1])
        deadline = time.monotonic() + timeout
        outs: list[np.ndarray] = []
        mcu_us = 0
        for start in range(0, rows.shape[0], per_req):
            part = rows[start : start + per_req]
            req_id = next(self._ids) & 0xFFFF
            req = InferReq(req_id, part.shape[0], model_id, tuple(part.ravel().tolist()))
            resp: InferResp = await self._request(device_id, "infer", req_id, req, deadline)
            if resp.status != InferStatus.OK:
                known = resp.status in InferStatus.__members__.values()
                name = InferStatus(resp.status).name if known else str(resp.status)
                raise InferenceError(f"{device_id!r} could not run {model_id!r}: {name}")
            outs.append(np.asarray(resp.values, dtype=np.float32).reshape(resp.rows, -1))
            mcu_us += resp.latency_us
        out = np.concatenate(outs)
        return (out[0] if x.ndim == 1 else out), mcu_us


class _ManagerCollector(Collector):
    def __init__(self, manager: MCUManager) -> None:
        self._manager = manager

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic families: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        return self._manager.metric_families()
