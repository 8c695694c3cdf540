"""What closedloop's tree choice on diamonds lost against the tuned LightGBM (issue #25), on DEVELOPMENT
data only: the split seed's development part (80%) of ``bench_tables.py`` is split again the same way
(train / validation / a development hold-out of 20%); the test part is never read.

1. Plain LightGBM at the configuration closedloop's quick search chose on the test run (16 leaves,
   learning rate 0.1, LightGBM's defaults) for the 160 rounds it kept (8 epochs of 20 rounds: the quick
   preset's ``max_epochs``), against the same with early stopping on validation, more leaves, and the
   tuned reference's best configuration; scored on the development hold-out (macro one-vs-rest ROC AUC).
2. Where early stopping by epochs of 20 rounds (patience 3) stops on each metric (balanced accuracy, the
   task's default; ROC AUC; log-loss).
3. closedloop's tree family alone (``family: lgbm``, the bench's train settings) with ``tree_extend`` 1
   (the plan is a cap, as before session 14) and 4 (the new default): the chosen trial's epochs, the
   train stage's seconds, and the hold-out figures of the shipped model.

Run: .venv/bin/python benchmarks/diag_diamonds_gap.py [--seed 0] [--out docs/results/diamonds_gap_dev.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import bench_tables as B  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score  # noqa: E402

LINES: list[str] = []


def say(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)


def scores(y: np.ndarray, p: np.ndarray) -> str:
    return (
        f"AUC {roc_auc_score(y, p, multi_class='ovr'):.4f} balanced accuracy "
        f"{balanced_accuracy_score(y, p.argmax(1)):.4f} log-loss {log_loss(y, p):.4f}"
    )


def plain(tr: Any, va: Any, ho: Any) -> None:
    import lightgbm as lgb

    yv, yh = np.asarray(va.y), np.asarray(ho.y)
    dtr = lgb.Dataset(tr.X, label=np.asarray(tr.y), free_raw_data=False)
    dva = lgb.Dataset(va.X, label=yv, reference=dtr)
    say("\n1. plain LightGBM on train, early stopping on validation where said; scored on the hold-out")
    for tag, leaves, lr, rounds, stop in (
        ("closedloop's choice: 16 leaves, lr 0.1, 160 rounds (the cap)", 16, 0.1, 160, False),
        ("16 leaves, lr 0.1, early stopping on val log-loss (50)", 16, 0.1, 3000, True),
        ("64 leaves, lr 0.1, 160 rounds", 64, 0.1, 160, False),
        ("64 leaves, lr 0.1, early stopping on val log-loss (50)", 64, 0.1, 3000, True),
        ("the reference's best on the test run: 75 leaves, lr 0.065, 188 rounds", 75, 0.065, 188, False),
    ):
        p = dict(objective="multiclass", num_class=5, num_leaves=leaves, learning_rate=lr, num_threads=1)
        p |= {"verbosity": -1, "seed": 0, "deterministic": True, "metric": "multi_logloss"}
        cbs = [lgb.early_stopping(50, verbose=False)] if stop else []
        b = lgb.train(p, dtr, num_boost_round=rounds, valid_sets=[dva], callbacks=cbs)
        it = b.best_iteration if stop else rounds
        say(f"  {tag}: {it} rounds; hold-out {scores(yh, b.predict(ho.X, num_iteration=it))}")
    say("\n2. where early stopping by epochs of 20 rounds (patience 3) stops, 16 and 64 leaves, lr 0.1")
    for leaves in (16, 64):
        p = dict(objective="multiclass", num_class=5, num_leaves=leaves, learning_rate=0.1, num_threads=1)
        b = lgb.train(p | {"verbosity": -1, "seed": 0, "deterministic": True}, dtr, num_boost_round=800)
        by = [b.predict(va.X, num_iteration=20 * e) for e in range(1, 41)]
        val = {
            "balanced accuracy": [balanced_accuracy_score(yv, q.argmax(1)) for q in by],
            "ROC AUC": [roc_auc_score(yv, q, multi_class="ovr") for q in by],
            "log-loss": [-log_loss(yv, q) for q in by],
        }
        for name, s in val.items():
            best, be, bad = -np.inf, 0, 0
            for e, v in enumerate(s, 1):
                best, be, bad = (v, e, 0) if v > best else (best, be, bad + 1)
                if bad >= 3:
                    break
            say(
                f"  {leaves} leaves, on validation {name}: best epoch {be} (stopped at {e}); hold-out "
                f"{scores(yh, b.predict(ho.X, num_iteration=20 * be))}"
            )


def library(data: Any, ho: Any, runs: Path) -> None:
    yh = np.asarray(ho.y)
    say("\n3. closedloop's tree family alone (family: lgbm; the bench's train settings), hold-out scores")
    for extend in (1, 4):
        B.TRAIN["tree_extend"] = extend
        t0 = time.perf_counter()
        res = B.closedloop_run(data, "lgbm", runs / f"extend{extend}")
        s = res.summary["stages"]["train"]
        tune = next(
            d["decision"] for d in s["decisions"] if d["phase"] == "tune" and "chose" in d["decision"]
        )
        say(
            f"  tree_extend {extend}: {scores(yh, res.artifact('model').predict_proba(ho.X))}; model "
            f"{json.dumps(s['model']['params'], sort_keys=True)}, {s['model']['epochs']} epochs; train stage "
            f"{s['seconds']:.1f} s (run {time.perf_counter() - t0:.0f} s)"
        )
        say(f"    tune: {tune[: tune.find('; against')] if '; against' in tune else tune}")
    del B.TRAIN["tree_extend"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    X, y, cats = B.diamonds()
    # the development part only: the test part is never read
    data, y_dev = B.development_bundle(X, y, cats, "diamonds", args.seed, "diamonds_dev")
    tr, va, ho = (data.splits[k] for k in ("train", "val", "test"))
    say(B.development_header("diag_diamonds_gap", args.seed, data, len(y_dev)))
    plain(tr, va, ho)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        library(data, ho, Path(tmp))
    if args.out:
        Path(args.out).write_text("\n".join(LINES) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
