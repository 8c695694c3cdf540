"""Audit speed: PneumoniaMNIST-28 (real file, 5,856 images, all checks) and a synthetic 100,000-image
set (28x28, 2 classes), wall time, process CPU time and peak RSS (resource.getrusage). Each case runs in a fresh
process so peak memory is its own.

Run: .venv/bin/python benchmarks/bench_audit_speed.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def synthetic(n: int = 100_000, seed: int = 0):  # type: ignore[no-untyped-def]
    from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    yy, xx = np.mgrid[:28, :28]
    blob = np.exp(-((yy - 14) ** 2 + (xx - 14) ** 2) / 40.0).astype(np.float32)
    X = np.empty((n, 28, 28, 1), np.uint8)
    for s in range(0, n, 10000):
        k = min(10000, n - s)
        base = rng.normal(100, 25, (k, 1, 1)) + 60 * blob[None] * (1 + 0.5 * y[s : s + k, None, None])
        X[s : s + k, ..., 0] = np.clip(base + rng.normal(0, 20, (k, 28, 28)), 0, 255).astype(np.uint8)
    cut1, cut2 = int(n * 0.7), int(n * 0.8)
    sp = {
        "train": Split(X[:cut1], y[:cut1]),
        "val": Split(X[cut1:cut2], y[cut1:cut2]),
        "test": Split(X[cut2:], y[cut2:]),
    }
    meta = DatasetMeta(
        name="synthetic100k", source="synthetic", kind="images", label_names=["a", "b"], n_channels=1
    )
    return DatasetBundle(meta=meta, splits=sp)


def one(case: str) -> None:
    import time

    from bench_audit_common import pneumonia_bundle, run_audit

    data = pneumonia_bundle() if case == "pneumonia" else synthetic()
    timings: dict[str, float] = {}
    c0 = time.process_time()
    out, dt, stage = run_audit(data, stop_on=[], timings=timings)
    cpu = time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # KiB -> GiB (Linux)
    per = ", ".join(f"{k.removeprefix('check ')} {v:.1f}s" for k, v in timings.items())
    s = stage.summarize(out)
    print(
        f"{case}: {sum(data.sizes().values())} images, audit wall time {dt:.1f} s, process CPU time {cpu:.1f} s "
        f"(all threads; on 2 free cores the wall time is at least CPU/2), peak RSS {peak:.2f} GiB"
    )
    print(f"   per check: {per}")
    li = out.audit.results.get("label_issues", {}).get("metrics", {})
    print(f"   label_issues models {li.get('models')}, out-of-fold accuracy {li.get('oof_accuracy')}")
    print(f"   {s['n_errors']} errors, {s['n_warnings']} warnings, failed {s['failed_checks']}")


def main() -> None:
    if len(sys.argv) > 1:
        one(sys.argv[1])
        return
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start (shared with other developers)"
    )
    for case in ("pneumonia", "synthetic100k"):
        subprocess.run([sys.executable, __file__, case], check=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
