"""How much faster the tree family's selection phases are than the MLP's, before and after a change
(issue #25: "trees several times faster"; session 8 measured 2.3-2.8x).

Per table, ``--rounds`` rounds; in each round the family run ``train: {family: [lgbm, mlp]}`` (the
settings of ``bench_tables.py``: both families through sanity, beat the baseline, the ladder, tuning and
cross-validation, the winner fitted finally) runs once with the code of ``--before`` (a commit, its
``src/`` extracted by ``git archive`` into a temporary folder) and once with this checkout's ``src/``,
in alternating order, each in its own Python process. Each process first runs the same family run on
the table's first 600 rows (``--cold``: not), so neither family pays the first use of a library (the
family listed first, trees, used to load matplotlib, Optuna and LightGBM for both). From each run's
stage timings: the selection seconds of each family (``family <name> seconds``) and their ratio MLP /
trees, which comes from one run (the same machine state for both families); then the median over
rounds for each code. Per run, the tree family's seconds per phase (``lgbm: phase <name>``) and per part
(wall seconds inside the drawing functions, the tree fits, LightGBM's ``Booster.update``; the rest is
the method's own work: Optuna, the ledger, the paired comparisons, the files), and the MLP's figures;
the median ratio without each family's figures. It also says whether the tree family's validation
ledger rows (every configuration, its parameters and scores) are identical in every run, before and
after: a speed change that trains the same trees.

``--alone``: per round and code, one process also trains the table with each family alone (``family:
lgbm``, then ``family: mlp``, the order alternating over rounds) and reports each whole train stage's
wall seconds (selection, final fit, calibration, test, importance, figures) and their ratio.

Timings are wall seconds on whatever machine runs it; run at normal priority when quoting them.

``--train-before`` / ``--train-after KEY=VALUE``: train params over ``bench_tables.TRAIN`` for one side
(e.g. ``--before HEAD --train-before label_threads=1 --train-after label_threads=2``: the same code, one
thread against two). With ``label_threads`` the boosting rounds are the wall seconds of every label's
rounds on the stage's thread (the label threads' own calls are not counted again).

Run: .venv/bin/python benchmarks/bench_tree_speed.py --before COMMIT [--tables nwtco,medexp]
     [--rounds 3] [--alone] [--cold] [--train-before K=V ...] [--train-after K=V ...]
     [--out docs/results/tree_speed.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("sanity", "beat_baseline", "scale_up", "tune", "cross_validate")

ONE_RUN = """
import functools, json, sys, tempfile, threading, time
from pathlib import Path
sys.path.insert(0, {bench!r})
import bench_tables as B
import lightgbm
from closedloop.core.checks import GivenArtifacts
from closedloop.core.pipeline import Pipeline
from closedloop.core.registry import STAGES
from closedloop.stages.train import TrainModel, families, plots
from closedloop.stages.train.tree_engine import TreeEngine
parts, inside, active = {{}}, [None], set()
def timed(owner, name, part):  # wall seconds spent in owner.name while a family selects, per family
    fn = getattr(owner, name)
    @functools.wraps(fn)
    def wrapper(*a, **k):
        if inside[0] is None or part in active or threading.current_thread() is not threading.main_thread():
            return fn(*a, **k)  # a part's nested calls, and calls on label threads, are counted once
        active.add(part)
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            key = inside[0] + " " + part
            parts[key] = parts.get(key, 0.0) + time.perf_counter() - t0
            active.discard(part)
    setattr(owner, name, wrapper)
for owner, name, part in [  # figures; the fits (validation scoring and callbacks in); LightGBM's rounds
    (plots, "_save", "figures"),
    (plots, "warm", "figures"),
    (TreeEngine, "fit", "fits"),
    (TreeEngine, "overfit_batch", "fits"),
    (lightgbm.Booster, "update", "boosting rounds"),
]:
    timed(owner, name, part)
try:  # one booster per label (train.label_threads): its rounds, all labels, wall seconds on the stage's thread
    from closedloop.models.families.lgbm_multilabel import LabelBoosters
    timed(LabelBoosters, "advance", "boosting rounds")
except ImportError:  # code from before label_threads
    pass
TRAIN = {{**B.TRAIN, **{train!r}}}
run_phases = families.run_phases
def timed_phases(sess, select):
    inside[0] = sess.family
    try:
        return run_phases(sess, select)
    finally:
        inside[0] = None
families.run_phases = timed_phases
X, y, cats = B.TABLES[{table!r}]()
data, _, _ = B.bundle(X, y, cats, {table!r})
with tempfile.TemporaryDirectory() as tmp:
    runs = Path(tmp)
    if {warm!r}:  # the same family run on a slice first: every library either family uses is loaded
        small, _, _ = B.bundle(X.iloc[:{warm_rows}], y[:{warm_rows}], cats, {table!r})
        warm = [STAGES.resolve("task")(), TrainModel(**{{**TRAIN, "n_trials": 2}}, family=["lgbm", "mlp"])]
        Pipeline([GivenArtifacts.of({{"data": small}}, runs / "warm_given"), *warm], name="warm", runs_dir=runs / "warm").run(progress=False)
        parts.clear()
    given = GivenArtifacts.of({{"data": data}}, runs / "given")
    if {alone!r}:  # each family alone in its own train stage, as a user runs it: the stage's wall time
        alone = {{}}
        for fam in {alone!r}:
            stages = [STAGES.resolve("task")(), TrainModel(**TRAIN, family=fam)]
            res = Pipeline([given, *stages], name=f"alone_{{fam}}", runs_dir=runs / fam).run(progress=False)
            s = res.summary["stages"]["train"]
            if s["status"] != "ok":
                raise SystemExit(f"train failed: {{s.get('error')}}")
            alone[f"stage {{fam}} seconds"] = s["seconds"]
        print("TIMINGS " + json.dumps(alone))
        raise SystemExit(0)
    stages = [STAGES.resolve("task")(), TrainModel(**TRAIN, family=["lgbm", "mlp"])]
    res = Pipeline([given, *stages], name="speed", runs_dir=runs).run(progress=False)
    s = res.summary["stages"]["train"]
    if s["status"] != "ok":
        raise SystemExit(f"train failed: {{s.get('error')}}")
    timings = json.loads((res.run_dir / s["dir"] / "stage.json").read_text())["timings"]
    ledger = [json.loads(line) for line in (res.run_dir / "validation_ledger.jsonl").read_text().splitlines()]
    trees = [{{k: v for k, v in r.items() if k != "time"}} for r in ledger if r["description"].startswith("lgbm:")]
    timings["tree rows"] = json.dumps(trees, sort_keys=True)
    timings.update({{f"part {{k}}": v for k, v in parts.items()}})
print("TIMINGS " + json.dumps(timings))
"""


def extract(commit: str, into: Path) -> Path:
    """``src/`` of ``commit`` (git archive) under ``into``; returns that ``src`` folder."""
    blob = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


WARM_ROWS = 600
"""Rows of the slice a warm run trains first (``--cold``: none)."""


def one_run(
    src: Path,
    table: str,
    warm: bool = True,
    alone: list[str] | None = None,
    train: dict[str, Any] | None = None,
) -> dict[str, float]:
    """One process: the family run's timings, or (``alone``: the families in this order) each family's
    own train stage's wall seconds. ``train``: train params over bench_tables.TRAIN."""
    code = ONE_RUN.format(
        bench=str(ROOT / "benchmarks"),
        table=table,
        warm=warm,
        warm_rows=WARM_ROWS,
        alone=alone or [],
        train=train or {},
    )
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("TIMINGS ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"{table} with {src}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(line.removeprefix("TIMINGS "))


def alone_rounds(codes: dict[str, Path], table: str, args: argparse.Namespace, say: Any) -> None:
    """``--alone``: per round and code, one process trains the table with each family alone (their order
    alternating over rounds) and reports each train stage's wall seconds and their ratio."""
    got: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        families = ["lgbm", "mlp"] if r % 2 == 0 else ["mlp", "lgbm"]
        for name in ["before", "after"] if r % 2 == 0 else ["after", "before"]:
            t = one_run(codes[name], table, warm=not args.cold, alone=families, train=args.train[name])
            trees, mlp = t["stage lgbm seconds"], t["stage mlp seconds"]
            got[name].append(mlp / trees)
            say(
                f"{table} alone, round {r + 1} {name:>6}: train stage with trees alone {trees:.2f} s, with the "
                f"MLP alone {mlp:.2f} s, ratio MLP/trees {mlp / trees:.2f} (ran {' then '.join(families)})"
            )
    for name in ("before", "after"):
        v = got[name]
        say(
            f"{table} alone {name:>6}: median over {args.rounds} rounds: train stage ratio MLP/trees "
            f"{statistics.median(v):.2f} (min {min(v):.2f}, max {max(v):.2f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the commit to compare this checkout with")
    ap.add_argument("--tables", default="nwtco,medexp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--cold",
        action="store_true",
        help="no warm-up run: the family listed first (trees) also pays the first use of the libraries",
    )
    ap.add_argument(
        "--alone",
        action="store_true",
        help="also each family alone in its own train stage (the whole stage: selection, final fit, "
        "calibration, test, figures; trees alone draw theirs in a helper process by default)",
    )
    ap.add_argument(
        "--train-before",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="train params (JSON values) over bench_tables.TRAIN for the before runs, e.g. label_threads=1",
    )
    ap.add_argument("--train-after", nargs="*", default=[], metavar="KEY=VALUE", help="the same, after")
    args = ap.parse_args()
    args.train = {
        name: {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in given)}
        for name, given in (("before", args.train_before), ("after", args.train_after))
    }
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True
    )
    lines = [
        f"bench_tree_speed ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): python "
        f"benchmarks/bench_tree_speed.py {' '.join(sys.argv[1:])}; before = {args.before}, after = this "
        f"checkout ({head}{', with uncommitted changes in src' if dirty.stdout.strip() else ''}); "
        f"family run [lgbm, mlp], bench_tables.TRAIN"
        + "".join(
            f", {name} with {args.train[name]} over it" for name in ("before", "after") if args.train[name]
        )
        + "; "
        + (
            "cold processes (the family listed first, trees, also loads the libraries both use)"
            if args.cold
            else f"each process first runs the same family run on the table's first {WARM_ROWS} rows, so neither "
            "family pays the first use of a library (matplotlib, Optuna, LightGBM, torch's lazy modules)"
        )
        + f"; load average at start {os.getloadavg()[0]:.1f}"
    ]
    print(lines[0], flush=True)

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        codes = {"before": extract(args.before, Path(tmp)), "after": ROOT / "src"}
        for table in args.tables.split(","):
            got: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for r in range(args.rounds):
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                for name in order:
                    t = one_run(codes[name], table, warm=not args.cold, train=args.train[name])
                    got[name].append(t)
                    trees, mlp = t["family lgbm seconds"], t["family mlp seconds"]
                    phases = ", ".join(f"{p} {t.get(f'lgbm: phase {p}', 0.0):.2f}" for p in PHASES)
                    part = {k.removeprefix("part "): v for k, v in t.items() if k.startswith("part ")}
                    say(
                        f"{table} round {r + 1} {name:>6}: selection trees {trees:.2f} s, MLP {mlp:.2f} s, "
                        f"ratio MLP/trees {mlp / trees:.2f}; trees by phase: {phases}; trees by part: figures "
                        f"{part.get('lgbm figures', 0.0):.2f}, fits {part.get('lgbm fits', 0.0):.2f} (LightGBM's "
                        f"boosting rounds {part.get('lgbm boosting rounds', 0.0):.2f}), the rest "
                        f"{trees - part.get('lgbm figures', 0.0) - part.get('lgbm fits', 0.0):.2f}; MLP's figures "
                        f"{part.get('mlp figures', 0.0):.2f}"
                    )
            rows = {t["tree rows"] for name in ("before", "after") for t in got[name]}
            n_rows = len(json.loads(next(iter(rows))))
            say(
                f"{table}: the tree family's validation ledger rows (configurations, parameters, scores) in all "
                f"{2 * args.rounds} runs: {'IDENTICAL' if len(rows) == 1 else f'{len(rows)} DIFFERENT sets'} "
                f"({n_rows} rows)"
            )
            for name in ("before", "after"):
                ratios = [t["family mlp seconds"] / t["family lgbm seconds"] for t in got[name]]
                trees = [t["family lgbm seconds"] for t in got[name]]
                mlp = [t["family mlp seconds"] for t in got[name]]
                # the figures are the same for both families (one per phase): the ratio of the rest of
                # each family's selection says how much faster the trees train, method included
                bare = [
                    (t["family mlp seconds"] - t.get("part mlp figures", 0.0))
                    / (t["family lgbm seconds"] - t.get("part lgbm figures", 0.0))
                    for t in got[name]
                ]
                figs = [t.get("part lgbm figures", 0.0) / t["family lgbm seconds"] for t in got[name]]
                say(
                    f"{table} {name:>6}: median over {args.rounds} rounds: selection trees "
                    f"{statistics.median(trees):.2f} s, MLP {statistics.median(mlp):.2f} s, ratio MLP/trees "
                    f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); figures "
                    f"{statistics.median(figs):.0%} of the trees' selection; without each family's figures "
                    f"MLP/trees {statistics.median(bare):.2f}"
                )
                # a ceiling no change around the fits can pass: the trees' selection if it were LightGBM's
                # boosting rounds alone (no figures, no validation scoring, no Optuna, no files)
                boost = [t.get("part lgbm boosting rounds", 0.0) for t in got[name]]
                say(
                    f"{table} {name:>6}: LightGBM's boosting rounds {statistics.median(boost):.2f} s of the trees' "
                    f"selection; ceiling if everything else were free: MLP/trees "
                    f"{statistics.median([m / b for m, b in zip(mlp, boost, strict=True) if b > 0] or [0.0]):.2f}"
                )
            if args.alone:
                alone_rounds(codes, table, args, say)
    say(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
