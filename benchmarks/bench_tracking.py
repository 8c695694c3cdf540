"""What experiment tracking (MLflow, local SQLite store) adds to the quickstart's wall time.

Run from the project root:  python benchmarks/bench_tracking.py [--repeats 3] [--set KEY=VALUE ...]
``closedloop run configs/quickstart.yaml`` with and without ``tracking: {backend: mlflow}`` alternate,
each in a fresh process (as a user runs it: MLflow's import is paid every time) and a fresh runs
directory (no stage comes from the cache). Printed: the ratio of mean wall times, and the time spent
inside the tracking call as recorded in each run's summary.json (``tracking.seconds``), which the load
of other processes on a shared machine disturbs much less than whole-run wall times, and the ratio of
CPU times (user + system) of the run processes, which other processes do not disturb at all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="pairs of runs (tracked, untracked)")
    ap.add_argument(
        "--warmup", type=int, default=1, help="uncounted pairs first (disk caches, bytecode of a fresh clone)"
    )
    ap.add_argument("--config", default=str(ROOT / "configs/quickstart.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    walls: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    inside: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        # the team's tracking store exists before the runs: create its schema once, outside the timing
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from mlflow.tracking import MlflowClient; MlflowClient({uri!r}).search_experiments()",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        print(f"store creation (schema, once per store, not counted): {time.perf_counter() - t:.1f} s")
        for i in range(-args.warmup, args.repeats):
            for tracked in (True, False) if i % 2 == 0 else (False, True):
                runs = Path(tmp) / f"runs-{i}-{int(tracked)}"
                sets = [f"runs_dir={runs}", *args.set]
                if tracked:
                    sets += ["tracking.backend=mlflow", f"tracking.uri={uri}"]
                cmd = [sys.executable, "-m", "closedloop", "run", args.config]
                for s in sets:
                    cmd += ["--set", s]
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - t0
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                summary = json.loads(next(runs.glob("*/*/summary.json")).read_text())
                if out.returncode != 0 or summary["status"] != "ok":
                    raise SystemExit(
                        f"the pipeline failed, so the timing means nothing:\n{out.stdout[-2000:]}"
                    )
                if i < 0:
                    print(f"warm-up: {'with' if tracked else 'without'} tracking: {wall:.1f} s (not counted)")
                    continue
                walls[tracked].append(wall)
                cpus[tracked].append(cpu)
                extra = ""
                if tracked:
                    tt = summary["tracking"]
                    inside.append(tt["seconds"])
                    extra = f", tracking ok={tt['ok']}, {tt['seconds']:.2f} s inside the tracking call, model version {tt['model_version']}"
                print(
                    f"pair {i + 1}: {'with' if tracked else 'without'} tracking: {wall:.1f} s wall, {cpu:.1f} s CPU{extra}",
                    flush=True,
                )
    with_t, without = statistics.mean(walls[True]), statistics.mean(walls[False])
    print(f"mean wall time with tracking {with_t:.1f} s, without {without:.1f} s (fresh process each)")
    print(
        f"time inside the tracking call: mean {statistics.mean(inside):.2f} s "
        f"({statistics.mean(inside) / without:.1%} of an untracked run)"
    )
    print(f"ratio with/without tracking: {with_t / without:.3f} (target <= 1.05)")
    c_with, c_without = statistics.mean(cpus[True]), statistics.mean(cpus[False])
    print(
        f"CPU time (user+sys of the run's processes, tracking helper included) with tracking {c_with:.1f} s, without {c_without:.1f} s: "
        f"ratio {c_with / c_without:.3f} (what the machine's other load does not disturb)"
    )


if __name__ == "__main__":
    main()
