"""How many of the tree family's tuning trials does the successive-halving pruner stop, and what would the
search have found without it (issue #25, session 24)? DEVELOPMENT data only.

On synthetic_50k split seed 7 (session 24's report) the tree family's search completed 1 of its 10 trials:
trial 0 (LightGBM's defaults, learning rate 0.1) and 9 pruned, and the tuned LightGBM beat it by 0.0037. The
pruner (``phases/study.py``: SuccessiveHalvingPruner, reduction factor 3) keeps a trial only while it is in the
top third of the trials that reached the same epoch, so with one or two trials before it a trial must beat
them all at its first rung.

Per (table, split seed, re-split): the split seed's development part split again
(``bench_tables.development_bundle``; the test part is never read), the tree family alone (bench_tables'
train settings) on the same rows, session 24: with the shipped pruner and with Optuna's ``NopPruner`` (every
trial runs to its own early stop). Printed: trials completed / pruned, the chosen trial's learning rate,
leaves and best epoch, the development hold-out's ROC AUC and the train stage's seconds. A diagnosis: it
chooses nothing.

Session 25 adds ``train.prune_startup``: the arms are ``shipped`` (``prune_startup: 0``, successive halving from
the first trial), ``start-up`` (``startup``: no trial stopped before the sampler's start-up trials, 3 of 10,
have completed) and ``all`` (no trial stopped: every trial runs to its own early stop, as Optuna's NopPruner
did in session 24's runs). ``--arms`` picks them; each run prints every arm's hold-out AUC minus the shipped
arm's to five decimals, and the last lines each arm's mean change (and its smallest) and total train-stage
seconds, for the rules declared in docs/trees_decisions.md, "A pruner that lets the start-up trials finish (session 25)" and the section after it.

Session 26 adds the ``num_leaves`` knob (leaves searched in ``[r/2, 2r]`` around the ladder's rung ``r``) and two
arms that set it explicitly: ``leaves-fixed`` (``tune_knobs`` without it: leaves stay at the rung, as before session
26) and ``leaves-searched`` (with it). ``--base`` names the arm the others are compared with (default ``shipped``);
the rule is in docs/trees_decisions.md, "Leaves searched around the ladder's rung (session 26)".

Session 26 also adds ``cv-all``: no trial pruned and every trial (with the capacity rung, 11 candidates) scored by the
k-fold cross-validation, so the tuning's choice rests on every row of train + validation rather than on the
validation split alone; with ``--origin seeded_stratified`` (the split a user's CSV gets) tables below 5,000 rows
take the k-fold protocol. Its rule: docs/trees_decisions.md, "Every tree trial cross-validated on small tables
(session 26)".

Run: .venv/bin/python benchmarks/diag_tree_pruning.py [--tables synthetic_50k] [--seeds 7] [--resplits 100]
     [--arms shipped start-up all] [--base shipped] [--origin source] [--out FILE]
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import bench_tables as B  # noqa: E402
from diag_table_protocol import holdout_auc, resplit_args  # noqa: E402

from closedloop.stages.train.knobs import ALL_KNOBS  # noqa: E402


def phase_outcome(res: Any, phase: str) -> dict[str, Any]:
    """The tree family's phase outcome as recorded in its work folder."""
    work = res.run_dir / res.summary["stages"]["train"]["dir"] / "work"
    return json.loads(next(work.rglob(f"phase_{phase}.json")).read_text())["outcomes"][phase]


def cv_said(cv: dict[str, Any]) -> str:
    """What the cross-validation chose, and among how many candidates."""
    if not cv.get("candidates"):
        return f"no cross-validation ({cv.get('skipped') or 'skipped'})"
    return f"{cv['protocol']}: {len(cv['candidates'])} candidates cross-validated, chose {cv['chosen']}"


def tune_outcome(res: Any) -> dict[str, Any]:
    """The tree family's tune phase as recorded in its work folder."""
    return phase_outcome(res, "tune")


ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "shipped": ("prune_startup 0", {"prune_startup": 0}),
    "start-up": ("prune_startup startup", {"prune_startup": "startup"}),
    "all": ("prune_startup all", {"prune_startup": "all"}),
    "leaves-fixed": ("leaves at the rung", {"tune_knobs": [k for k in ALL_KNOBS if k != "num_leaves"]}),
    "leaves-searched": ("leaves searched", {"tune_knobs": list(dict.fromkeys([*ALL_KNOBS, "num_leaves"]))}),
    "cv-all": ("every trial, all CV'd", {"prune_startup": "all", "cv_candidates": 11}),
}
"""Arm -> (its label, the train settings it sets over bench_tables' TRAIN)."""


def one(
    name: str, seed: int, resplit: int, runs: Path, arms: list[str], base: str, origin: str = "source"
) -> dict[str, tuple[float, float]]:
    """Each arm's (development hold-out AUC, train-stage seconds) on one re-split; ``origin`` the split's
    marking (``seeded_stratified``: a user's CSV, k-fold below 5,000 rows)."""
    X, y, cats = B.TABLES[name]()
    data, y_dev = B.development_bundle(X, y, cats, name, seed, f"{name}_dev", resplit=resplit)
    data = dataclasses.replace(data, meta=data.meta.model_copy(update={"split_origin": origin}))
    B.say(
        B.development_header("diag_tree_pruning", seed, data, len(y_dev))
        + f"; re-split {resplit}; split_origin {origin}"
    )
    out: dict[str, tuple[float, float]] = {}
    for arm in arms:
        settings, before = ARMS[arm][1], dict(B.TRAIN)
        B.TRAIN.update(settings)
        try:
            res = B.closedloop_run(data, "lgbm", runs / f"{name}_{seed}_{resplit}_{arm}")
        finally:  # bench_tables' own settings back (cv_candidates is one of them)
            B.TRAIN.clear()
            B.TRAIN.update(before)
        t = tune_outcome(res)
        cv = phase_outcome(res, "cross_validate")
        mp = t["model_params"]
        auc, secs = holdout_auc(res, data), res.summary["stages"]["train"]["seconds"]
        out[arm] = (auc, secs)
        # no tuned learning rate: no trial beat the unregularized capacity rung, which was kept
        chose = (
            f"chose trial {t['best_trial_number']}"
            if "learning_rate" in mp
            else "kept the unregularized capacity rung (learning rate 0.1)"
        )
        B.say(
            f"  {ARMS[arm][0]:<22}: trials completed {t['n_complete']}, pruned {t['n_pruned']}; {chose} "
            f"(leaves {mp.get('num_leaves')}, learning rate {mp.get('learning_rate', 0.1):.3g}, "
            f"min_child_samples {mp.get('min_child_samples')}, best epoch {t['best_epoch']}, "
            f"validation AUC {t['val_metric']:.4f}); {cv_said(cv)}; development hold-out AUC {auc:.4f}; "
            f"train stage {secs:.1f} s"
        )
    if base in out:
        B.say(
            f"  hold-out AUC minus the {base} arm's ({name} seed {seed} re-split {resplit}): "
            + ", ".join(f"{a} {out[a][0] - out[base][0]:+.5f}" for a in out if a != base)
        )
    return out


def summary(results: list[dict[str, tuple[float, float]]], arms: list[str], base: str) -> None:
    if base not in arms:
        return
    base_s = sum(r[base][1] for r in results)
    for arm in (a for a in arms if a != base):
        d = [r[arm][0] - r[base][0] for r in results]
        s = sum(r[arm][1] for r in results)
        B.say(
            f"{ARMS[arm][0]} minus {ARMS[base][0]} over {len(d)} re-split(s): hold-out AUC mean "
            f"{sum(d) / len(d):+.5f} (min {min(d):+.5f}, max {max(d):+.5f}); train stage {s:.0f} s in all = "
            f"{s / base_s:.2f}x the {base} arm's"
        )


def main() -> None:
    def more(ap: Any) -> None:
        ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=["shipped", "start-up", "all"])
        ap.add_argument(
            "--base", choices=list(ARMS), default="shipped", help="the arm the others are compared with"
        )
        ap.add_argument("--origin", choices=["source", "seeded_stratified"], default="source")

    args = resplit_args(__doc__, "diag_tree_pruning", ["synthetic_50k"], [7], [100], more)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            for seed in args.seeds:
                for r in args.resplits:
                    results.append(one(name, seed, r, Path(tmp), args.arms, args.base, args.origin))
    summary(results, args.arms, args.base)
    if args.out:
        Path(args.out).write_text("\n".join(B.LINES) + "\n")


if __name__ == "__main__":
    main()
