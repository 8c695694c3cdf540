"""Pool the audit's false near-duplicate warnings on random re-splits over several saved runs (issue #25).

Reads the lines ``bench_audit_density.py`` printed into ``docs/results/*.txt`` (nothing typed in by hand):
for each set, each run's "random re-splits (N, seeds ...): a near-duplicate warning or error in K" and,
where the run had ``--details``, how often each comparison's p fell under its own share of ``warn_alpha``.
Refuses runs whose seeds overlap (the same re-split counted twice) or whose seed list does not hold N seeds.
Prints per run and pooled: the count, the rate and its Clopper-Pearson 95% interval, and the reading
declared in docs/audit.md (session 17): upper bound <= 5%: met (shown under 5%); point <= 5% with the
upper bound above: not shown; point above 5%: not met (shown over when the lower bound is above 5%).

Run: .venv/bin/python benchmarks/pool_audit_resplits.py --set car medexp --files A.txt B.txt [--also C.txt]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

TARGET = 0.05
RESPLITS = re.compile(
    r"random re-splits \((\d+), seeds ([0-9, \-]+)\): a near-duplicate warning or error in (\d+) "
)
UNDER = re.compile(r"(train-val|train-test|train-held-out|val-test) (\d+) \(")


def seeds_of(ranges: str) -> list[int]:
    """``"8000-8999, 10000-10123"`` -> the seeds."""
    out: list[int] = []
    for part in ranges.split(","):
        lo, _, hi = part.strip().partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def runs_in(path: Path, name: str) -> list[dict]:
    """Each re-split count printed for set ``name`` in one results file."""
    runs: list[dict] = []
    current = None
    for line in path.read_text().splitlines():
        head = re.match(r"^([A-Za-z0-9_]+)(?: \(table\))?: as released", line)
        if head:
            current = head.group(1).lower()
            continue
        if current != name:
            continue
        m = RESPLITS.search(line)
        if m:
            n, seeds, k = int(m.group(1)), seeds_of(m.group(2)), int(m.group(3))
            if len(seeds) != n:
                raise SystemExit(f"{path}: {name}: {n} re-splits but the seeds {m.group(2)} are {len(seeds)}")
            runs.append(
                {"file": path.name, "n": n, "k": k, "seeds": seeds, "ranges": m.group(2), "under": {}}
            )
        elif "each comparison's p under its own share" in line and runs:
            runs[-1]["under"] = {key: int(c) for key, c in UNDER.findall(line.split("re-splits:", 1)[1])}
    return runs


def reading(k: int, n: int) -> str:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95)
    if ci.high <= TARGET:
        verdict = "met (the whole interval under 5%)"
    elif k / n <= TARGET:
        verdict = "not shown (point <= 5%, the upper bound above)"
    elif ci.low > TARGET:
        verdict = "not met, shown over (the whole interval above 5%)"
    else:
        verdict = "not met by its point estimate (5% inside the interval)"
    return f"{k} of {n} ({k / n:.2%}, 95% interval {ci.low:.2%}-{ci.high:.2%}) -> {verdict}"


def pooled(name: str, runs: list[dict], label: str) -> None:
    seen: dict[int, str] = {}
    for r in runs:
        for s in r["seeds"]:
            if s in seen:
                raise SystemExit(
                    f"{name}: seed {s} is in both {seen[s]} and {r['file']}: a re-split counted twice"
                )
            seen[s] = r["file"]
    n, k = sum(r["n"] for r in runs), sum(r["k"] for r in runs)
    print(f"{name}: {label}, {len(runs)} run(s): {reading(k, n)}")
    with_details = [r for r in runs if r["under"]]
    if with_details:
        m = sum(r["n"] for r in with_details)
        parts = [
            f"{key} {sum(r['under'].get(key, 0) for r in with_details)}" for key in with_details[0]["under"]
        ]
        print(
            f"   each comparison's p under its own share, over the {m} re-splits with details: "
            + ", ".join(parts)
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", nargs="+", required=True, help="set names as printed (car, medexp, ...)")
    ap.add_argument("--files", nargs="+", type=Path, required=True, help="runs pooled as the primary count")
    ap.add_argument("--also", nargs="*", type=Path, default=[], help="runs added for a secondary count only")
    args = ap.parse_args()
    for path in [*args.files, *args.also]:
        if not path.is_file():
            raise SystemExit(f"{path}: no such results file")
    print(
        f"target: false near-duplicate warnings on random re-splits <= {TARGET:.0%}; Clopper-Pearson 95% intervals"
    )
    for name in args.set:
        primary = [r for p in args.files for r in runs_in(p, name)]
        if not primary:
            raise SystemExit(f"{name}: no re-split count in {', '.join(map(str, args.files))}")
        for r in primary:
            print(f"{name}: {r['file']} (seeds {r['ranges']}): {reading(r['k'], r['n'])}")
        pooled(name, primary, "pooled")
        extra = [r for p in args.also for r in runs_in(p, name)]
        if extra:
            for r in extra:
                print(f"{name}: [secondary] {r['file']} (seeds {r['ranges']}): {reading(r['k'], r['n'])}")
            pooled(name, primary + extra, "[secondary] pooled with the runs above")


if __name__ == "__main__":
    main()
