"""Summarize the per-draw lines of bench_shift_recovery.py runs made in rounds (``--first-draw``).

A run with the retrained challenger costs one pipeline run per draw, so on a shared machine it is
run in rounds (and may be cut short); each draw prints one line as it ends. This reads those lines
from the logs given (each log: one scenario, its ``[name]`` header) and prints, per scenario, the
draws done and the same figures the bench prints for a whole run.

With ``--targets``: also the issue's targets per scenario, met or not (shifted scenarios: median ACC
>= 0.90, specificity >= 0.80, sensitivity >= 0.95, cost change <= -40%, promoted >= 90%;
in-distribution: promoted <= 5%), which challenger was chosen, the slowest recalibration-only fit and
the threshold oracle's bound line the bench printed for the scenario.

Run: python benchmarks/shift_recovery_draws.py [--targets] LOG [LOG ...]
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

DRAW = re.compile(
    r"draw (\d+): (\w+) chosen; unseen production ACC ([\d.]+) \(champion ([\d.]+)\), specificity ([\d.]+), "
    r"sensitivity ([\d.]+), cost ([\d.]+) vs ([\d.]+), AUC ([\d.]+) vs ([\d.]+); better on production (\w+) "
    r"\(p ([\d.]+)\), non-inferior on clean test (\w+); promoted (\w+); (\d+) s"
)
ORACLE = re.compile(
    r"oracle threshold on its scores: cost change ([-+\d.]+), specificity ([\d.]+), sensitivity ([\d.]+), "
    r"best specificity at sensitivity >= 0.95 ([\d.]+)"
)
"""The oracle threshold on the challenger's own scores (session 12 on; absent from older logs)."""
SCENARIO = re.compile(r"^\[(\w+)\] production")
RECAL = re.compile(r"recalibration family alone median ([\d.]+) ms, max ([\d.]+) ms")


def main(paths: list[str], targets: bool = False) -> None:
    draws: dict[str, dict[int, tuple]] = defaultdict(dict)
    oracle: dict[str, dict[int, tuple]] = defaultdict(dict)
    bound: dict[str, str] = {}
    recal_max: dict[str, float] = defaultdict(float)
    for path in paths:
        pending = []
        scenario = None
        for line in Path(path).read_text().splitlines():
            if m := DRAW.search(line):
                o = ORACLE.search(line)
                pending.append((m.groups(), o.groups() if o else None))
            elif m := SCENARIO.match(line):  # the scenario's summary follows its draws
                scenario = m.group(1)
                for g, o in pending:
                    draws[scenario][int(g[0])] = g
                    if o:
                        oracle[scenario][int(g[0])] = o
                pending = []
            elif scenario and "bound of any threshold" in line:
                bound.setdefault(scenario, line.strip())
            elif scenario and (m := RECAL.search(line)):
                recal_max[scenario] = max(recal_max[scenario], float(m.group(2)))
        if pending:  # cut short before the summary: the scenario is in the run's file name
            name = next(
                (s for s in ("gaussian_noise", "contrast", "in_distribution", "test") if s in path), "?"
            )
            for g, o in pending:
                draws[name][int(g[0])] = g
                if o:
                    oracle[name][int(g[0])] = o
    for name, by_draw in draws.items():
        g = [by_draw[i] for i in sorted(by_draw)]
        f = {
            k: np.array([float(x[j]) for x in g])
            for k, j in (("acc", 2), ("spec", 4), ("sens", 5), ("cost", 6))
        }
        champ = np.array([float(x[7]) for x in g])
        auc, auc0 = np.array([float(x[8]) for x in g]), np.array([float(x[9]) for x in g])
        better, noninf, promoted = ([x[k] == "True" for x in g] for k in (10, 12, 13))
        change = f["cost"] / champ - 1
        print(
            f"[{name}] {len(g)} draws ({', '.join(str(i) for i in sorted(by_draw))}): challenger median ACC "
            f"{np.median(f['acc']):.3f}, specificity {np.median(f['spec']):.3f}, sensitivity "
            f"{np.median(f['sens']):.3f}; cost change median {np.median(change):+.1%} (min {change.min():+.1%}, max "
            f"{change.max():+.1%}); AUC median {np.median(auc0):.3f} -> {np.median(auc):.3f}; better on production "
            f"(p < 0.05) {sum(better)}, non-inferior on clean test {sum(noninf)}, both "
            f"{sum(b and n for b, n in zip(better, noninf, strict=True))}; promoted {sum(promoted)} of {len(g)}; "
            f"seconds per draw median {np.median([float(x[14]) for x in g]):.0f}"
        )
        if not targets:
            continue
        chosen = {m: sum(x[1] == m for x in g) for m in sorted({x[1] for x in g})}
        print(
            f"  chosen challenger {chosen}; recalibration family alone at most {recal_max[name]:.1f} ms per draw "
            "(target <= 5 s)"
        )
        if name in bound:
            print(f"  {bound[name]}")
        if oracle[name]:
            o = np.array([[float(v) for v in oracle[name][i]] for i in sorted(oracle[name])])
            print(
                f"  oracle threshold on the challenger's own scores (per draw, sees the answers): cost change median "
                f"{np.median(o[:, 0]):+.1%} (<= -40% in {int((o[:, 0] <= -0.40).sum())} of {len(o)} draws), "
                f"specificity {np.median(o[:, 1]):.3f}, sensitivity {np.median(o[:, 2]):.3f}; best specificity with "
                f"sensitivity >= 0.95 median {np.median(o[:, 3]):.3f}"
            )
        rate = float(np.mean(promoted))
        checks = (
            [("promoted <= 5%", rate <= 0.05)]
            if name == "in_distribution"
            else [
                ("median ACC >= 0.90", np.median(f["acc"]) >= 0.90),
                ("median specificity >= 0.80", np.median(f["spec"]) >= 0.80),
                ("median sensitivity >= 0.95", np.median(f["sens"]) >= 0.95),
                ("median cost change <= -40%", np.median(change) <= -0.40),
                ("promoted >= 90%", rate >= 0.90),
            ]
        )
        print("  targets: " + "; ".join(f"{t} {'met' if ok else 'NOT met'}" for t, ok in checks))


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a == "--targets"]
    main([a for a in sys.argv[1:] if a != "--targets"], targets=bool(flags))
