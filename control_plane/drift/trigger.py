"""Acting on a retraining decision: an MLflow run, a pluggable hook, and alerts.

The MLflow run (experiment ``farmiq-retraining``) records the decision, its reasons, the
numbers behind it and the data window, so every retraining has an auditable cause. The
hook starts training however a site does it: a command (the decision JSON on stdin and in
``FARMIQ_RETRAIN_*`` variables) or a signed webhook (the decision JSON POSTed). Alerts
(drift, concept drift, retraining decided / started / finished) go through the control
plane's AlertBus (control_plane/alerts): MQTT ``farmiq/v1/cp/alert/<kind>``, RabbitMQ and
signed webhooks.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx

from control_plane.alerts.model import Alert, Kind, Severity
from control_plane.drift.retraining import Decision, RetrainingDecider
from control_plane.security.webhooks import sign_webhook
from farmiq import topics

log = logging.getLogger(__name__)

EXPERIMENT = "farmiq-retraining"


class Hook(Protocol):
    def __call__(self, payload: Mapping[str, Any]) -> dict[str, Any]: ...


class CommandHook:
    """Run a command; the decision JSON goes to its stdin. A failing command is reported
    in the result (and the decision record), never raised."""

    def __init__(
        self, argv: Sequence[str], timeout_s: float = 300.0, env: Mapping[str, str] | None = None
    ) -> None:
        if not argv:
            raise ValueError("command hook needs a command")
        self.argv = list(argv)
        self.timeout_s = timeout_s
        self.env = dict(env or {})

    def __call__(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        env = {
            **os.environ,
            **self.env,
            "FARMIQ_RETRAIN_MODEL": str(payload.get("model", "")),
            "FARMIQ_RETRAIN_RUN_ID": str(payload.get("mlflow_run_id") or ""),
            "FARMIQ_RETRAIN_DECISION_ID": str(payload.get("id") or ""),
        }
        try:
            p = subprocess.run(
                self.argv,
                input=json.dumps(payload).encode(),
                env=env,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"kind": "command", "ok": False, "error": str(exc)}
        return {
            "kind": "command",
            "ok": p.returncode == 0,
            "returncode": p.returncode,
            "stdout": p.stdout.decode(errors="replace")[-2000:],
            "stderr": p.stderr.decode(errors="replace")[-2000:],
        }


class WebhookHook:
    """POST the decision JSON, signed (HMAC-SHA256 over ``<timestamp>.<body>``, the headers
    of control_plane/security/webhooks.py). Without a secret nothing is sent: every
    outgoing webhook is signed. The control plane sets ``secret`` at start-up."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("webhook URL must be http(s)")
        self.url = url
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.secret = secret

    def __call__(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        if not self.secret:
            return {"kind": "webhook", "ok": False, "error": "no webhook signing secret"}
        body = json.dumps(dict(payload), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            **self.headers,
            **sign_webhook(self.secret, body),
        }
        try:
            r = httpx.post(self.url, content=body, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            return {"kind": "webhook", "ok": False, "error": str(exc)}
        return {
            "kind": "webhook",
            "ok": r.is_success,
            "status": r.status_code,
            "body": r.text[-2000:],
        }


def hook_from_config(doc: Mapping[str, Any] | None) -> Hook | None:
    """``{"command": ["python", "train.py"]}`` or ``{"webhook": "https://..."}``."""
    if not doc:
        return None
    if "command" in doc:
        cmd = doc["command"]
        if not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
            raise ValueError("retraining hook: 'command' must be a list of strings")
        return CommandHook(cmd, float(doc.get("timeout_s", 300.0)))
    if "webhook" in doc:
        secret = doc.get("secret")
        return WebhookHook(
            str(doc["webhook"]),
            float(doc.get("timeout_s", 10.0)),
            secret=str(secret) if secret else None,
        )
    raise ValueError("retraining hook: give 'command' or 'webhook'")


class Alerts:
    """The drift area's alert source. It builds :class:`Alert` objects; the control plane's
    :class:`AlertBus` (set as ``bus`` by control_plane/alerts/setup.py) sends them to MQTT,
    RabbitMQ and signed webhooks. Without a bus (a bare drift area) they go to MQTT only."""

    def __init__(
        self, publish: Callable[[str, bytes], Any] | None = None, webhook: str | None = None
    ) -> None:
        self.publish = publish
        self.webhook_url = webhook  # picked up by the AlertBus as one more signed webhook
        self.bus: Any = None

    def send(self, alert: Alert) -> list[str]:
        """Best effort; returns where it went. An alert path that fails is logged."""
        if self.bus is not None:
            return list(self.bus.send(alert))
        if self.publish is None:
            return []
        try:
            self.publish(topics.cp_alert(alert.kind.value), alert.body())
            return ["mqtt"]
        except Exception:
            log.exception("%s alert over MQTT failed", alert.kind.value)
            return []


class RetrainingTrigger:
    def __init__(
        self,
        decider: RetrainingDecider,
        mlflow_client: Any,
        *,
        hook: Hook | None = None,
        alerts: Alerts | None = None,
        artifact_location: str | None = None,
    ) -> None:
        self.decider = decider
        self.mlflow = mlflow_client
        self.hook = hook
        self.alerts = alerts or Alerts()
        self.artifact_location = artifact_location
        # Audit of the automatic action (control_plane/security): (target, detail) -> None
        self.audit: Callable[[str, dict[str, Any]], None] | None = None

    def _experiment_id(self) -> str:
        exp = self.mlflow.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return str(exp.experiment_id)
        return str(
            self.mlflow.create_experiment(EXPERIMENT, artifact_location=self.artifact_location)
        )

    def trigger(
        self,
        model: str,
        *,
        force: bool = False,
        since: float | None = None,
        until: float | None = None,
        reason: str | None = None,
        by: str = "operator",
    ) -> Decision:
        """Decide; when the policy says retrain (or ``force``), record an MLflow run, call
        the hook and send an alert. Returns the (stored) decision. ``by`` says who forced
        it (an operator, or the retraining schedule)."""
        d = self.decider.decide(model, since=since, until=until)
        if force and not d.retrain:
            d.reasons.append(f"forced by {by}: {reason or 'no reason given'}")
        elif reason:
            d.reasons.append(f"operator note: {reason}")
        self._drift_alerts(d)
        if not (d.retrain or force):
            return d
        links = {"decisions": f"/api/v1/retraining/decisions/{model}"}
        self.alerts.send(
            Alert(
                kind=Kind.RETRAINING_DECIDED, severity=Severity.INFO, model=model,
                message=f"retraining {model}: {'; '.join(d.reasons)}"[:2000], links=links,
                details={"decision_id": d.id, "forced": bool(force and not d.retrain)},
                dedup_key=f"retraining_decided:{model}:{d.id}",
            )
        )  # fmt: skip
        run = self.mlflow.create_run(
            self._experiment_id(),
            tags={
                "farmiq.model": model,
                "farmiq.decision_id": str(d.id),
                "farmiq.forced": str(bool(force and not d.retrain)).lower(),
                "mlflow.runName": f"retrain-{model}",
            },
        )
        run_id = run.info.run_id
        c = self.mlflow
        c.log_param(run_id, "model", model)
        c.log_param(run_id, "window_start", d.window_start)
        c.log_param(run_id, "window_end", d.window_end)
        for k in ("drift_share", "max_psi", "rows", "drifted_device_share"):
            v = d.metrics.get(k)
            if isinstance(v, int | float):
                c.log_metric(run_id, k, float(v))
        c.log_dict(run_id, {**d.to_dict(), "policy": vars(self.decider.policy)}, "decision.json")
        payload = {**d.to_dict(), "mlflow_run_id": run_id}
        links = {**links, "mlflow_run": f"runs:/{run_id}"}
        hook_result = None
        if self.hook is not None:
            self.alerts.send(
                Alert(
                    kind=Kind.RETRAINING_STARTED, severity=Severity.INFO, model=model,
                    message=f"retraining {model} started (MLflow run {run_id})", links=links,
                    details={"decision_id": d.id, "mlflow_run_id": run_id},
                    dedup_key=f"retraining_started:{model}:{d.id}",
                )
            )  # fmt: skip
            hook_result = self.hook(payload)
        c.set_terminated(
            run_id, "FINISHED" if not hook_result or hook_result.get("ok") else "FAILED"
        )
        self.decider.mark_triggered(d, run_id, hook_result, forced=force and not d.retrain)
        if self.audit is not None:
            try:
                self.audit(model, {"decision_id": d.id, "mlflow_run_id": run_id,
                                   "forced": bool(force and not d.retrain), "reasons": d.reasons,
                                   "hook_ok": None if hook_result is None else hook_result.get("ok")})  # fmt: skip
            except Exception:
                log.exception("could not audit the retraining trigger for %s", model)
        ok = None if hook_result is None else bool(hook_result.get("ok"))
        self.alerts.send(
            Alert(
                kind=Kind.RETRAINING_FINISHED,
                severity=Severity.WARNING if ok is False else Severity.INFO,
                model=model,
                message=f"retraining {model}: "
                + ("no hook configured; decision recorded" if ok is None
                   else "hook succeeded" if ok else f"hook failed: {hook_result}")[:1900],
                links=links,
                details={"decision_id": d.id, "mlflow_run_id": run_id, "hook_ok": ok,
                         "reasons": d.reasons},
                dedup_key=f"retraining_finished:{model}:{d.id}",
            )
        )  # fmt: skip
        return d

    def _drift_alerts(self, d: Decision) -> None:
        """A drift alert when the decision saw a drift signal, a concept-drift alert when
        devices reported concept drift in the period: each once per period of new windows
        (the dedup key names the period's last window: deciding again on the same windows,
        as the retraining schedule does, repeats the key and the alert bus drops the
        repeat)."""
        m = d.metrics
        links = {"drift": "/api/v1/drift/models", "report": f"/api/v1/drift/report/{d.model}"}
        signals = [r for r in d.reasons if not r.startswith(("no drift signal", "only "))]
        if not any(r.startswith("no drift signal") for r in d.reasons) and signals:
            self.alerts.send(
                Alert(
                    kind=Kind.DRIFT,
                    severity=Severity.WARNING,
                    model=d.model,
                    message=f"drift on {d.model}: {signals[0]}"[:2000],
                    links=links,
                    details={k: m.get(k) for k in ("drift_share", "max_psi", "rows",
                             "drifted_features", "drifted_device_share")},
                    dedup_key=f"drift:{d.model}:{d.window_end}",
                )
            )  # fmt: skip
        devices = m.get("concept_drift_devices") or []
        if devices:
            self.alerts.send(
                Alert(
                    kind=Kind.CONCEPT_DRIFT,
                    severity=Severity.WARNING,
                    model=d.model,
                    message=f"concept drift on {d.model} reported by {len(devices)} device(s)",
                    links=links,
                    details={"devices": devices[:50]},
                    dedup_key=f"concept_drift:{d.model}:{d.window_end}",
                )
            )
