"""Issue 19, rule W20's diagnosis (development trainings only): what a weak network's outputs do on the test split.

Per training (``--train-seeds``, workdirs ``--nets``/t<seed>): the model's calls on every unseen in-distribution
row and on the test split's ``--half``: prevalence, share called positive, accuracy, sensitivity, specificity, and
the share of rows called positive with a score between the threshold and 0.3 (barely-positive calls). With
``--windows N``: the direction of the label-free estimate's error on the first deployment's first N test windows
(F19's report protocol's windows, the monitor's own estimate against realized AUC and ACC).

Run: PYTHONPATH=src .venv/bin/python benchmarks/diag_monitor_weak_outputs.py --nets /tmp/nets --train-seeds 13 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def calls(p: np.ndarray, y: np.ndarray, thr: float) -> str:
    pred = p >= thr
    return (
        f"prevalence {y.mean():.3f}, called positive {pred.mean():.3f}, accuracy {(pred == y).mean():.3f}, "
        f"sensitivity {pred[y == 1].mean():.3f}, specificity {1 - pred[y == 0].mean():.3f}, "
        f"barely positive (threshold <= score < 0.3) {np.mean(pred & (p < 0.3)):.3f}"
    )


def train_reference(args: argparse.Namespace, seed: int) -> None:
    """Deployment ``--first-draw``'s protocol windows (2 in-distribution streams of 2,000, 10 test orders of 600,
    each window evaluated on its own) under each ``train_reference_rows``: windows whose domain flag is raised."""
    from tune_monitor_stream_look import deployment_draws

    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    for rows in args.train_reference:
        cfg = BuildMonitorProfileConfig(window_sizes=[200], train_reference_rows=rows)
        tr = deployment_draws(args, seed, cfg)
        dr = next(tr.draws)
        counts = {"null": [0, 0], "test": [0, 0]}
        plan = [("null", o, 1) for o in range(2)] + [("test", o, 2) for o in range(10)]
        for kind, o, tag in plan:
            if kind == "null":
                rows_ = dr.full.take(dr.srng.choice(dr.rest, 2000, replace=False))
            else:
                rows_ = dr.tsample.take(
                    np.concatenate([dr.srng.choice(len(tr.yt), 200, replace=False) for _ in range(3)])
                )
            for i, k in enumerate(range(0, len(rows_), 200)):
                r = dr.mon.evaluate(rows_.take(np.arange(k, k + 200)), seed=[dr.d, tag, o, i])
                counts[kind][0] += "domain" in r["estimate_flags"]
                counts[kind][1] += 1
        print(
            f"[t{seed} d{dr.d}] train_reference_rows {rows}: domain flag on {counts['test'][0]} of "
            f"{counts['test'][1]} test windows and {counts['null'][0]} of {counts['null'][1]} in-distribution "
            "windows (each window on its own, no stream evidence)",
            flush=True,
        )


def main() -> None:
    from tune_monitor_stream_look import deployment_draws

    from closedloop.monitoring.estimate import realized
    from closedloop.monitoring.low_positive import low_positive_check
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", required=True)
    ap.add_argument("--train-seeds", type=int, nargs="+", required=True)
    ap.add_argument("--half", choices=["dev", "report"], default="report")
    ap.add_argument("--first-draw", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=0, help="test windows of the first deployment to evaluate")
    ap.add_argument(
        "--reference-tail",
        type=int,
        default=0,
        help="deployments (from --first-draw): the low-positive cut of each one's held-out rows, their share below "
        "it and every unseen row's share below it",
    )
    ap.add_argument(
        "--train-reference",
        type=int,
        nargs="*",
        default=None,
        help="train_reference_rows settings to compare on --first-draw's protocol windows (e.g. 0 2000)",
    )
    args = ap.parse_args()
    args.remove, args.draws, args.pool, args.stop_at = 2500, 1, 262, None
    if args.train_reference is not None:
        for seed in args.train_seeds:
            train_reference(args, seed)
        return
    print(
        f"== development trainings {args.train_seeds}; test split's {args.half} half; deployment {args.first_draw} =="
    )
    for seed in args.train_seeds:
        tr = deployment_draws(args, seed, BuildMonitorProfileConfig(window_sizes=[200]))
        dr = next(tr.draws)
        pu, pt = dr.full.proba[:, 1], dr.tsample.proba[:, 1]
        print(f"[t{seed}] threshold {dr.thr:.3f}")
        print(f"[t{seed}] unseen rows ({len(pu)}): {calls(pu, tr.yu, dr.thr)}")
        print(f"[t{seed}] test rows ({len(pt)}): {calls(pt, tr.yt, dr.thr)}")
        for d in range(args.first_draw, args.first_draw + args.reference_tail):
            # the held-out rows of deployment d, drawn as tune_monitor_stream_look.deployment_draws draws them
            pool = np.sort(np.random.default_rng([19, d]).permutation(len(tr.yu))[: args.pool])
            c = low_positive_check(pu[pool], pu[:1], dr.thr, 0.1)
            assert c is not None
            rest = np.setdiff1d(np.arange(len(pu)), pool)
            share = np.mean((pu[rest] >= dr.thr) & (pu[rest] <= c.cut))
            print(
                f"[t{seed} d{d}] low-positive cut {c.cut:.4f}: held-out rows below it {c.reference_share:.3f}, the "
                f"other unseen rows {share:.3f}"
            )
        if not args.windows:
            continue
        srng = np.random.default_rng([19, dr.d, 2])
        for _ in range(2):  # the protocol's two in-distribution streams come first
            srng.choice(dr.rest, 2000, replace=False)
        gaps = []
        for o in range((args.windows + 2) // 3):
            for j in range(3):
                idx = srng.choice(len(tr.yt), 200, replace=False)
                r = dr.mon.evaluate(dr.tsample.take(idx), seed=[dr.d, 2, o, j])
                est = r["estimated"] or r["estimate_withheld"]
                real = realized(["auc", "acc"], tr.yt[idx], dr.tsample.proba[idx], "binary", dr.thr)
                gaps.append((est["auc"] - real["auc"], est["acc"] - real["acc"]))
        g = np.array(gaps[: args.windows])
        print(
            f"[t{seed}] {len(g)} test windows, estimate minus realized: AUC mean {g[:, 0].mean():+.3f} "
            f"(range {g[:, 0].min():+.3f} to {g[:, 0].max():+.3f}), ACC mean {g[:, 1].mean():+.3f} (range "
            f"{g[:, 1].min():+.3f} to {g[:, 1].max():+.3f})"
        )


if __name__ == "__main__":
    main()
