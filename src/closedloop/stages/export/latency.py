"""Latency (p50/p95 at a batch size, after warm-up) and throughput at batch 64, on a fixed thread count.

All variants are timed interleaved (round-robin), so their ratios hold on a loaded, shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel


class Timing(BaseModel):
    """One variant's timings on CPU."""

    p50_ms: float
    p95_ms: float
    latency_batch_size: int
    throughput_per_s: float
    throughput_batch_size: int
    threads: int


def _interleaved(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, np.ndarray]:
    """Seconds per call of each function, timed round-robin (the order rotates every round) so all of
    them see the same machine load: on a shared CPU, timing one variant after the other would turn a
    load change between them into a false speed ratio."""
    names = list(calls)
    for _ in range(warmup):
        for n in names:
            calls[n]()
    out = {n: np.empty(repeats) for n in names}
    for i in range(repeats):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            calls[n]()
            out[n][i] = time.perf_counter() - t0
    return out


def measure_all(
    runners: dict[str, Callable[[np.ndarray], Any]],
    sample: np.ndarray,
    *,
    threads: int,
    latency_batch: int = 1,
    throughput_batch: int = 64,
    repeats: int = 100,
    warmup: int = 10,
) -> dict[str, Timing]:
    """Time every ``run(batch)``, interleaved: per-call latency at ``latency_batch`` (p50 / p95 of
    ``repeats`` calls) and samples/s at ``throughput_batch`` (median of ``max(20, repeats // 4)`` calls).

    ``sample`` is tiled when smaller than the throughput batch.
    """
    reps = int(np.ceil(throughput_batch / max(len(sample), 1)))
    pool = np.concatenate([sample] * reps)[: max(throughput_batch, latency_batch)]
    small = np.ascontiguousarray(pool[:latency_batch])
    big = np.ascontiguousarray(pool[:throughput_batch])
    lat = _interleaved({n: (lambda r=r: r(small)) for n, r in runners.items()}, repeats, warmup)
    tput = _interleaved(
        {n: (lambda r=r: r(big)) for n, r in runners.items()}, max(20, repeats // 4), max(2, warmup // 2)
    )
    return {
        n: Timing(
            p50_ms=float(np.percentile(lat[n], 50) * 1e3),
            p95_ms=float(np.percentile(lat[n], 95) * 1e3),
            latency_batch_size=latency_batch,
            throughput_per_s=float(throughput_batch / np.median(tput[n])),
            throughput_batch_size=throughput_batch,
            threads=threads,
        )
        for n in runners
    }


def torch_runner(module: Any, threads: int) -> Callable[[np.ndarray], Any]:
    """Eager PyTorch fp32 on ``threads`` threads (the caller restores torch's thread count)."""
    import torch

    torch.set_num_threads(threads)
    module = module.eval()

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    return run


def onnx_runner(session: Any) -> Callable[[np.ndarray], Any]:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


# --- where the figures go: the stage's timings (stage.json, manifest, summary), never the artifact ---

CORE_SECONDS = "export + quantize + checks"
"""Timing label: wall seconds of the fp32 export, int8 quantization and their checks."""


def record_timings(timings: dict[str, Timing], into: dict[str, float]) -> None:
    """Put measured latencies into a stage's timings (``ctx.timings``) as ``latency_ms.<variant>.p50``,
    ``latency_ms.<variant>.p95`` and ``throughput.<variant>`` (samples/s): they differ between identical
    runs, so they stay out of the hashed export folder."""
    for name, t in timings.items():
        into[f"latency_ms.{name}.p50"] = t.p50_ms
        into[f"latency_ms.{name}.p95"] = t.p95_ms
        into[f"throughput.{name}"] = t.throughput_per_s


def latency_from_timings(timings: dict[str, float]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """``({variant: {"p50": ms, "p95": ms}}, {variant: samples/s})`` read back from a stage's timings
    (``ctx.timings`` or :func:`closedloop.core.stage.stage_timings`)."""
    latency: dict[str, dict[str, float]] = {}
    throughput: dict[str, float] = {}
    for label, value in timings.items():
        kind, _, rest = label.partition(".")
        if kind == "latency_ms":
            name, _, pct = rest.rpartition(".")
            latency.setdefault(name, {})[pct] = value
        elif kind == "throughput":
            throughput[rest] = value
    return latency, throughput
