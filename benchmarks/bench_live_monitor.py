"""Live monitor speed: ``LiveMonitor.status()`` latency over a 200-row window, and the merged request-log
read rate (``read_log``) over 50,000 records in 8 worker files, on PneumoniaMNIST-sized inputs (28x28).

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_live_monitor.py [--records 50000]
(about a minute on 2 busy cores). Output: docs/results/live_monitor.txt.

The profile is built with an untrained small CNN: the timings depend on the window, reference and
feature sizes, not on what the model learned. The log is synthetic traffic in the request-log format
(test-split images, base64 inputs), written here into a temporary directory.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NPZ = ROOT.parent / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"


def build_run(tmp: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A run directory holding a reference profile built on the validation split; returns it, the
    test images (the traffic) and the model's P(pneumonia) on them (what a server would log)."""
    import torch
    from torch import nn

    from closedloop.core.stage import RunContext
    from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
    from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
    from closedloop.stages.monitor.stage import BuildMonitorProfile
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    torch.set_num_threads(1)
    torch.manual_seed(0)
    with np.load(NPZ) as z:
        d = {k: z[k] for k in z.files}
    splits = {
        s: Split(d[f"{s}_images"][..., None], d[f"{s}_labels"].reshape(-1)) for s in ("train", "val", "test")
    }
    bundle = DatasetBundle(
        DatasetMeta(
            name="pneumoniamnist", source="medmnist", kind="images", label_names=["normal", "pneumonia"]
        ),
        splits,
    )

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * 49, 32), nn.ReLU()
            )  # fmt: skip
            self.head = nn.Linear(32, 1)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    model = TrainedModel(
        spec=ModelSpec(family="bench_live_cnn"),
        network=Net(),
        preprocessing=Preprocessing(input_kind="images", input_shape=[28, 28, 1], mean=[0.5], std=[0.25]),
        problem_type="binary",
        n_outputs=2,
        label_names=["normal", "pneumonia"],
    )
    task = build_task_spec(DefineTaskConfig(), bundle)
    stage = BuildMonitorProfile(calibration_windows=50, window_sizes=[50, 100, 200], permutations=100)
    out = stage.execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp / "ctx", seed=0)
    )
    run = tmp / "run" / "20261130-200000-bench000"
    out.reference.save(_mk(run / "stages/07_monitor/artifacts/reference"))
    from closedloop.core.stage import _TEST_TOKEN

    X = bundle.unsealed_test(_TEST_TOKEN).X
    return run, X, model.predict_proba(X)[:, 1]


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def record(x: np.ndarray, p: float, t: dt.datetime, version: str, rid: str) -> str:
    return json.dumps(
        {
            "kind": "request",
            "request_id": rid,
            "time": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "model_name": "pneumoniamnist",
            "model_version": version,
            "run_dir": "/runs/pneumoniamnist/" + version,
            "route": "champion",
            "variant": "int8",
            "inputs": {"shape": [1, *x.shape], "dtype": "uint8", "encoding": "base64", "data": base64.b64encode(x.tobytes()).decode()},
            "proba": [[1 - p, p]],
            "labels": ["pneumonia" if p >= 0.5 else "normal"],
            "latency_ms": 2.0,
            "status": "ok",
            "error": None,
        }
    )  # fmt: skip


def write_log(
    log: Path, X: np.ndarray, P: np.ndarray, n: int, workers: int, version: str, start: int = 0
) -> None:
    """``n`` single-input records round-robin over ``workers`` files, 10 ms apart."""
    log.mkdir(parents=True, exist_ok=True)
    t0 = dt.datetime(2026, 11, 30, 21, 0, tzinfo=dt.UTC)
    lines: dict[int, list[str]] = {w: [] for w in range(workers)}
    for i in range(start, start + n):
        t = t0 + dt.timedelta(milliseconds=10 * i)
        lines[i % workers].append(record(X[i % len(X)], float(P[i % len(P)]), t, version, f"{i:032x}") + "\n")
    for w, text in lines.items():
        with open(log / f"requests-w{w}-000000.jsonl", "a", encoding="utf-8") as f:
            f.write("".join(text))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--polls", type=int, default=30)
    args = ap.parse_args()
    from closedloop.monitoring.live import LiveMonitor
    from closedloop.monitoring.logreader import read_log

    print(
        f"$ PYTHONPATH=src python benchmarks/bench_live_monitor.py --records {args.records}   # {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        run, X, P = build_run(tmp)
        print(
            f"profile: PneumoniaMNIST val split (28x28), built in {time.perf_counter() - t:.1f} s; traffic: test-split images"
        )

        # 1. merged read rate
        big = tmp / "big"
        t = time.perf_counter()
        write_log(big, X, P, args.records, args.workers, run.name)
        size = sum(f.stat().st_size for f in big.iterdir())
        print(
            f"log: {args.records} records in {args.workers} worker files, {size / 1e6:.1f} MB (written in {time.perf_counter() - t:.1f} s)"
        )
        times = []
        for _ in range(3):
            t = time.perf_counter()
            log = read_log(big)
            times.append(time.perf_counter() - t)
        assert len(log.champion) == args.records
        best, med = min(times), float(np.median(times))
        print(
            f"read_log (validate every line, merge by time, decode inputs): median {med:.2f} s = {args.records / med:,.0f} records/s (best {args.records / best:,.0f}/s, 3 runs)"
        )

        # 2. status() latency over a 200-row window, as the server's /monitor sees it
        live_dir = tmp / "live"
        write_log(live_dir, X, P, 1000, args.workers, run.name)
        mon = LiveMonitor(run, live_dir, window=args.window)
        t = time.perf_counter()
        first = mon.status()
        print(
            f"LiveMonitor first status() on a 1,000-record log (read + window + tests): {1000 * (time.perf_counter() - t):.0f} ms, level {first.level}, tests {sorted(first.p_values)}"
        )
        print(
            "  (the level on test-split traffic: PneumoniaMNIST's test split differs from validation in prevalence "
            "and acquisition; docs/results/monitor.txt, section 2)"
        )
        lat_new, lat_cached = [], []
        for k in range(args.polls):
            write_log(
                live_dir, X, P, 5, args.workers, run.name, start=1000 + 5 * k
            )  # 5 new requests per poll
            t = time.perf_counter()
            s = mon.status()
            lat_new.append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            mon.status()
            lat_cached.append(1000 * (time.perf_counter() - t))
        assert s.n_rows == args.window
        q = np.percentile(lat_new, [50, 95])
        print(
            f"status() over a {args.window}-row window after 5 new records: median {q[0]:.1f} ms, p95 {q[1]:.1f} ms ({args.polls} polls)"
        )
        q = np.percentile(lat_cached, [50, 95])
        print(f"status() with nothing new (cached): median {q[0]:.2f} ms, p95 {q[1]:.2f} ms")
        # feedback for every 20th request, spread over the whole log (the cold start must join it)
        t0 = dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with open(big / "feedback-w0-000000.jsonl", "w", encoding="utf-8") as f:
            for i in range(0, args.records, 20):
                fb = {
                    "kind": "feedback",
                    "request_id": f"{i:032x}",
                    "index": 0,
                    "label": "normal",
                    "time": t0,
                }
                f.write(json.dumps(fb) + "\n")
        mon_big = LiveMonitor(run, big, window=args.window)
        t = time.perf_counter()
        s = mon_big.status()
        print(
            f"LiveMonitor cold start on the {args.records}-record log with {args.records // 20} feedback labels "
            f"(validates the newest lines and the requests feedback names): {time.perf_counter() - t:.2f} s; "
            f"n_records {s.n_records}, n_feedback {s.n_feedback}"
        )
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
