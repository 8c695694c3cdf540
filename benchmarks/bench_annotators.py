"""Simulated annotators on PneumoniaMNIST validation labels: consensus (CROWDLAB) vs majority vote vs
the best single annotator, annotator ranking, and the coverage of the kappa intervals.

Setup: the true labels are PneumoniaMNIST's validation labels (524 images; ``--data breastmnist``
repeats it on BreastMNIST's 78, a run the default method was not chosen on). Three simulated
annotators with overall accuracies 0.95 / 0.85 / 0.70 and class-dependent confusion (errors on
'normal' 1.6x as frequent as the average, on 'pneumonia' correspondingly rarer, so each annotator's
prior-weighted accuracy is the declared one). Items are assigned with ``closedloop``'s own
``assign_items``: 30% of the items to all three annotators, the rest to one each (balanced). The
model's out-of-sample probabilities come from a logistic regression fitted on the *train* split (it
never saw a validation image). Per seed: CROWDLAB consensus (``closedloop.labeling.consensus`` with the
probabilities, its collapse guard on), Dawid-Skene with the probabilities as each item's prior
(closedloop's default) and majority vote (without), accuracy against the truth on every item and on the
overlap, the paired difference with a 95% bootstrap interval; the best annotator's accuracy on their
own items (Wilson interval); whether CROWDLAB's annotator quality ranks the three in their true order.

Kappa coverage: independent replications of the overlap (157 items drawn from the validation labels,
the same three annotators), Cohen's kappa per pair with ``stats.agreement.kappa_with_ci``'s 95%
bootstrap interval, checked against the population kappa implied by the simulated confusion matrices.

A weaker model (``--train-n 60``: fitted on 60 train images) shows what the consensus gains from the
annotators rather than from the model.

Run: ``.venv/bin/python benchmarks/bench_annotators.py [--seeds 5] [--reps 200] [--train-n 60]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [ROOT.parent / "shared", ROOT / "shared", Path("/work/shared")]
ACCURACIES = (0.95, 0.85, 0.70)
NAMES = ("ann_95", "ann_85", "ann_70")
NORMAL_FACTOR = 1.6


def data_path(name: str) -> Path:
    for c in CANDIDATES:
        p = c / "data" / "medmnist" / f"{name}.npz"
        if p.is_file():
            return p
    sys.exit(f"{name}.npz not found under shared/data/medmnist (see its SOURCES.md)")


def confusions(prior: np.ndarray) -> list[np.ndarray]:
    """Row-stochastic C[true, given] per annotator: class 0 ('normal') errors NORMAL_FACTOR x the mean."""
    w1 = (1 - NORMAL_FACTOR * prior[0]) / prior[1]
    out = []
    for a in ACCURACIES:
        e0, e1 = (1 - a) * NORMAL_FACTOR, (1 - a) * w1
        out.append(np.array([[1 - e0, e0], [e1, 1 - e1]]))
    return out


def simulate(y: np.ndarray, C: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(y)) < C[y, 1 - y]
    return np.where(flip, 1 - y, y)


def paired_diff(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 2000
) -> tuple[float, float, float]:
    d = a.astype(float) - b.astype(float)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    return float(d.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def run_model(args, n_fit, Xtr, ytr, Xva, y, prior, Cs) -> str:  # noqa: ANN001 - a benchmark's plumbing
    """Fit the model on ``n_fit`` train images and run the seeds; returns the summary line."""
    from sklearn.linear_model import LogisticRegression

    from closedloop.labeling.assign import assign_items
    from closedloop.labeling.consensus import consensus
    from closedloop.labeling.human import wilson

    keep = np.random.default_rng(0).permutation(len(ytr))[:n_fit]
    clf = LogisticRegression(C=0.01, max_iter=300).fit(Xtr[keep].reshape(n_fit, -1) / 255.0, ytr[keep])
    P = clf.predict_proba(Xva.reshape(len(Xva), -1) / 255.0)  # out of sample: fitted on train only
    model_acc = float(np.mean(P.argmax(1) == y))
    print(f"\nmodel: logistic regression on {n_fit} train images, val accuracy {model_acc:.3f}")

    ids = [str(i) for i in range(len(y))]
    rows = []
    ds_rows = []
    ranking_ok = 0
    fallbacks = 0
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        assignment = assign_items(ids, list(NAMES), args.overlap, seed=seed)
        L = np.full((len(y), 3), -1, dtype=np.int64)
        for j, (name, C) in enumerate(zip(NAMES, Cs, strict=True)):
            mine = np.array([int(i) for i, who in assignment.items() if name in who])
            L[mine, j] = simulate(y[mine], C, rng)
        shared = (L >= 0).sum(axis=1) > 1
        crowd = consensus(L, 2, P)
        fallbacks += bool(crowd.note)
        mv = consensus(L, 2, None)
        ds = consensus(L, 2, P, method="dawid_skene")
        ok_d = ds.labels == y
        d_ds = paired_diff(ok_d, mv.labels == y, rng)
        ds_rank = list(np.argsort(-ds.annotator_quality)) == [0, 1, 2]
        ds_rows.append((ok_d.mean(), d_ds[0], d_ds[1] > 0, ds_rank))
        kept = ds.agreement > 0  # what --export uses: a label some person gave
        ok_c, ok_m = crowd.labels == y, mv.labels == y
        d_all = paired_diff(ok_c, ok_m, rng)
        d_ov = paired_diff(ok_c[shared], ok_m[shared], rng)
        best = L[:, 0] >= 0
        k = int((L[best, 0] == y[best]).sum())
        order_ok = list(np.argsort(-crowd.annotator_quality)) == [0, 1, 2]
        ranking_ok += order_ok
        rows.append((ok_c.mean(), ok_m.mean(), k / best.sum(), d_all[0]))
        print(
            f"seed {seed}: all {len(y)} items: consensus {ok_c.mean():.3f}, majority vote {ok_m.mean():.3f}, "
            f"difference {d_all[0]:+.3f} [{d_all[1]:+.3f}, {d_all[2]:+.3f}]; overlap {int(shared.sum())} items: "
            f"consensus {ok_c[shared].mean():.3f}, majority vote {ok_m[shared].mean():.3f}, "
            f"difference {d_ov[0]:+.3f} [{d_ov[1]:+.3f}, {d_ov[2]:+.3f}]"
        )
        lo, hi = wilson(k, int(best.sum()))
        q = ", ".join(f"{n} {v:.3f}" for n, v in zip(NAMES, crowd.annotator_quality, strict=True))
        print(
            f"        best single annotator (ann_95) on its {int(best.sum())} items {k / best.sum():.3f} "
            f"[{lo:.3f}, {hi:.3f}]; annotator quality: {q}; ranking correct: {order_ok}"
            + (f"; {crowd.method} (CROWDLAB annotator weights collapsed)" if crowd.note else "")
        )
        print(
            f"        Dawid-Skene with the model as prior: {ok_d.mean():.3f}, minus majority vote {d_ds[0]:+.3f} "
            f"[{d_ds[1]:+.3f}, {d_ds[2]:+.3f}]; its annotator ranking correct: {ds_rank}; "
            f"{int((~kept).sum())} items labeled by the model alone (to adjudication), on the other "
            f"{int(kept.sum())} {ok_d[kept].mean():.3f}"
        )
    R = np.array(rows)
    D = np.array(ds_rows, dtype=float)
    print(
        f"\nover {args.seeds} seeds (mean, sd): consensus {R[:, 0].mean():.3f} ({R[:, 0].std(ddof=1):.3f}), "
        f"majority vote {R[:, 1].mean():.3f} ({R[:, 1].std(ddof=1):.3f}), best single annotator on its items "
        f"{R[:, 2].mean():.3f} ({R[:, 2].std(ddof=1):.3f}); consensus - majority vote {R[:, 3].mean():+.3f} "
        f"(sd {R[:, 3].std(ddof=1):.3f}), consensus >= majority vote in {int((R[:, 3] >= 0).sum())} of {args.seeds}"
    )
    print(
        f"annotator-quality ranking correct in {ranking_ok} of {args.seeds} seeds with CROWDLAB, "
        f"{int(D[:, 3].sum())} of {args.seeds} with Dawid-Skene (target >= 4)"
    )
    return (
        f"model acc {model_acc:.3f}: consensus {R[:, 0].mean():.3f}, majority vote {R[:, 1].mean():.3f}, "
        f"difference {R[:, 3].mean():+.3f} (sd {R[:, 3].std(ddof=1):.3f}), consensus >= majority vote in "
        f"{int((R[:, 3] >= 0).sum())}/{args.seeds} seeds, ranking correct {ranking_ok}/{args.seeds}, "
        f"fell back to majority vote in {fallbacks}/{args.seeds}; Dawid-Skene {D[:, 0].mean():.3f}, minus majority "
        f"vote {D[:, 1].mean():+.3f}, interval above 0 in {int(D[:, 2].sum())}/{args.seeds}, ranking correct "
        f"{int(D[:, 3].sum())}/{args.seeds}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--data", default="pneumoniamnist", help="MedMNIST file (breastmnist: the confirmation run)"
    )
    ap.add_argument("--overlap", type=float, default=0.3)
    ap.add_argument("--reps", type=int, default=200, help="replications for the kappa coverage")
    ap.add_argument(
        "--train-n",
        default="0,500,200",
        help="models fitted on this many train images (0: all), comma-separated",
    )
    args = ap.parse_args()

    from closedloop.stats.agreement import kappa_with_ci, population_kappa

    t0 = time.perf_counter()
    with np.load(data_path(args.data)) as z:
        Xtr, ytr = z["train_images"], z["train_labels"].ravel().astype(int)
        Xva, y = z["val_images"], z["val_labels"].ravel().astype(int)
    prior = np.bincount(y, minlength=2) / len(y)
    Cs = confusions(prior)
    print(f"{args.data} val: {len(y)} items, class prior {prior[0]:.3f} / {prior[1]:.3f} (class 0 / class 1)")
    for name, C in zip(NAMES, Cs, strict=True):
        acc = float(prior @ np.diag(C))
        print(f"  {name}: recall class 0 {C[0, 0]:.3f}, class 1 {C[1, 1]:.3f}, overall accuracy {acc:.3f}")
    print(f"assignment: {args.overlap:.0%} of items to all three annotators, the rest to one each")
    summary = []
    for n_fit in [int(v) or len(ytr) for v in args.train_n.split(",")]:
        summary.append(run_model(args, n_fit, Xtr, ytr, Xva, y, prior, Cs))
    print(
        "\nsummary (mean over seeds; consensus = CROWDLAB (cleanlab) with closedloop's collapse guard; "
        "Dawid-Skene with the model as prior = closedloop's default):"
    )
    for line in summary:
        print("  " + line)

    n_ov = int(round(args.overlap * len(y)))
    pairs = [(0, 1), (0, 2), (1, 2)]
    truth = {p: population_kappa(prior, Cs[p[0]], Cs[p[1]]) for p in pairs}
    cover = {p: 0 for p in pairs}
    rng = np.random.default_rng(12345)
    for r in range(args.reps):
        items = rng.choice(len(y), n_ov, replace=False)
        labs = [simulate(y[items], C, rng) for C in Cs]
        for p in pairs:
            est = kappa_with_ci(labs[p[0]], labs[p[1]], 2, n_boot=500, seed=r)
            cover[p] += est.ci95[0] <= truth[p] <= est.ci95[1]
    if not args.reps:
        return
    print(f"\nkappa interval coverage over {args.reps} replications of a {n_ov}-item overlap (nominal 0.95):")
    for p in pairs:
        print(
            f"  {NAMES[p[0]]} vs {NAMES[p[1]]}: population kappa {truth[p]:.3f}, 95% bootstrap interval covers it "
            f"in {cover[p] / args.reps:.3f} of replications"
        )
    print(f"\nwall time {time.perf_counter() - t0:.1f} s (shared 2-core machine)")


if __name__ == "__main__":
    main()
