"""How many of the tree family's tuning trials does the successive-halving pruner stop, and what would the
search have found without it (issue #25, session 24)? DEVELOPMENT data only.

On synthetic_50k split seed 7 (session 24's report) the tree family's search completed 1 of its 10 trials:
trial 0 (LightGBM's defaults, learning rate 0.1) and 9 pruned, and the tuned LightGBM beat it by 0.0037. The
pruner (``phases/study.py``: SuccessiveHalvingPruner, reduction factor 3) keeps a trial only while it is in the
top third of the trials that reached the same epoch, so with one or two trials before it a trial must beat
them all at its first rung.

Per (table, split seed, re-split): the split seed's development part split again
(``bench_tables.development_bundle``; the test part is never read), the tree family alone (bench_tables'
train settings) twice on the same rows: with the shipped pruner and with Optuna's ``NopPruner`` (every
trial runs to its own early stop). Printed: trials completed / pruned, the chosen trial's learning rate,
leaves and best epoch, the development hold-out's ROC AUC and the train stage's seconds. A diagnosis: it
chooses nothing.

Run: .venv/bin/python benchmarks/diag_tree_pruning.py [--tables synthetic_50k] [--seeds 7] [--resplits 100]
     [--out FILE]
"""

from __future__ import annotations

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


def tune_outcome(res: Any) -> dict[str, Any]:
    """The tree family's tune phase as recorded in its work folder."""
    work = res.run_dir / res.summary["stages"]["train"]["dir"] / "work"
    tune = json.loads(next(work.rglob("phase_tune.json")).read_text())["outcomes"]["tune"]
    return tune


def one(name: str, seed: int, resplit: int, runs: Path) -> None:
    import optuna

    X, y, cats = B.TABLES[name]()
    data, y_dev = B.development_bundle(X, y, cats, name, seed, f"{name}_dev", resplit=resplit)
    B.say(B.development_header("diag_tree_pruning", seed, data, len(y_dev)) + f"; re-split {resplit}")
    shipped = optuna.pruners.SuccessiveHalvingPruner
    for arm in ("shipped pruner", "no pruning"):
        if arm == "no pruning":
            # study.open_study imports optuna inside the function: patch the class it looks up there
            optuna.pruners.SuccessiveHalvingPruner = lambda **_: optuna.pruners.NopPruner()  # type: ignore[misc]
        try:
            res = B.closedloop_run(data, "lgbm", runs / f"{name}_{seed}_{resplit}_{arm.split()[0]}")
        finally:
            optuna.pruners.SuccessiveHalvingPruner = shipped
        t = tune_outcome(res)
        mp = t["model_params"]
        B.say(
            f"  {arm:<14}: trials completed {t['n_complete']}, pruned {t['n_pruned']}; chose trial "
            f"{t['best_trial_number']} (leaves {mp.get('num_leaves')}, learning rate {mp.get('learning_rate'):.3g}, "
            f"min_child_samples {mp.get('min_child_samples')}, best epoch {t['best_epoch']}, "
            f"validation AUC {t['val_metric']:.4f}); development hold-out AUC {holdout_auc(res, data):.4f}; train "
            f"stage {res.summary['stages']['train']['seconds']:.1f} s"
        )


def main() -> None:
    args = resplit_args(__doc__, "diag_tree_pruning", ["synthetic_50k"], [7], [100])
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            for seed in args.seeds:
                for r in args.resplits:
                    one(name, seed, r, Path(tmp))
    if args.out:
        Path(args.out).write_text("\n".join(B.LINES) + "\n")


if __name__ == "__main__":
    main()
