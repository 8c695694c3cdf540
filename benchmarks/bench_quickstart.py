"""Wall time of the quickstart pipeline (configs/quickstart.yaml, every stage, digits) on this machine.

Run from the project root:  python benchmarks/bench_quickstart.py [--repeats 1]
A fresh runs directory is used so nothing is served from the cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from closedloop import Pipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    times = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            pipe = Pipeline.from_yaml(ROOT / "configs/quickstart.yaml", overrides=[f"runs_dir={tmp}"])
            t0 = time.perf_counter()
            result = pipe.run(progress=False)
            times.append(time.perf_counter() - t0)
            stages = result.summary["stages"]
            print(f"run {i + 1}: status {result.summary['status']}, {times[-1]:.1f} s total")
            for name, st in stages.items():
                print(f"  {name:<10} {st['status']:<8} {st['seconds']:6.1f} s")
    print(f"quickstart wall time: {min(times):.1f} s (best of {len(times)}; budget 60 s)")


if __name__ == "__main__":
    main()
