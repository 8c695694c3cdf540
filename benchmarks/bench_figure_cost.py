"""What one family's selection figures cost the train stage, before and after a change to the drawing
code (issue #25: the figures were a third of the tree family's selection on the multi-label table).

Per round, one process with the code of ``--before`` (``src/`` of that commit, by ``git archive``) and
one with this checkout's ``src/``, in alternating order. Each draws the figures one family's selection
phases draw (sanity's probe ``plots.warm()`` and its log-scale loss, beat the baseline's curves, the
ladder's two-panel curves, the trials, the tuning curves, the knob importance) once to warm up and then
``--repeats`` times, to files, and prints the median CPU seconds of one set. CPU seconds (this process's
``time.process_time``), not wall seconds: on the shared machine other jobs' load moves wall time much
more than this work's own cost.

Run: .venv/bin/python benchmarks/bench_figure_cost.py --before COMMIT [--rounds 3] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_tree_speed import ROOT, extract  # noqa: E402

ONE_SET = """
import json, statistics, sys, time
from closedloop.stages.train import plots
hist = {{f"rung {{i}}": [{{"epoch": e, "train_loss": 1 / (e + i), "val_loss": 1.1 / (e + i), "val_auc": 0.8 + 0.01 * e}} for e in range(1, 9)] for i in range(2)}}
out = {out!r}
def family(tag):
    plots.warm()
    plots.sanity(f"{{out}}/{{tag}}_sanity.png", [0.7 / (i + 1) ** 1.3 for i in range(15)])
    plots.curves(f"{{out}}/{{tag}}_baseline.png", {{"default": hist["rung 0"]}}, "Beat the baseline", "auc")
    plots.curves(f"{{out}}/{{tag}}_ladder.png", hist, "Capacity ladder", "auc")
    plots.trials(f"{{out}}/{{tag}}_trials.png", [0.9, None, 0.91, 0.89, 0.92, None, 0.9, 0.88, 0.91, 0.9], "auc")
    plots.curves(f"{{out}}/{{tag}}_tune.png", hist, "Tuning", "auc")
    plots.importance(f"{{out}}/{{tag}}_importance.png", {{"learning_rate": 0.5, "reg_lambda": 0.2, "epochs": 0.1, "feature_fraction": 0.1}})
family("warm")
cpu = []
for r in range({repeats}):
    t0 = time.process_time()
    family(f"r{{r}}")
    cpu.append(time.process_time() - t0)
print("CPU " + json.dumps(cpu))
"""


def one(src: Path, out: Path, repeats: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(src), "MPLBACKEND": "Agg"}
    code = ONE_SET.format(out=str(out), repeats=repeats)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("CPU ")), None)
    if res.returncode != 0 or line is None:
        raise SystemExit(f"{src}: exit {res.returncode}\n{res.stderr[-2000:]}")
    return json.loads(line.removeprefix("CPU "))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines = [
        f"bench_figure_cost ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): python "
        f"benchmarks/bench_figure_cost.py {' '.join(sys.argv[1:])}; before = {args.before}, after = this "
        f"checkout; one family's selection figures, CPU seconds; load average at start {os.getloadavg()[0]:.1f}"
    ]
    print(lines[0], flush=True)
    got: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"before": extract(args.before, Path(tmp)), "after": ROOT / "src"}
        for r in range(args.rounds):
            for name in ["before", "after"] if r % 2 == 0 else ["after", "before"]:
                out = Path(tmp) / f"{name}{r}"
                out.mkdir()
                cpu = one(codes[name], out, args.repeats)
                got[name].append(statistics.median(cpu))
                lines.append(
                    f"round {r + 1} {name:>6}: one family's figures, median CPU over {args.repeats} sets "
                    f"{statistics.median(cpu):.3f} s (min {min(cpu):.3f}, max {max(cpu):.3f})"
                )
                print(lines[-1], flush=True)
    b, a = statistics.median(got["before"]), statistics.median(got["after"])
    lines.append(
        f"median over {args.rounds} rounds: before {b:.3f} s, after {a:.3f} s of CPU for one family's "
        f"selection figures (after/before {a / b:.2f}); load average at the end {os.getloadavg()[0]:.1f}"
    )
    print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
