"""Issue 19, session 19 (diagnosis H19): what holding out all validation rows costs the deployed model.

The estimate's Platt map is fitted on the held-out rows; 524 instead of 262 of them bring the unflagged
in-distribution windows within 0.03 from 96.99 to 98.58 % on development (rule E18's pool-size diagnosis). A
pipeline gets 524 with ``train.final_fit: train``: the final fit then trains on train only, not on train plus 262
validation rows. This script measures that cost, paired by training seed: the same removed images, the same
pipeline seed and preset as a #19 network in ``--nets`` (``holdout_fraction: 0.5``, the default), trained again with
``final_fit: train`` into ``--work``, both scored on the 2,500 removed (unseen, in-distribution) train images:
AUC, ACC and balanced accuracy at each model's own shipped threshold, and the log-loss of its served probabilities.
No test image is read. Nothing is chosen from it (docs/monitor_decisions.md, "What holding out all validation rows costs the
model (session 19, diagnosis H19)").

``--holdout-fraction F`` (session 22, measurement P22) trains the other network with ``holdout_fraction: F`` instead
of ``final_fit: train`` (``0.95``: 498 of PneumoniaMNIST's 524 validation rows held out, the rest in the final fit);
its workdirs are then ``--work``/t<seed>_h<F>.

Run: PYTHONPATH=src .venv/bin/python benchmarks/diag_holdout_cost.py --nets /tmp/nets --work /tmp/h19 --train-seed 13
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

REMOVE = 2500
RULE = (
    "diagnosis H19 (declared in docs/monitor_decisions.md before its runs): per training seed, the #19 network as shipped "
    "(final_fit train+val, holdout_fraction 0.5) against the same seed, removed images and preset trained with "
    "final_fit: train, both scored on the 2,500 unseen images (AUC, ACC and balanced accuracy at each model's "
    "shipped threshold, log-loss); differences printed per seed and on average; nothing is chosen"
)


def last_run(workdir: Path) -> Path | None:
    runs = sorted((workdir / "runs").glob("*/*/summary.json"))
    return runs[-1].parent if runs else None


def train_all_held_out(work: Path, seed: int, unseen_y: np.ndarray, fraction: float | None = None) -> Path:
    """The network of training ``seed`` refitted with ``final_fit: train`` (``fraction``: with that
    ``holdout_fraction`` instead), once per workdir."""
    from bench_heldout_monitor import run_pipeline, write_reduced_npz
    from bench_monitor_guarantee import npz_path

    wd = work / (f"t{seed}" if fraction is None else f"t{seed}_h{fraction:g}")
    run = last_run(wd)
    if run is not None:
        return run
    _, y = write_reduced_npz(npz_path(), wd / "data", REMOVE, seed)
    if not np.array_equal(y, unseen_y):
        raise SystemExit(f"t{seed}: the removed images differ from the shipped network's")
    other = {"final_fit": "train"} if fraction is None else {"holdout_fraction": fraction}
    res = run_pipeline(wd / "data", wd / "runs", "quick", {"budget_minutes": 30, **other}, False, seed=seed)
    return Path(res.run_dir)


def scores(run: Path, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The deployed model of ``run`` on the unseen images."""
    from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score

    from closedloop.models.trained import TrainedModel
    from closedloop.monitoring.profile import ProfileInfo, forward_all, model_input

    model = TrainedModel.load(next(run.glob("stages/*_train/artifacts/model")))
    info = ProfileInfo.model_construct(kind="images", input_shape=list(X.shape[1:]))
    _, p = forward_all(model, model_input(info, X))
    thr = float(model.threshold) if model.threshold is not None else 0.5
    pred = (p[:, 1] >= thr).astype(int)
    hp = model.info.get("hparams", {}) if model.info else {}
    return {
        "auc": float(roc_auc_score(y, p[:, 1])),
        "acc": float(np.mean(pred == y)),
        "bacc": float(balanced_accuracy_score(y, pred)),
        "logloss": float(log_loss(y, np.clip(p[:, 1], 1e-7, 1 - 1e-7), labels=[0, 1])),
        "threshold": thr,
        "fitted_on": (model.info or {}).get("fitted_on"),
        "hparams": {k: hp.get(k) for k in ("epochs", "batch_size", "lr", "weight_decay")},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", required=True, help="the #19 networks' workdirs t<seed> (read-only)")
    ap.add_argument(
        "--work", required=True, help="folder for the final_fit: train networks (outside the repo)"
    )
    ap.add_argument("--train-seeds", type=int, nargs="+", required=True)
    ap.add_argument(
        "--holdout-fraction",
        type=float,
        default=None,
        help="train the other network with this holdout_fraction, not final_fit: train (measurement P22)",
    )
    args = ap.parse_args()
    other = (
        "final_fit: train" if args.holdout_fraction is None else f"holdout_fraction {args.holdout_fraction:g}"
    )
    if args.holdout_fraction is None:
        print(RULE, flush=True)
    else:  # session 22: the same measurement, declared with measurement P22
        print(
            RULE.replace("diagnosis H19", "P22's cost").replace("final_fit: train,", f"{other},"), flush=True
        )
    diffs = []
    for seed in args.train_seeds:
        t0 = time.time()
        z = np.load(Path(args.nets) / f"t{seed}" / "unseen.npz")
        X, y = z["X"], z["y"].astype(int)
        shipped_run = last_run(Path(args.nets) / f"t{seed}")
        if shipped_run is None:
            raise SystemExit(f"t{seed}: no shipped network in {args.nets}")
        held_run = train_all_held_out(Path(args.work), seed, y, args.holdout_fraction)
        a, b = scores(shipped_run, X, y), scores(held_run, X, y)
        d = {k: b[k] - a[k] for k in ("auc", "acc", "bacc", "logloss")}
        diffs.append(d)
        for name, s in (("holdout 0.5 (shipped)", a), (other, b)):
            print(
                f"  t{seed} {name}: AUC {s['auc']:.4f}, ACC {s['acc']:.4f}, balanced accuracy {s['bacc']:.4f}, "
                f"log-loss {s['logloss']:.4f} (threshold {s['threshold']:.4f}; fitted on {s['fitted_on']}; "
                f"{s['hparams']})",
                flush=True,
            )
        print(
            f"[t{seed}] {other} minus shipped on {len(y)} unseen images: AUC {d['auc']:+.4f}, ACC "
            f"{d['acc']:+.4f}, balanced accuracy {d['bacc']:+.4f}, log-loss {d['logloss']:+.4f} ({time.time() - t0:.0f} s)",
            flush=True,
        )
    m = {k: float(np.mean([d[k] for d in diffs])) for k in diffs[0]}
    print(
        f"[mean over {len(diffs)} seeds] AUC {m['auc']:+.4f}, ACC {m['acc']:+.4f}, balanced accuracy {m['bacc']:+.4f}, "
        f"log-loss {m['logloss']:+.4f}"
    )


if __name__ == "__main__":
    main()
