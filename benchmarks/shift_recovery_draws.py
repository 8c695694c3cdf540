"""Summarize the per-draw lines of bench_shift_recovery.py runs made in rounds (``--first-draw``).

A run with the retrained challenger costs one pipeline run per draw, so on a shared machine it is
run in rounds (and may be cut short); each draw prints one line as it ends. This reads those lines
from the logs given (each log: one scenario, its ``[name]`` header) and prints, per scenario, the
draws done and the same figures the bench prints for a whole run.

Run: python benchmarks/shift_recovery_draws.py LOG [LOG ...]
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
SCENARIO = re.compile(r"^\[(\w+)\] production")


def main(paths: list[str]) -> None:
    draws: dict[str, dict[int, tuple]] = defaultdict(dict)
    for path in paths:
        pending = []
        for line in Path(path).read_text().splitlines():
            if m := DRAW.search(line):
                pending.append(m.groups())
            elif m := SCENARIO.match(line):  # the scenario's summary follows its draws
                for g in pending:
                    draws[m.group(1)][int(g[0])] = g
                pending = []
        if pending:  # cut short before the summary: the scenario is in the run's file name
            name = next(
                (s for s in ("gaussian_noise", "contrast", "in_distribution", "test") if s in path), "?"
            )
            for g in pending:
                draws[name][int(g[0])] = g
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


if __name__ == "__main__":
    main(sys.argv[1:])
