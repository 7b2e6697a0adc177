"""The hybrid router: where each inference request runs, and why.

Per request the router picks a target among those the bundle allows
(``manifest.serving.targets``, in order of preference; edge first by default because it
is free and private), using:

- which targets hold the model (the edge holds what is installed; the MCU target asks
  firmware_bridge; a cloud target that answered "unknown model" is skipped),
- the local queue depth and recent latency (an EWMA per model and target),
- the cloud link's health (one circuit breaker per remote target),
- the request's latency budget (targets expected to miss it go last),
- cost (when the cascade picks a remote to escalate to, the cheapest healthy one).

On failure or timeout it falls back to the next target, inside the budget. After an edge
answer of a classifier with ``serving.confidence_threshold`` set, the confidence cascade
(KubeEdge Sedna's joint inference, done per row) sends only the rows whose confidence
(1 - normalized entropy of the class probabilities) is under the bar to the cloud model
and merges the answers; when the cloud cannot be asked, the local answer goes back flagged
and the input is kept on disk for later.

Every answer names its target, model version, latency and the reason it went there.

The decisions (plan, reason, cascade choice, fast path) are in ``policy.py``, a table;
this module is the executor: it runs the plan, falls back, merges cascade answers, feeds
the observer channel (``observers.py``) and raises domain errors (``RoutingError``
kinds) that only the HTTP layer turns into statuses.

The hot path is written for a 10 us model: the per-model state (specs, targets,
thresholds, batcher) is resolved once per loaded model and found again with a dict lookup
and an identity check, no pydantic, no per-request closures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import numpy as np
import orjson

from edge_agent.inference import policy
from edge_agent.inference.breaker import CircuitBreaker
from edge_agent.inference.escalation_store import EscalationStore
from edge_agent.inference.micro_batcher import MicroBatcher
from edge_agent.inference.observers import ObserverChannel
from edge_agent.inference.result import InferenceResult
from edge_agent.inference.result_cache import ResultCache, input_key
from edge_agent.inference.routing_metrics import RoutingMetrics
from edge_agent.inference.targets.remote_target import RemoteTarget, TargetError
from edge_agent.inference.validation import InputError, parse_inputs
from edge_agent.models.serving import LoadedModel, ModelSet, probability_output, warmup_inputs

log = logging.getLogger(__name__)

EDGE = policy.EDGE
_EWMA = 0.2
_OPT = orjson.OPT_SERIALIZE_NUMPY
_FAST_REASON = "edge first (bundle preference); local model"


class RoutingError(Exception):
    """A request the router cannot serve. Domain errors only: the HTTP API maps each kind
    to its status (edge_agent/api/errors.py), nothing here knows about HTTP."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class UnknownModel(RoutingError):
    """No model of that name is installed."""


class InvalidInput(RoutingError):
    """The inputs do not match the model's declared tensors."""


class NoTarget(RoutingError):
    """No target the bundle allows can serve the model now (not configured, breaker open)."""


class AllTargetsFailed(RoutingError):
    """Every target tried failed."""


class BudgetExhausted(AllTargetsFailed):
    """The latency budget ran out before any target answered."""


def normalized_entropy_confidence(proba: np.ndarray) -> np.ndarray:
    """Per row: 1 - H(p) / ln(K). 1 = certain (one class has all the mass), 0 = uniform."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        p = p[np.newaxis, :]
    k = p.shape[-1]
    if k < 2:
        return np.ones(p.shape[0])
    p = np.clip(p, 1e-12, 1.0)
    p = p / p.sum(axis=-1, keepdims=True)
    h = -(p * np.log(p)).sum(axis=-1)
    return 1.0 - h / math.log(k)


class _ModelState:
    """Everything about one loaded model the router needs per request, resolved once."""

    __slots__ = (
        "batcher",
        "checks",
        "cloud_name",
        "edge_observe",
        "edge_stats",
        "ewma",
        "fast",
        "fast_count",
        "fast_one",
        "first_input",
        "inline",
        "manifest",
        "max_batch",
        "model",
        "name",
        "output_names",
        "output_ranks",
        "prob_output",
        "req_hist",
        "req_observe",
        "run",
        "single_row_us",
        "specs",
        "targets",
        "threshold",
        "version",
    )  # fmt: skip

    def __init__(self, model: LoadedModel, inline_max_us: float, metrics: RoutingMetrics) -> None:
        m = model.manifest
        self.edge_stats = metrics.stats(m.name, EDGE)
        self.req_hist = metrics.request_hist(m.name)
        # The fast path records with a bare list append (Histogram.observe without the call)
        self.edge_observe = self.edge_stats.hist.pending.append
        self.req_observe = self.req_hist.pending.append
        self.model = model
        self.name = m.name
        self.version = m.version
        self.manifest = m
        # Skip LoadedModel.preprocess's per-call manifest lookup when there is nothing to do.
        self.run = model.run if m.preprocessing.get("standardize") else _direct_run(model)
        self.specs = [
            (s.name, np.dtype(s.dtype), len(s.shape), s.shape, not s.allow_nan) for s in m.inputs
        ]
        # What ``_fast_arrays`` checks per input, resolved once: the fixed shape after the
        # batch axis as one tuple (None when an inner axis is dynamic: then axis by axis),
        # and whether a NaN/inf check applies.
        self.checks = [
            (
                name, dtype, rank, shape,
                tuple(shape[1:]) if rank and shape[0] is None and None not in shape[1:] else None,
                finite and dtype.kind == "f",
            )
            for name, dtype, rank, shape, finite in self.specs
        ]  # fmt: skip
        self.fast_one = (
            _one_input_check(self.checks[0], m.serving.max_batch) if len(self.checks) == 1 else None
        )
        self.first_input = m.inputs[0].name
        self.fast_count = 0  # fast-path decisions, folded into the metrics when read
        self.targets: list[str] = list(dict.fromkeys(m.serving.targets)) or [EDGE]
        self.max_batch = m.serving.max_batch
        self.cloud_name = m.serving.cloud_model or m.name
        self.output_names = [o.name for o in m.outputs]
        self.output_ranks = {o.name: len(o.shape) for o in m.outputs}
        self.threshold = m.serving.confidence_threshold if m.task == "classification" else None
        self.prob_output = (
            probability_output(model.manifest) if self.threshold is not None else None
        )
        if self.prob_output is None:
            self.threshold = None
        self.single_row_us = _measure_single_row_us(model)
        self.inline = self.single_row_us <= inline_max_us
        self.batcher: MicroBatcher | None = None
        if not self.inline:
            self.batcher = MicroBatcher(
                m.name,
                model.run,
                max_batch=m.serving.max_batch,
                max_delay_ms=m.serving.max_delay_ms,
            )
        self.ewma: dict[str, float] = {EDGE: self.single_row_us / 1000.0}
        # The common case, taken with no planning at all (policy.takes_fast_path, resolved
        # once here; the budget check stays inline on the hot path).
        self.fast = policy.takes_fast_path(self, None)

    def fold(self) -> None:
        self.edge_stats.hist.fold()
        self.req_hist.fold()

    def edge_expected_ms(self) -> float:
        base = self.ewma[EDGE]
        if self.batcher is not None:
            # rows ahead of us, in batches, each about as long as a full batch takes
            depth = self.batcher.queue_depth
            if depth:
                base += base * (1 + depth / max(1, self.max_batch))
        return base


def _fast_arrays(st: _ModelState, inputs: Any) -> dict[str, np.ndarray] | None:
    """The inputs as arrays when they are plainly valid, else None (then ``parse_inputs``
    does the slow, exact check and says what is wrong). Cheaper than ``parse_inputs`` by
    a few microseconds, which is half the cost of a tiny model."""
    checks = st.checks
    if st.fast_one is None:
        if type(inputs) is not dict or len(inputs) != len(checks):
            return None
        for check in checks:
            if not _plainly_valid(inputs.get(check[0]), check, st.max_batch):
                return None
        return inputs
    return st.fast_one(inputs)  # one input (the common case)


def _one_input_check(check: tuple[Any, ...], max_batch: int) -> Any:
    """``_fast_arrays`` for a one-input model, with the spec bound once (closure cells, no
    tuple unpacking or second call per request)."""
    name, dtype, rank, shape, tail, finite = check
    ndarray = np.ndarray
    newaxis = np.newaxis

    def fast_one(inputs: Any) -> dict[str, np.ndarray] | None:
        t = type(inputs)
        if t is dict:
            if len(inputs) != 1:
                return None
            a = inputs.get(name)
            if type(a) is not ndarray:
                return None
            arrays = inputs
        elif t is ndarray:
            a = inputs if inputs.ndim == rank or rank < 2 else inputs[newaxis, ...]
            arrays = {name: a}
        elif t is list:
            try:
                a = np.array(inputs, dtype=dtype)
            except (ValueError, TypeError):
                return None
            if rank >= 2 and a.ndim == rank - 1:
                a = a[newaxis, ...]
            arrays = {name: a}
        else:
            return None
        if a.dtype is not dtype and a.dtype != dtype:
            return None
        ash = a.shape
        if len(ash) != rank:
            return None
        if rank:
            if not 0 < ash[0] <= max_batch:
                return None
            if tail is not None:
                if ash[1:] != tail:
                    return None
            elif not _shape_fits(shape, ash):
                return None
        if finite:
            # NaN or inf makes the sum NaN or inf (see _plainly_valid); one row of a
            # rank-2 input skips the ravel.
            if rank == 2 and ash[0] == 1:
                total = sum(a.tolist()[0])
            elif a.size <= 256:
                total = sum(a.ravel().tolist())
            else:
                total = float(a.sum())
            if total - total != 0.0:
                return None
        return arrays

    return fast_one


def _shape_fits(shape: list[int | None], got: tuple[int, ...]) -> bool:
    return all(w is None or w == g for w, g in zip(shape, got, strict=True))


def _plainly_valid(a: Any, check: tuple[Any, ...], max_batch: int) -> bool:
    _, dtype, rank, shape, tail, finite = check
    if type(a) is not np.ndarray or (a.dtype is not dtype and a.dtype != dtype):
        return False
    if a.ndim != rank:
        return False
    if rank:
        ash = a.shape
        if not 0 < ash[0] <= max_batch:
            return False
        if tail is not None:
            if ash[1:] != tail:
                return False
        elif not _shape_fits(shape, ash):
            return False
    if finite:
        # A NaN or inf makes the sum NaN or inf (a finite-but-overflowing sum falls to the
        # exact check). For a few values a Python sum over tolist() is 5x cheaper than any
        # numpy reduction's call overhead.
        total = sum(a.ravel().tolist()) if a.size <= 256 else float(a.sum())
        if total - total != 0.0:
            return False
    return True


def _direct_run(model: LoadedModel) -> Any:
    """The model's run function; for an ONNX Runtime CPU session, one that calls the
    session's C++ ``run`` directly.

    ``InferenceSession.run`` re-checks input names, OrtValue ownership and WebGPU graph
    capture on every call (~1.3 us, a fifth of a tiny model's run) and retries on an
    execution-provider failure. The router has already checked the names (``_fast_arrays``
    or ``parse_inputs``), feeds plain numpy arrays and, on a CPU-only session, has no
    provider to fall back from, so none of that applies. Anything else (CUDA/TensorRT
    sessions with their fallback, LiteRT) keeps the runtime's own ``run``."""
    rt = model.runtime
    sess = getattr(rt, "session", None)
    raw = getattr(getattr(sess, "_sess", None), "run", None)
    names = getattr(rt, "output_names", None)
    if raw is None or not names or list(getattr(rt, "providers", ())) != ["CPUExecutionProvider"]:
        return rt.run
    names = list(names)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, raw(names, inputs, None), strict=True))

    return run


def _measure_single_row_us(model: LoadedModel, runs: int = 5) -> float:
    x = warmup_inputs(model.manifest, 1)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e6


class Router:
    def __init__(
        self,
        models: ModelSet,
        *,
        remotes: dict[str, RemoteTarget] | None = None,
        cache: ResultCache | None = None,
        escalations: EscalationStore | None = None,
        breaker_failures: int = 3,
        breaker_reset_s: float = 5.0,
        remote_timeout_ms: float = 200.0,
        inline_max_us: float = 300.0,
        default_remote_ms: float = 20.0,
    ) -> None:
        self.models = models
        self.remotes: dict[str, RemoteTarget] = dict(remotes or {})
        self.cache = cache if cache is not None else ResultCache(0, 0)
        self.escalations = escalations
        self.breakers = {n: CircuitBreaker(breaker_failures, breaker_reset_s) for n in self.remotes}
        self.remote_timeout_s = remote_timeout_ms / 1000.0
        self.inline_max_us = inline_max_us
        self.default_remote_ms = default_remote_ms
        self.metrics = RoutingMetrics()
        self._states: dict[str, _ModelState] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # The one observer channel (edge_agent/inference/observers.py): every answer and
        # every failure, whoever called ``infer``. Drift, shadow and rollout health.
        self.observers = ObserverChannel()
        self._tracer: Any = None  # trace(): OTEL_* asked for spans

    # -- model state ------------------------------------------------------------------
    def state(self, name: str) -> _ModelState:
        m = self.models.get(name)
        st = self._states.get(name)
        if st is not None and st.model is m:
            return st
        if m is None:
            if st is not None:
                self._drop(name)
            raise UnknownModel(f"unknown model {name!r}", known=[x.name for x in self.models.all()])
        return self._rebuild(name, m)

    def _rebuild(self, name: str, m: LoadedModel) -> _ModelState:
        self._drop(name)
        st = _ModelState(m, self.inline_max_us, self.metrics)
        self._states[name] = st
        log.info(
            "routing %s v%s: targets %s, %s (%.0f us/row)%s",
            name, m.version, st.targets, "inline" if st.inline else "micro-batched",
            st.single_row_us, f", cascade below {st.threshold}" if st.threshold is not None else "",
        )  # fmt: skip
        return st

    def _drop(self, name: str) -> None:
        old = self._states.pop(name, None)
        if old is not None:
            self.metrics.decisions[(name, EDGE, "preferred")] += old.fast_count
            if old.batcher is not None:
                old.batcher.close()  # queued requests still run on the old model
        self.cache.clear(name)

    def on_model_swap(self, name: str) -> None:
        """A bundle swap or rollback replaced ``name``: forget its state and cached answers."""
        self._drop(name)
        m = self.models.get(name)
        if m is not None:
            self._rebuild(name, m)

    # -- the request path -------------------------------------------------------------
    async def infer(
        self, name: str, inputs: Any, *, budget_ms: float | None = None, use_cache: bool = True
    ) -> InferenceResult:
        t0 = time.perf_counter()
        st = self._states.get(name)
        if st is None or st.model is not self.models.get(name):
            st = self.state(name)
        arrays = _fast_arrays(st, inputs)
        if arrays is None:
            if type(inputs) is np.ndarray and len(st.specs) == 1:
                inputs = {st.specs[0][0]: inputs}
            try:
                arrays = parse_inputs(st.manifest, inputs, st.max_batch)
            except InputError as exc:
                self.metrics.rejected[name] += 1
                raise InvalidInput(str(exc)) from None
        key = None
        cache = self.cache
        if use_cache and cache.max_entries:
            key = input_key(name, st.version, arrays)
            hit = cache.get(key)
            if hit is not None:
                self.metrics.cache_hits[name] += 1
                ms = (time.perf_counter() - t0) * 1000
                self.metrics.request(name, "cache", "cache-hit", ms)
                result = InferenceResult(
                    name, st.version, "cache", f"result cache hit (first served by {hit.target})",
                    round(ms, 4), hit.outputs, cached=True, confidence=hit.confidence,
                    low_confidence=hit.low_confidence,
                )  # fmt: skip
                self.observers.answered(st.model, arrays, result)
                return result
            self.metrics.cache_misses[name] += 1

        if st.fast and (budget_ms is None or budget_ms >= st.ewma[EDGE]):  # policy.takes_fast_path
            # The fast path: run the tiny model right here on the event loop.
            s0 = time.perf_counter()
            outs = st.run(arrays)
            s1 = time.perf_counter()
            ms = (s1 - s0) * 1000
            st.ewma[EDGE] += _EWMA * (ms - st.ewma[EDGE])
            st.edge_stats.rows += len(arrays[st.first_input])
            total = (s1 - t0) * 1000
            st.edge_observe(ms)  # list.append; the histograms fold these when read
            st.req_observe(total)
            st.fast_count += 1
            if not st.fast_count & 4095:  # keep what waits to be folded bounded
                st.fold()
            result = InferenceResult(name, st.version, EDGE, _FAST_REASON, total, outs)
        else:
            result = await self._routed(st, arrays, budget_ms, t0)
        self.observers.answered(st.model, arrays, result)  # a list append
        if key is not None and not result.low_confidence:
            cache.put(key, result)
        return result

    # -- tracing (farmiq/tracing.py) -----------------------------------------------------
    def trace(self, tracer: Any) -> None:
        """Turn on spans: each ``infer`` becomes an ``inference`` span carrying the
        decision (target, reason, escalated rows), and the remote targets make client spans
        and send the W3C traceparent. Swapped in as an attribute, so with tracing off the
        request path is the plain method."""
        self._tracer = tracer
        self.infer = self._traced_infer  # type: ignore[method-assign]
        for target in self.remotes.values():
            if hasattr(target, "tracer"):
                target.tracer = tracer

    async def _traced_infer(
        self, name: str, inputs: Any, *, budget_ms: float | None = None, use_cache: bool = True
    ) -> InferenceResult:
        with self._tracer.start_as_current_span(
            "inference", attributes={"farmiq.model": name}
        ) as span:
            res = await Router.infer(self, name, inputs, budget_ms=budget_ms, use_cache=use_cache)
            span.set_attributes(
                {
                    "farmiq.model.version": res.version,
                    "farmiq.target": res.target,
                    "farmiq.reason": res.reason,
                    "farmiq.cached": res.cached,
                    "farmiq.escalated_rows": res.escalated_rows,
                    "farmiq.latency_ms": res.latency_ms,
                }
            )
            return res

    async def _routed(
        self, st: _ModelState, arrays: dict[str, np.ndarray], budget_ms: float | None, t0: float
    ) -> InferenceResult:
        plan, skipped = policy.plan(
            st, self.remotes, self.breakers, budget_ms, self.default_remote_ms
        )
        if not plan:
            self._failed(st.name)
            raise NoTarget(f"no target can serve {st.name!r} now", skipped=skipped)
        deadline = None if budget_ms is None else t0 + budget_ms / 1000.0
        rows = next(iter(arrays.values())).shape[0]
        code, why = policy.reason(st, plan, skipped, budget_ms, self._queue(st))
        tried: list[str] = []
        errors: list[str] = []
        for i, cand in enumerate(plan):
            target = cand.target
            now = time.perf_counter()
            remaining = None if deadline is None else deadline - now
            if remaining is not None and remaining <= 0 and tried:
                break
            try:
                if target == EDGE:
                    outs = await self._run_edge(st, arrays, remaining)
                else:
                    # leave room to fall back to the edge if it comes later in the plan
                    reserve = policy.reserve_for_edge_s(plan[i + 1 :], st)
                    timeout = self.remote_timeout_s
                    if remaining is not None:
                        timeout = min(timeout, max(remaining - reserve, 0.0005))
                    outs = await self._run_remote(st, target, arrays, timeout)
            except TargetError as exc:
                tried.append(target)
                errors.append(str(exc))
                self.metrics.target_error(st.name, target)
                continue
            except TimeoutError:
                tried.append(target)
                errors.append(f"{target}: no answer within the budget")
                self.metrics.target_error(st.name, target)
                continue
            ms = (time.perf_counter() - now) * 1000
            st.ewma[target] = st.ewma.get(target, ms) + _EWMA * (ms - st.ewma.get(target, ms))
            self.metrics.target_ok(st.name, target, ms, rows)
            if tried:
                code, why = "fallback", f"fell back to {target} after: {'; '.join(errors)}"
            result = InferenceResult(
                st.name, st.version, target, why, 0.0, outs, fallback_from=tried
            )
            if target == EDGE and st.threshold is not None:
                await self._cascade(st, arrays, result, deadline)
            result.latency_ms = round((time.perf_counter() - t0) * 1000, 4)
            self.metrics.request(st.name, result.target, code, result.latency_ms)
            return result
        self.metrics.request(st.name, "none", "failed", (time.perf_counter() - t0) * 1000)
        self._failed(st.name)
        late = deadline is not None and time.perf_counter() >= deadline
        raise (BudgetExhausted if late else AllTargetsFailed)(
            f"every target failed for {st.name!r}",
            tried=tried,
            errors=errors,
            skipped=skipped,
        )

    def _failed(self, name: str) -> None:
        self.observers.failed(name)

    @staticmethod
    def _queue(st: _ModelState) -> int:
        return st.batcher.queue_depth if st.batcher is not None else 0

    async def _run_edge(
        self, st: _ModelState, arrays: dict[str, np.ndarray], remaining: float | None
    ) -> dict[str, np.ndarray]:
        if st.batcher is None:
            return st.run(arrays)
        if remaining is None:
            return await st.batcher.submit(arrays)
        # The batch keeps running if we stop waiting; the caller just gets a timeout.
        return await asyncio.wait_for(st.batcher.submit(arrays), max(remaining, 0.0001))

    async def _run_remote(
        self, st: _ModelState, target: str, arrays: dict[str, np.ndarray], timeout: float
    ) -> dict[str, np.ndarray]:
        remote = self.remotes[target]
        breaker = self.breakers[target]
        if not breaker.allow():
            raise TargetError("link", f"{target}: circuit breaker {breaker.state}")
        version = "" if st.manifest.serving.cloud_model else str(st.version)
        model = st.name if target == "mcu" else st.cloud_name
        try:
            outs = await remote.infer(model, version, arrays, st.output_names, timeout)
        except TargetError as exc:
            if exc.kind == "link":
                breaker.record_failure(str(exc))
            else:
                breaker.release()
            raise
        except asyncio.CancelledError:
            breaker.release()
            raise
        breaker.record_success()
        # Triton reports a [batch] tensor as [batch, 1] (dims [1] + reshape []): undo that.
        for k, v in outs.items():
            rank = st.output_ranks.get(k)
            if rank is not None and v.ndim == rank + 1 and v.shape[-1] == 1:
                outs[k] = v.reshape(v.shape[:-1])
        return outs

    async def _cascade(
        self,
        st: _ModelState,
        arrays: dict[str, np.ndarray],
        result: InferenceResult,
        deadline: float | None,
    ) -> None:
        assert st.threshold is not None and st.prob_output is not None
        conf = normalized_entropy_confidence(result.outputs[st.prob_output])
        result.confidence = [round(float(c), 4) for c in conf]
        low = conf < st.threshold
        n_low = int(low.sum())
        if not n_low:
            result.reason += f"; confident (>= {st.threshold})"
            return
        idx = np.flatnonzero(low)
        sub = {k: v[idx] for k, v in arrays.items()}
        # The cheapest remote the bundle allows whose link is healthy and fits the budget.
        choices, why_not = policy.cascade_choices(
            st, self.remotes, self.breakers, deadline, self.default_remote_ms
        )
        for t in choices:
            timeout = self.remote_timeout_s
            if deadline is not None:
                timeout = min(timeout, max(deadline - time.perf_counter(), 0.0005))
            s0 = time.perf_counter()
            try:
                cloud = await self._run_remote(st, t, sub, timeout)
            except (TargetError, TimeoutError) as exc:
                self.metrics.target_error(st.name, t)
                why_not.append(str(exc))
                continue
            self.metrics.target_ok(st.name, t, (time.perf_counter() - s0) * 1000, n_low)
            for k, v in cloud.items():
                if k in result.outputs:
                    merged = np.array(result.outputs[k], copy=True)
                    merged[idx] = (
                        np.asarray(v).astype(merged.dtype, copy=False).reshape(merged[idx].shape)
                    )
                    result.outputs[k] = merged
            result.target = f"{EDGE}+{t}"
            result.escalated_rows = n_low
            result.reason += f"; {n_low} row(s) under confidence {st.threshold} escalated to {t}"
            self.metrics.escalations[(st.name, f"escalated:{t}")] += 1
            return
        result.low_confidence = True
        unreachable = not choices and not any("budget" in w for w in why_not)
        not_why = "; ".join(why_not) or "no cloud target in the bundle"
        result.reason += (
            f"; {n_low} row(s) under confidence {st.threshold}, not escalated: {not_why}"
        )
        if unreachable or choices:  # link down (or every remote failed): keep the input
            self.metrics.escalations[(st.name, "kept")] += 1
            if self.escalations is not None:
                result.reason += "; input kept for re-check"
                self._keep(
                    st, sub, {k: v[idx] for k, v in result.outputs.items()}, conf[idx], why_not
                )
        else:
            self.metrics.escalations[(st.name, "budget")] += 1

    def _keep(
        self, st: _ModelState, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
        conf: np.ndarray, why: list[str],
    ) -> None:  # fmt: skip
        store = self.escalations
        assert store is not None
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(
                store.add,
                st.name,
                st.version,
                inputs,
                outputs,
                [float(c) for c in conf],
                "; ".join(why),
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        """Hand pending answers to the observers; wait for background writes (escalation
        store) to finish."""
        self.observers.drain()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- operations -------------------------------------------------------------------
    async def warmup(self, names: list[str] | None = None, runs: int = 5) -> dict[str, Any]:
        """Run zero inputs through each model (1 row, then a full batch) and re-measure."""
        out: dict[str, Any] = {}
        for m in self.models.all():
            if names and m.name not in names:
                continue
            t0 = time.perf_counter()
            for rows in (1, m.manifest.serving.max_batch):
                x = warmup_inputs(m.manifest, rows)
                for _ in range(runs):
                    await asyncio.to_thread(m.run, x)
            st = (
                self._rebuild(m.name, m)
                if self._states.get(m.name) is None or self._states[m.name].model is not m
                else self._states[m.name]
            )
            st.single_row_us = _measure_single_row_us(m)
            st.ewma[EDGE] = st.single_row_us / 1000.0
            out[m.name] = {
                "version": m.version,
                "warmup_ms": round((time.perf_counter() - t0) * 1000, 3),
                "single_row_us": round(st.single_row_us, 2),
                "path": "inline" if st.inline else "micro-batched",
            }
        if names:
            missing = sorted(set(names) - set(out))
            if missing:
                raise UnknownModel(
                    f"unknown model(s) {missing}", known=[x.name for x in self.models.all()]
                )
        return out

    def clear_cache(self, model: str | None = None) -> int:
        return self.cache.clear(model)

    def queue_depths(self) -> dict[str, int]:
        return {n: self._queue(st) for n, st in self._states.items()}

    def snapshot(self) -> dict[str, Any]:
        for n, st in self._states.items():  # fold the fast path's plain counter in
            self.metrics.decisions[(n, EDGE, "preferred")] += st.fast_count
            st.fast_count = 0
        models = self.metrics.snapshot()
        for n, st in self._states.items():
            info = models.setdefault(n, {})
            info["version"] = st.version
            info["path"] = "inline" if st.inline else "micro-batched"
            info["single_row_us"] = round(st.single_row_us, 2)
            info["expected_ms"] = {k: round(v, 4) for k, v in st.ewma.items()}
            if st.batcher is not None:
                info["batching"] = st.batcher.stats()
        return {
            "models": models,
            "cache": self.cache.stats(),
            "breakers": {n: b.snapshot() for n, b in self.breakers.items()},
            "targets": {
                n: {"configured": r.configured(), "cost": r.cost} for n, r in self.remotes.items()
            },
            "escalation_store": self.escalations.stats() if self.escalations else None,
        }

    async def close(self) -> None:
        await self.flush()
        for st in self._states.values():
            if st.batcher is not None:
                st.batcher.close()
        for r in self.remotes.values():
            await r.close()
