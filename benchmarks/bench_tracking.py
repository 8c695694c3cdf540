"""What experiment tracking (MLflow, local SQLite store) adds to the quickstart's wall time.

Run from the project root:  python benchmarks/bench_tracking.py [--repeats 3]
Quickstart runs with and without ``tracking: {backend: mlflow}`` alternate in one process (each in a fresh
runs directory, so no stage comes from the cache); the ratio of mean wall times is printed, with the
time spent inside the tracking call itself. The one-time cost a new process pays (importing MLflow and
opening the store) is measured separately in a subprocess and printed next to it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from closedloop import Pipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="pairs of runs (tracked, untracked)")
    ap.add_argument("--config", default=str(ROOT / "configs/quickstart.yaml"))
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run"
    )
    args = ap.parse_args()

    import closedloop.tracking.run as tr

    spent: list[float] = []
    original = tr.track_run

    def timed(spec, run_dir, summary, config, write):  # tracking time = the call minus writing the files
        writing = [0.0]

        def w(s):
            t = time.perf_counter()
            write(s)
            writing[0] += time.perf_counter() - t

        t0 = time.perf_counter()
        original(spec, run_dir, summary, config, w)
        if spec is not None:
            spent.append(time.perf_counter() - t0 - writing[0])

    tr.track_run = timed
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        # the team's tracking store exists before the runs: create its schema once, outside the timing
        t = time.perf_counter()
        from closedloop.core.config import TrackingSpec
        from closedloop.tracking.mlflow_backend import MlflowTracker

        MlflowTracker(TrackingSpec(backend="mlflow", uri=uri)).client.search_experiments()
        print(f"store creation (schema, once per store, not counted): {time.perf_counter() - t:.1f} s")
        walls: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.repeats):
            for tracked in (True, False) if i % 2 == 0 else (False, True):
                overrides = [f"runs_dir={tmp}/runs-{i}-{int(tracked)}", *args.set]
                if tracked:
                    overrides += ["tracking.backend=mlflow", f"tracking.uri={uri}"]
                pipe = Pipeline.from_yaml(args.config, overrides=overrides)
                t0 = time.perf_counter()
                res = pipe.run(progress=False)
                if not res.ok:  # a failed stage would make the two runs incomparable
                    bad = {
                        k: v.get("error") for k, v in res.summary["stages"].items() if v["status"] == "failed"
                    }
                    raise SystemExit(f"the pipeline failed, so the timing means nothing: {bad}")
                walls[tracked].append(time.perf_counter() - t0)
                extra = ""
                if tracked:
                    tt = res.summary["tracking"]
                    extra = f", tracking ok={tt['ok']} in {spent[-1]:.2f} s, model version {tt.get('model_version')}"
                print(
                    f"pair {i + 1}: {'with' if tracked else 'without'} tracking: {walls[tracked][-1]:.1f} s{extra}"
                )
    with_t, without = statistics.mean(walls[True]), statistics.mean(walls[False])
    print(f"mean wall time with tracking {with_t:.1f} s, without {without:.1f} s")
    print(
        f"time inside the tracking call: mean {statistics.mean(spent):.2f} s ({statistics.mean(spent) / without:.1%} of an untracked run)"
    )
    print(f"ratio with/without tracking: {with_t / without:.3f} (target <= 1.05)")

    with tempfile.TemporaryDirectory() as tmp2:
        uri = f"sqlite:///{Path(tmp2) / 'mlflow.db'}"
        warm = (
            "from closedloop.core.config import TrackingSpec\n"
            "from closedloop.tracking.mlflow_backend import MlflowTracker\n"
            f"MlflowTracker(TrackingSpec(backend='mlflow', uri={uri!r})).client.search_experiments()\n"
        )
        subprocess.run([sys.executable, "-c", warm], check=True, capture_output=True)
        code = "import time; t=time.perf_counter()\n" + warm + "print(f'{time.perf_counter()-t:.2f}')\n"
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        cold = float(out.stdout.strip().splitlines()[-1])
    print(
        f"one-time cost in a new process (import MLflow + open an existing SQLite store): {cold:.2f} s "
        f"({cold / without:.1%} of an untracked run; paid once per `closedloop run` process)"
    )


if __name__ == "__main__":
    main()
