"""The agent as a systemd service: signals, readiness, watchdog, reload and graceful stop.

- SIGTERM/SIGINT: stop. In order: tell systemd STOPPING=1; stop accepting connections and
  let in-flight HTTP requests finish (edge_agent/api/http_server.py, capped so the whole stop
  fits in the unit's ``TimeoutStopSec``); give the durable outbox a few seconds to drain
  while the broker is still connected; close the serial (MCU) links; then say "offline" on
  MQTT and disconnect. Anything still queued stays on disk for the next start.
- SIGHUP: reload the configuration file. A bad file is logged and the running
  configuration is kept; fields that need a restart (device id, state dir, API and broker
  settings, ...) are reported, not applied half-way.
- READY=1 once the installed models are loaded and warmed and the local API listens (with
  no model installed too: the agent has started and waits for a bundle; STATUS= then
  begins "started, not serving: no model installed");
  WATCHDOG=1 at half of ``WatchdogSec`` from the event loop itself, so a wedged loop stops
  the pings and systemd restarts the agent; STATUS= says what the agent is doing.

Other components add their own steps with ``on_shutdown(name, fn)`` and
``on_reload(fn)`` (sync or async callables); the composition root registers the MCU links'
close there. The lifecycle gets narrow ports (``LifecyclePorts``), never the agent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.daemon.sd_notify import SdNotifier

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.models.install_service import InstallService
    from edge_agent.models.serving import ModelSet
    from edge_agent.uplink.outbox import Outbox
    from edge_agent.uplink.port import LinkState

log = logging.getLogger(__name__)

# The unit's TimeoutStopSec is 30 s; the steps below are capped well inside it.
HTTP_DRAIN_S = 10.0
OUTBOX_FLUSH_S = 5.0
OUTBOX_STALL_S = 1.0  # give up early when no acknowledgement arrives
STEP_TIMEOUT_S = 5.0

# Configuration fields a running agent cannot change under its feet.
RESTART_REQUIRED = ("device_id", "state_dir", "api", "mqtt", "intra_op_threads", "mcu_ports")
Hook = Callable[..., Any]


@dataclass
class LifecyclePorts:
    link: LinkState  # the MQTT link (its paho client, when it has one, reports failures)
    started_at: float
    get_config: Callable[[], AgentConfig]
    set_config: Callable[[AgentConfig], None]
    ready: Callable[[], tuple[bool, str]]
    models: ModelSet
    installs: InstallService
    publish_state: Callable[[], Awaitable[None]]
    request_stop: Callable[[], None]
    outbox: Outbox | None = None
    config_path: Callable[[], str | None] = lambda: None


async def _call(fn: Hook, *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        return await result
    return result


class Lifecycle:
    def __init__(self, ports: LifecyclePorts, notifier: SdNotifier | None = None) -> None:
        self.ports = ports
        self.notifier = notifier or SdNotifier()
        self._shutdown_hooks: list[tuple[str, Hook]] = []
        self._reload_hooks: list[Hook] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_status = ""
        self.reloads = 0
        self.last_reload: dict[str, Any] | None = None
        self.stopping = False
        self._connect_failed = False
        self._watch_broker()

    # -- extension points ------------------------------------------------------------------
    def on_shutdown(self, name: str, fn: Hook) -> None:
        """Run ``fn()`` during graceful stop, after HTTP drained and before MQTT closes."""
        self._shutdown_hooks.append((name, fn))

    def on_reload(self, fn: Hook) -> None:
        """Run ``fn(old_config, new_config)`` after a successful SIGHUP reload."""
        self._reload_hooks.append(fn)

    # -- broker state ----------------------------------------------------------------------
    def _watch_broker(self) -> None:
        # paho reports a refused or timed-out connect only through on_connect_fail; chain it
        # so "offline" is known rather than guessed (MqttLink does not track it itself).
        client = getattr(self.ports.link, "_client", None)
        if client is None:
            return
        previous = client.on_connect_fail

        def failed(*args: Any) -> None:
            self._connect_failed = True
            if previous is not None:
                previous(*args)

        client.on_connect_fail = failed

    def broker_state(self) -> str:
        """ "connected"; "offline" once a connect failed, the link dropped, or the connect
        timeout passed since start; "connecting" before that."""
        link = self.ports.link
        if link.connected.is_set():
            return "connected"
        if (
            self._connect_failed
            or getattr(link, "last_error", None)  # e.g. the broker refused the credentials
            or link.reconnects
            or getattr(link, "_ever_connected", False)
        ):
            return "offline"
        waited = time.time() - self.ports.started_at
        timeout = self.ports.get_config().mqtt.connect_timeout
        return "offline" if waited > timeout else "connecting"

    def broker_text(self) -> str:
        """``broker_state`` with the reason when offline: "offline: connection refused
        127.0.0.1:1883", "offline: TLS error: ...", "offline: refused by the broker: Not
        authorized"."""
        state = self.broker_state()
        error = getattr(self.ports.link, "last_error", None)
        return f"{state}: {error}" if state != "connected" and error else state

    # -- signals ---------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, sig: int) -> None:
        log.info("received %s: stopping gracefully", signal.Signals(sig).name)
        self.ports.request_stop()

    def _on_hup(self) -> None:
        self._spawn(self.reload())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # -- running ---------------------------------------------------------------------------
    def status_text(self) -> str:
        ok, why = self.ports.ready()
        models = ", ".join(f"{m.name} v{m.version}" for m in self.ports.models.all()) or "no models"
        link = f"broker {self.broker_text()}"
        # READY=1 means "started" to systemd (the API listens, bundles can arrive); whether
        # the agent serves is said here, first: "ready: serving ..." or "started, not
        # serving: no model installed ..." (docs/operations.md).
        head = "ready" if ok else "started, not serving"
        if why == "no model installed":
            why += " (waiting for a bundle)"
        return f"{head}: {why}; {models}; {link}"

    def started(self) -> None:
        """Call once the agent serves: READY=1, then watchdog pings and status updates."""
        self._last_status = self.status_text()
        self.notifier.ready(self._last_status)
        log.info(
            "agent started", extra={"status": self._last_status, "systemd": self.notifier.enabled}
        )
        if self.notifier.enabled:
            self._spawn(self._heartbeat())

    async def _heartbeat(self) -> None:
        # Pings come from the event loop: if the loop wedges, systemd's watchdog fires.
        interval = self.notifier.watchdog_interval() or 5.0
        while not self.stopping:
            if self.notifier.watchdog_usec:
                self.notifier.watchdog()
            status = self.status_text()
            if status != self._last_status:
                self._last_status = status
                self.notifier.status(status)
            await asyncio.sleep(min(interval, 5.0))

    # -- reload ----------------------------------------------------------------------------
    def config_path(self) -> Path | None:
        path = self.ports.config_path() or os.environ.get("FARMIQ_AGENT_CONFIG")
        if path:
            return Path(path)
        from edge_agent.config import DEFAULT_PATH

        return DEFAULT_PATH if DEFAULT_PATH.exists() else None

    async def reload(self) -> dict[str, Any]:
        from edge_agent.config import load_agent_config
        from farmiq.config import ConfigError

        self.notifier.reloading()
        path = self.config_path()
        result: dict[str, Any] = {"at": time.time(), "path": str(path) if path else None}
        try:
            new = await asyncio.to_thread(load_agent_config, path)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            result.update(ok=False, error=str(exc))
        else:
            result.update(ok=True, **await self.apply(new))
            log.info("configuration reloaded", extra={"reload": result})
        self.reloads += 1
        self.last_reload = result
        self.notifier.ready(self.status_text() + ("" if result["ok"] else "; reload failed"))
        return result

    async def apply(self, new: AgentConfig) -> dict[str, Any]:
        ports = self.ports
        old = ports.get_config()
        restart = [f for f in RESTART_REQUIRED if getattr(old, f) != getattr(new, f)]
        if restart:
            log.warning("reload: %s change(s) need a restart; keeping the running values", restart)
        effective = new.model_copy(update={f: getattr(old, f) for f in RESTART_REQUIRED})
        changed = [
            f
            for f in type(new).model_fields
            if f not in RESTART_REQUIRED and getattr(old, f) != getattr(effective, f)
        ]
        if "trust_root" in changed or effective.trust_root.exists():
            # Re-read even when the path is unchanged: rotating keys rewrites the file. The
            # one trust holder, under the install lock (InstallService.reload_trust).
            error = await ports.installs.reload_trust(effective.trust_root)
            if error is not None:
                log.error(
                    "reload: trust root %s unusable, keeping the old one: %s",
                    effective.trust_root,
                    error,
                )
                effective = effective.model_copy(update={"trust_root": old.trust_root})
        ports.installs.set_policy(
            hardware_class=effective.hardware_class, max_bundle_bytes=effective.max_bundle_bytes
        )
        ports.set_config(effective)
        for hook in list(self._reload_hooks):
            try:
                await _call(hook, old, effective)
            except Exception:
                log.exception("reload hook %r failed", hook)
        if ports.link.connected.is_set():
            try:
                await ports.publish_state()
            except Exception as exc:
                log.warning("reload: could not publish state: %s", exc)
        return {"changed": changed, "restart_required": restart}

    # -- graceful stop ---------------------------------------------------------------------
    def begin_stop(self) -> None:
        self.stopping = True
        self.notifier.stopping("stopping: draining requests, flushing outbox, closing links")

    async def after_http_drained(self) -> None:
        """Flush the outbox, then the registered steps (serial links...) while MQTT is up."""
        await self._flush_outbox()
        for name, fn in list(self._shutdown_hooks):
            await self._step(name, fn)

    async def _flush_outbox(self) -> None:
        outbox = self.ports.outbox
        if outbox is None:
            return
        deadline = time.monotonic() + OUTBOX_FLUSH_S
        try:
            left = await asyncio.to_thread(outbox.pending)
            progress_at = time.monotonic()
            while left and self.ports.link.connected.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                now_left = await asyncio.to_thread(outbox.pending)
                if now_left < left:
                    progress_at = time.monotonic()
                elif time.monotonic() - progress_at > OUTBOX_STALL_S:
                    break  # nobody is acknowledging (control plane away): keep it on disk
                left = now_left
            left = await asyncio.to_thread(outbox.pending)
        except Exception as exc:
            log.warning("outbox flush failed: %s", exc)
            return
        if left:
            log.info("outbox: %d item(s) stay on disk for the next start", left)

    async def _step(self, name: str, fn: Hook) -> None:
        try:
            await asyncio.wait_for(_call(fn), STEP_TIMEOUT_S)
        except Exception as exc:  # one stuck step must not keep the others from running
            log.warning("shutdown step %s failed: %s", name, exc)

    def finished(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        log.info("agent stopped")
        self.notifier.close()
