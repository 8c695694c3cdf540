"""Why the multi-label table's trees are not several times faster than its MLP (issue #25, session 12:
the family run's MLP/trees ratio is 1.4 there, 3.1-3.7 on the binary tables). Three measurements on
``medexp_multilabel`` (``bench_tables.py``: MedExp, three labels), each bounding one way to speed it up:

1. **Cost per boosting round.** One multi-label fit (the per-label logistic objective, ``num_class`` 3:
   three trees a round) against three binary fits of LightGBM's own objective on the same rows, and
   one binary fit, at the same parameters; interleaved over ``--repeats`` repeats, the medians and
   their ratios from one run. If a multi-label round costs what three binary rounds cost, no objective
   can make one booster per label cheaper: the trees' boosting time grows with the label count, while
   the MLP trains every label in one network for about the cost of one.
2. **Early stopping per label** (each label's trees stop after ``patience`` epochs without improving
   that label's validation AUC, and each label keeps its own best round). Replayed on every validation-
   scored fit of the tree family's train stage (the bench_tables settings): the label-epochs grown in
   lockstep (now) against per label, and the validation macro AUC at the lockstep best epoch against
   each label at its own best. Counts, not timings.
3. **Two OpenMP threads** for a fit that runs alone, against one (the ratio in one run). Quote it with
   the machine's load: on 2 cores shared with other jobs, threads wait on each other.
4. **One booster per label on threads** (``train: {label_threads: N}``,
   :class:`~closedloop.models.families.lgbm_multilabel.LabelBoosters`): the same rounds grown as three
   single-label boosters on 1, 2 and 3 Python threads (one OpenMP thread each), against the joint fit;
   interleaved, medians and ratios from one run. Also whether the model text is the same for every
   thread count, and whether the trees equal the joint fit's at ``feature_fraction`` 1 and 0.7.

Run: .venv/bin/python benchmarks/bench_multilabel_trees.py [--repeats 5] [--only 1,2,4]
     [--out docs/results/multilabel_trees.txt]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_tables as B  # noqa: E402

TABLE = "medexp_multilabel"
PARAMS = {"num_leaves": 64, "learning_rate": 0.05, "min_child_samples": 20, "seed": 1}
FIT = {  # how the tree engine runs LightGBM: one thread, deterministic, row-wise
    **PARAMS,
    "verbosity": -1,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "feature_pre_filter": False,
}
"""A configuration in the middle of the tuned range (the stage's tuned fits have 8-64 leaves)."""
ROUNDS = 200


def interleaved_medians(fits: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each fit over ``repeats`` rounds, the order reversed every other round so the
    load of a shared machine hits every fit alike.

    >>> sorted(interleaved_medians({"a": lambda: None, "b": lambda: None}, 2))
    ['a', 'b']
    """
    got: dict[str, list[float]] = {name: [] for name in fits}
    for r in range(repeats):
        for name in list(fits) if r % 2 == 0 else list(fits)[::-1]:
            t0 = time.perf_counter()
            fits[name]()
            got[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in got.items()}


def table_arrays() -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The table's rows as float32 (categories as codes), its (N, K) labels, its categorical columns."""
    X, y, cats = B.TABLES[TABLE]()
    x = np.column_stack([X[c].cat.codes if c in cats else X[c] for c in X.columns]).astype(np.float32)
    return x, np.asarray(y, np.float64), [i for i, c in enumerate(X.columns) if c in cats]


def label_threads(repeats: int, say: Any) -> None:
    import lightgbm as lgb

    from closedloop.models.families.lgbm_multilabel import LabelBoosters, PerLabelLogistic, label_log_odds

    x, yy, cat_idx = table_arrays()
    k = yy.shape[1]
    objective, init = PerLabelLogistic(yy), label_log_odds(yy)
    ds_params = {"verbosity": -1, "feature_pre_filter": False}

    def dataset(start: np.ndarray) -> Any:
        return lgb.Dataset(
            x,
            label=np.zeros(len(yy)),
            init_score=start,
            categorical_feature=cat_idx,
            params=ds_params,
            free_raw_data=False,
        ).construct()

    joint_ds = dataset(np.tile(init, (len(yy), 1)))
    label_ds = [dataset(np.full(len(yy), s)) for s in init]
    base = {**FIT, "bagging_fraction": 0.8, "bagging_freq": 1}

    def trees(text: str) -> str:
        return text[text.index("Tree=0") : text.index("end of trees")]

    def joint(ff: float) -> str:
        p = {**base, "feature_fraction": ff, "objective": objective, "num_class": k}
        return lgb.train(p, joint_ds, num_boost_round=ROUNDS).model_to_string()

    def per_label(threads: int, ff: float = 1.0) -> str:
        labels = LabelBoosters({**base, "feature_fraction": ff}, label_ds, objective, threads)
        try:
            labels.advance(ROUNDS)
            return labels.text()
        finally:
            labels.close()

    fits = {"joint fit (one booster, 3 trees a round)": lambda: joint(1.0)} | {
        f"one booster per label, {n} thread{'s' if n > 1 else ''}": (lambda n=n: per_label(n))
        for n in (1, 2, 3)
    }
    load0 = os.getloadavg()[0]
    med = interleaved_medians(fits, repeats)
    say(
        f"4. one booster per label on threads ({ROUNDS} rounds, {PARAMS}, bagging_fraction 0.8; medians of "
        f"{repeats} interleaved repeats; load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        f"{os.cpu_count()} cores):"
    )
    one = med["one booster per label, 1 thread"]
    for name, v in med.items():
        say(f"   {name}: {v:.3f} s (time / one booster per label on 1 thread: {v / one:.2f})")
    same = {per_label(n, 0.7) for n in (1, 2, 3)}
    say(
        f"   model text for 1, 2 and 3 threads at feature_fraction 0.7: {'IDENTICAL' if len(same) == 1 else 'DIFFERENT'}; "
        f"trees equal the joint fit's at feature_fraction 1.0: {trees(joint(1.0)) == trees(per_label(2))}, "
        f"at 0.7: {trees(joint(0.7)) == trees(per_label(2, 0.7))}"
    )


def round_costs(repeats: int, say: Any) -> None:
    import lightgbm as lgb

    from closedloop.models.families.lgbm_multilabel import PerLabelLogistic, label_log_odds

    X, y, cats = B.TABLES[TABLE]()
    x = np.column_stack([X[c].cat.codes if c in cats else X[c] for c in X.columns]).astype(np.float32)
    yy = np.asarray(y, np.float64)
    cat_idx = [i for i, c in enumerate(X.columns) if c in cats]
    base = dict(FIT)

    def dataset(label: np.ndarray, **kw: Any) -> Any:
        d = lgb.Dataset(
            x,
            label=label,
            categorical_feature=cat_idx,
            params={"verbosity": -1, "feature_pre_filter": False},
            free_raw_data=False,
            **kw,
        )
        return d.construct()

    binary = [dataset(yy[:, k]) for k in range(yy.shape[1])]
    objective, init = PerLabelLogistic(yy), label_log_odds(yy)
    joint = dataset(np.zeros(len(yy)), init_score=np.tile(init, (len(yy), 1)))
    k = yy.shape[1]
    fits = {
        "multi-label, 1 thread": lambda: lgb.train(
            {**base, "objective": objective, "num_class": k}, joint, num_boost_round=ROUNDS
        ),
        f"{k} binary fits, 1 thread": lambda: [
            lgb.train({**base, "objective": "binary"}, d, num_boost_round=ROUNDS) for d in binary
        ],
        "1 binary fit, 1 thread": lambda: lgb.train(
            {**base, "objective": "binary"}, binary[0], num_boost_round=ROUNDS
        ),
        "multi-label, 2 threads": lambda: lgb.train(
            {**base, "objective": objective, "num_class": k, "num_threads": 2}, joint, num_boost_round=ROUNDS
        ),
    }
    med = interleaved_medians(fits, repeats)
    say(
        f"1. cost per boosting round ({len(yy):,} rows, {x.shape[1]} columns, {ROUNDS} rounds, {PARAMS}; "
        f"medians of {repeats} interleaved repeats; load average {os.getloadavg()[0]:.1f}):"
    )
    for name, v in med.items():
        say(f"   {name}: {v:.3f} s ({1000 * v / ROUNDS:.2f} ms a round)")
    say(
        f"   multi-label / {k} binary fits: {med['multi-label, 1 thread'] / med[f'{k} binary fits, 1 thread']:.2f}; "
        f"multi-label / 1 binary fit: {med['multi-label, 1 thread'] / med['1 binary fit, 1 thread']:.2f} "
        f"(one tree per label and round: the boosting time grows with the label count)"
    )
    say(
        f"3. two OpenMP threads against one, multi-label fit alone: time ratio "
        f"{med['multi-label, 2 threads'] / med['multi-label, 1 thread']:.2f} (below 1: faster)"
    )


def per_label_stopping(say: Any) -> None:
    from sklearn.metrics import roc_auc_score

    from closedloop.core.checks import GivenArtifacts
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.registry import STAGES
    from closedloop.stages.train import TrainModel
    from closedloop.stages.train.tree_engine import TreeEngine

    fits: list[dict[str, Any]] = []
    fit, evaluate = TreeEngine.fit, TreeEngine.evaluate

    def recorded_fit(self: Any, net: Any, train: Any, val: Any, hp: Any, **kw: Any) -> Any:
        fits.append({"patience": hp.patience, "aucs": []})
        return fit(self, net, train, val, hp, **kw)

    def recorded_evaluate(self: Any, logits: np.ndarray, data: Any) -> dict[str, float]:
        if fits:
            yv = np.asarray(data.y_np)
            fits[-1]["aucs"].append([roc_auc_score(yv[:, j], logits[:, j]) for j in range(yv.shape[1])])
        return evaluate(self, logits, data)

    TreeEngine.fit, TreeEngine.evaluate = recorded_fit, recorded_evaluate  # type: ignore[method-assign]
    try:
        X, y, cats = B.TABLES[TABLE]()
        data, _, _ = B.bundle(X, y, cats, TABLE)
        with tempfile.TemporaryDirectory() as tmp:
            given = GivenArtifacts.of({"data": data}, Path(tmp) / "given")
            stages = [STAGES.resolve("task")(), TrainModel(**B.TRAIN, family="lgbm")]
            Pipeline([given, *stages], name="ml", runs_dir=Path(tmp) / "runs").run(progress=False)
    finally:
        TreeEngine.fit, TreeEngine.evaluate = fit, evaluate  # type: ignore[method-assign]
    lockstep = per_label = scored = 0
    gains = []
    for f in fits:
        a = np.asarray(f["aucs"])
        if len(a) == 0:
            continue
        scored += 1
        n, k = a.shape
        best = a.argmax(0)  # each label's best epoch (0-based)
        macro_best = int(a.mean(1).argmax())
        patience = f["patience"] or 0
        lockstep += n * k
        per_label += int(sum(min(n, b + 1 + patience) for b in best))
        gains.append(float(a[best, range(k)].mean() - a[macro_best].mean()))
    say(
        f"2. early stopping per label, replayed on the {scored} validation-scored tree fits of one train stage "
        f"(bench_tables.TRAIN): label-epochs grown {lockstep} in lockstep, {per_label} per label "
        f"(saves {1 - per_label / max(lockstep, 1):.0%} of the trees at most: a stopped label still builds a "
        f"root histogram each round); validation macro AUC, each label at its own best epoch minus "
        f"lockstep: median {statistics.median(gains):+.4f}, max {max(gains):+.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="1,2,4", help="sections to run (3 comes with 1)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    only = set(args.only.split(","))
    lines = [
        f"bench_multilabel_trees ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): python "
        f"benchmarks/bench_multilabel_trees.py {' '.join(sys.argv[1:])}"
    ]
    print(lines[0], flush=True)

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    if "1" in only:
        round_costs(args.repeats, say)
    if "2" in only:
        per_label_stopping(say)
    if "4" in only:
        label_threads(args.repeats, say)
    say(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
