"""Prometheus metrics of one service instance (``prometheus_client``, exposed at ``/metrics``).

With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` must be set before the workers start (the
``serve`` command does it): each worker then writes its values to files there and ``/metrics``, whichever
worker answers it, aggregates all of them with ``prometheus_client``'s multiprocess collector.
"""

from __future__ import annotations

import os
from typing import Any

LEVELS = {"insufficient_data": -1.0, "ok": 0.0, "warn": 1.0, "alarm": 2.0}


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ServiceMetrics:
    """Request counts and latencies by endpoint/route/status; the live monitor's numbers as gauges."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # Single process: a registry per app (tests build several apps in one process). Multiprocess:
        # values live in files; the registry only matters for the collector built in render().
        self.registry = CollectorRegistry(auto_describe=True)
        kw: dict[str, Any] = {"registry": None if multiprocess() else self.registry}
        self.requests = Counter(
            "closedloop_requests", "Requests answered", ["endpoint", "route", "status"], **kw
        )
        self.inputs = Counter("closedloop_inputs", "Inputs scored (a batch counts its rows)", ["route"], **kw)
        self.latency = Histogram(
            "closedloop_inference_seconds",
            "Model inference time per request",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            **kw,
        )
        self.fallbacks = Counter(
            "closedloop_canary_fallbacks", "Canary errors answered by the champion", **kw
        )
        self.shadow_errors = Counter(
            "closedloop_shadow_errors", "Shadow model failures (never returned)", **kw
        )
        self.batch_inputs = Histogram(
            "closedloop_batch_size",
            "Inputs per model call of the dynamic batcher (--max-batch-size)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            **kw,
        )
        self.batch_requests = Histogram(
            "closedloop_batch_requests",
            "Requests per model call of the dynamic batcher (--max-batch-size)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            **kw,
        )
        self.abandoned = Counter(
            "closedloop_batch_abandoned",
            "Requests whose client disconnected while they waited in the batch queue (never scored)",
            **kw,
        )
        gauge_kw = dict(kw, multiprocess_mode="mostrecent") if multiprocess() else kw
        self.monitor_level = Gauge(
            "closedloop_monitor_level",
            "Live monitor alert level (-1 insufficient data, 0 ok, 1 warn, 2 alarm)",
            **gauge_kw,
        )
        self.monitor_stream_alarm = Gauge(
            "closedloop_monitor_stream_alarm",
            "Live monitor stream test (1 once its evidence over the whole stream crossed its threshold, 1/(alpha*delta), else 0)",
            **gauge_kw,
        )
        self.monitor_value = Gauge(
            "closedloop_monitor_value",
            "Live monitor numbers (p-values, estimates, realized metrics)",
            ["field"],
            **gauge_kw,
        )

        self._children: dict[tuple[str, ...], Any] = {}

    # labels() takes a lock and builds a key on every call; the hot path reuses the children.
    def count(self, endpoint: str, route: str, status: str) -> None:
        key = ("r", endpoint, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(endpoint=endpoint, route=route, status=status)
        child.inc()

    def observe(self, route: str, n_inputs: int, seconds: float) -> None:
        key = ("o", route)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self.inputs.labels(route=route), self.latency.labels(route=route))
        pair[0].inc(n_inputs)
        pair[1].observe(seconds)

    def observe_batch(self, n_requests: int, n_inputs: int) -> None:
        self.batch_requests.observe(n_requests)
        self.batch_inputs.observe(n_inputs)

    def observe_monitor(self, status: dict[str, Any]) -> None:
        """Set the gauges from a ``LiveStatus.model_dump()``: the level, and every number in it by path."""
        self.monitor_level.set(LEVELS.get(str(status.get("level")), -1.0))
        self.monitor_stream_alarm.set(1.0 if (status.get("stream") or {}).get("alarm") else 0.0)
        for path, value in _numbers(status):
            self.monitor_value.labels(field=path).set(value)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _numbers(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Numeric leaves of a nested dict/list as (dotted path, value); booleans and None are skipped."""
    out: list[tuple[str, float]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out += _numbers(v, f"{prefix}.{i}")
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out.append((prefix, float(obj)))
    return out
