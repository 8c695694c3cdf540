"""Which review-queue strategy spends labels best? A flywheel simulation on real MedMNIST data.

Part 1, learning curves. For PneumoniaMNIST and BreastMNIST (28x28): start from a small random labeled
part of the train split; each round trains a quick model (logistic regression on 48 PCA components of
the pixels, PCA fit on the unlabeled train images), scores the unlabeled rest of train, queues N samples
with a strategy (through ``closedloop.monitoring.selection.select``, random control slice
included, priority computed as ``build_queue`` does: mean of the entropy and embedding-drift
percentiles), reveals their true labels and retrains. AUC is measured on the validation split, which
no model ever trains on. Every strategy starts from the same labeled set in a seed (paired design);
the area under the learning curve (mean AUC over the 1 + rounds points) is compared with random's
by a paired t interval and a paired bootstrap interval over the seeds.

Part 2, near-duplicates. A pool of 500 PneumoniaMNIST test images, 30 of them near-copies (pixel
noise) of the image the model is least sure about; a queue of 20 from each strategy; how many copies
it holds (5 seeds).

    python benchmarks/bench_flywheel.py [--seeds 5] [--rounds 5] [--out docs/results/flywheel.txt]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: one BLAS thread is faster here

from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from closedloop.monitoring.flywheel import embedding_drift, uncertainty  # noqa: E402
from closedloop.monitoring.selection import (  # noqa: E402
    CONTROL,
    DEFAULT_STRATEGY,
    STRATEGIES,
    Candidates,
    ReviewConfig,
    select,
)

DATA = Path(os.environ.get("MEDMNIST_DIR", "/work/shared/data/medmnist"))
SETUPS = {"pneumoniamnist": (50, 50), "breastmnist": (30, 30)}  # (initial labeled, queued per round)
PCA_DIMS = 48


def load(flag: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{flag}.npz") as z:
        return {k: z[k] for k in z.files}


def features(d: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    flat = {s: d[f"{s}_images"].reshape(len(d[f"{s}_images"]), -1) / 255.0 for s in ("train", "val", "test")}
    pca = PCA(PCA_DIMS, whiten=True, random_state=0).fit(flat["train"])  # label-free: the pool is unlabeled
    ys = {s: d[f"{s}_labels"].reshape(-1).astype(int) for s in ("train", "val", "test")}
    return (
        pca.transform(flat["train"]),
        ys["train"],
        pca.transform(flat["val"]),
        ys["val"],
        pca,
        flat["test"],
        ys["test"],
    )


def review(spec: str) -> ReviewConfig:
    """``name`` or ``name:key=value,key=value`` (a strategy with parameters, e.g. ``power:beta=2``)."""
    name, _, rest = spec.partition(":")
    params = {}
    for kv in filter(None, rest.split(",")):
        key, _, val = kv.partition("=")
        params[key] = val if val.isalpha() else float(val)
    return ReviewConfig(strategy=name, params=params)


def fit(X: np.ndarray, y: np.ndarray) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=0.1, max_iter=500).fit(X, y)


def priority(model: LogisticRegression, pool: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """As ``build_queue``: mean of the entropy percentile and the embedding-drift percentile."""
    ent, _ = uncertainty(model.predict_proba(pool), "binary")
    drift = embedding_drift(labeled.astype(np.float32), pool.astype(np.float32))
    rank = lambda a: (np.argsort(np.argsort(a, kind="stable"), kind="stable") + 1) / len(a)  # noqa: E731
    return 0.5 * rank(ent) + 0.5 * rank(drift)


def initial(y: np.ndarray, n0: int, rng: np.random.Generator) -> np.ndarray:
    while True:  # both classes present (a model needs them); otherwise uniform
        idx = rng.choice(len(y), n0, replace=False)
        if np.bincount(y[idx], minlength=2).min() >= 2:
            return idx


def curve(
    strategy: str, Xtr, ytr, Xva, yva, start: np.ndarray, n_per_round: int, rounds: int, seed: int
) -> list[float]:
    labeled = list(start)
    aucs = []
    for r in range(rounds + 1):
        model = fit(Xtr[labeled], ytr[labeled])
        aucs.append(float(roc_auc_score(yva, model.predict_proba(Xva)[:, 1])))
        if r == rounds:
            break
        pool = np.setdiff1d(np.arange(len(ytr)), labeled)
        cands = Candidates(priority(model, Xtr[pool], Xtr[labeled]), Xtr[pool], Xtr[labeled])
        chosen = select(cands, n_per_round, review(strategy), seed=seed * 1000 + r)
        labeled += pool[chosen.indices].tolist()  # reveal their labels
    return aucs


def paired(diff: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float, float, float]:
    from scipy import stats

    n = len(diff)
    m = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    t = stats.t.ppf(0.975, n - 1) if n > 1 else float("nan")
    boots = diff[rng.integers(0, n, size=(10000, n))].mean(axis=1)
    return m, m - t * se, m + t * se, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def learning_curves(args: argparse.Namespace, say) -> dict[str, dict[str, str]]:
    results: dict[str, dict[str, str]] = {}
    for flag in args.datasets:
        n0, n_round = SETUPS[flag]
        Xtr, ytr, Xva, yva, *_ = features(load(flag))
        say(
            f"\n== {flag}: {n0} labeled at start, +{n_round} per round x {args.rounds} rounds, {args.seeds} seeds; "
            f"pool = rest of train ({len(ytr)}); AUC on the validation split ({len(yva)} images, never trained on)"
        )
        curves: dict[str, np.ndarray] = {}
        t0 = time.perf_counter()
        for s in args.strategies:
            runs = []
            for seed in range(args.seeds):
                start = initial(ytr, n0, np.random.default_rng([seed, 1]))
                runs.append(curve(s, Xtr, ytr, Xva, yva, start, n_round, args.rounds, seed))
            curves[s] = np.array(runs)
        labels_at = [n0 + r * n_round for r in range(args.rounds + 1)]
        say(f"mean validation AUC by number of labels ({time.perf_counter() - t0:.0f} s)")
        say(f"  {'strategy':<21}" + "".join(f"{n:>8}" for n in labels_at) + "   AULC")
        for s, c in curves.items():
            say(f"  {s:<21}" + "".join(f"{v:8.4f}" for v in c.mean(axis=0)) + f" {c.mean():7.4f}")
        say("area under the curve (mean AUC over the points) minus random's, paired over seeds:")
        rng = np.random.default_rng(0)
        base = curves["random"].mean(axis=1)
        results[flag] = {}
        for s, c in curves.items():
            if s == "random":
                continue
            m, tlo, thi, blo, bhi = paired(c.mean(axis=1) - base, rng)
            verdict = "better" if tlo > 0 else "worse" if thi < 0 else "no significant difference"
            say(
                f"  {s:<21} {m:+.4f}  95% t [{tlo:+.4f}, {thi:+.4f}]  bootstrap [{blo:+.4f}, {bhi:+.4f}]  "
                f"wins {int((c.mean(axis=1) > base).sum())}/{len(base)}  -> {verdict}"
            )
            results[flag][s] = verdict
    return results


def duplicates(args: argparse.Namespace, say) -> dict[str, list[int]]:
    flag = "pneumoniamnist"
    d = load(flag)
    Xtr, ytr, _, _, pca, test_flat, _ = features(d)
    say(
        "\n== near-duplicates: pool of 500 PneumoniaMNIST test images, 30 of them near-copies (the original + 29 with brightness +-5% and noise sd 4/255) "
        "of an uncertain image (top 10% entropy, highest priority among those); queue of 20"
    )
    counts: dict[str, list[int]] = {s: [] for s in args.strategies}
    from_control = dict.fromkeys(args.strategies, 0)
    for seed in range(args.seeds):
        rng = np.random.default_rng([seed, 2])
        lab = initial(ytr, 200, rng)
        model = fit(Xtr[lab], ytr[lab])
        base = test_flat[rng.choice(len(test_flat), 471, replace=False)]
        emb0 = pca.transform(base)
        ent, _ = uncertainty(model.predict_proba(emb0), "binary")
        prio = priority(model, emb0, Xtr[lab])
        # an uncertain image (top 10% entropy) that the queue ranks highest among those
        unsure = np.flatnonzero(ent >= np.quantile(ent, 0.9))
        src_i = int(unsure[np.argmax(prio[unsure])])
        src = base[src_i]
        # 29 near-copies: re-exposed (brightness +-5%) and re-digitized (noise sd 4/255)
        gain = rng.uniform(0.95, 1.05, size=(29, 1))
        copies = np.clip(src[None, :] * gain + rng.normal(0, 4 / 255, size=(29, src.size)), 0, 1)
        pool_flat = np.concatenate([base, copies])
        is_copy = np.zeros(len(pool_flat), dtype=bool)
        is_copy[471:] = True
        is_copy[src_i] = True  # the original is one of the 30
        emb = pca.transform(pool_flat)
        cands = Candidates(priority(model, emb, Xtr[lab]), emb, Xtr[lab])
        for s in args.strategies:
            chosen = select(cands, 20, review(s), seed=seed)
            counts[s].append(int(is_copy[chosen.indices].sum()))
            from_control[s] += int(is_copy[chosen.indices[np.array(chosen.selected_by) == CONTROL]].sum())
    for s, c in counts.items():
        say(
            f"  {s:<21} copies in the queue of 20 per seed {c}: mean {np.mean(c):.1f}, max {max(c)} "
            f"({from_control[s]} of the {sum(c)} drawn by the random control slice)"
        )
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--datasets", nargs="+", default=list(SETUPS))
    ap.add_argument("--strategies", nargs="+", default=[*STRATEGIES.names(), "power:min_distance=0"])
    ap.add_argument("--out", help="also write the printed lines here (first line: the command and date)")
    args = ap.parse_args()
    if "random" not in args.strategies:
        args.strategies.append("random")
    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    say(f"$ python {' '.join(sys.argv)}   # {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    say(
        f"strategies: {', '.join(args.strategies)}; default {DEFAULT_STRATEGY!r}; every strategy keeps a "
        f"random control slice of {ReviewConfig().control_fraction:.0%} (selected_by={CONTROL!r})"
    )
    t0 = time.perf_counter()
    res = learning_curves(args, say)
    dup = duplicates(args, say)
    say("\n== verdict (paired 95% t interval of the area under the learning curve, strategy - random)")
    for s in args.strategies:
        if s != "random":
            per = "; ".join(f"{f}: {res[f][s]}" for f in res)
            say(f"  {s:<21} {per}; near-copies in a queue of 20: max {max(dup[s])}")
    better = [s for s in args.strategies if s != "random" and all(res[f][s] == "better" for f in res)]
    say(
        "  significantly better than random on every dataset: "
        + (", ".join(better) if better else "NONE: no strategy beats random significantly on all datasets")
    )
    worse = [f for f in res if res[f].get(DEFAULT_STRATEGY) == "worse"]
    say(
        f"  default {DEFAULT_STRATEGY!r}: "
        + (
            f"significantly WORSE than random on {worse}"
            if worse
            else "not significantly worse than random anywhere"
        )
        + f"; near-copies max {max(dup[DEFAULT_STRATEGY])} of 20 (target <= 2)"
    )
    say(f"total {time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
