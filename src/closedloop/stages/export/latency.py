"""Latency (p50/p95 at a batch size, after warm-up) and throughput at batch 64, on a fixed thread count."""

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


def _time_calls(fn: Callable[[], Any], repeats: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def measure(
    run: Callable[[np.ndarray], Any],
    sample: np.ndarray,
    *,
    threads: int,
    latency_batch: int = 1,
    throughput_batch: int = 64,
    repeats: int = 100,
    warmup: int = 10,
) -> Timing:
    """Time ``run(batch)``: per-call latency at ``latency_batch`` and samples/s at ``throughput_batch``.

    ``sample`` is tiled when smaller than the throughput batch.
    """
    reps = int(np.ceil(throughput_batch / max(len(sample), 1)))
    pool = np.concatenate([sample] * reps)[: max(throughput_batch, latency_batch)]
    small = np.ascontiguousarray(pool[:latency_batch])
    big = np.ascontiguousarray(pool[:throughput_batch])
    lat = _time_calls(lambda: run(small), repeats, warmup)
    thr_reps = max(10, repeats // 4)
    tput = _time_calls(lambda: run(big), thr_reps, max(2, warmup // 2))
    return Timing(
        p50_ms=float(np.percentile(lat, 50) * 1e3),
        p95_ms=float(np.percentile(lat, 95) * 1e3),
        latency_batch_size=latency_batch,
        throughput_per_s=float(throughput_batch / np.median(tput)),
        throughput_batch_size=throughput_batch,
        threads=threads,
    )


def torch_runner(module: Any, threads: int) -> Callable[[np.ndarray], Any]:
    """Eager PyTorch fp32 on ``threads`` threads (restored by :func:`restore_torch_threads`)."""
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
