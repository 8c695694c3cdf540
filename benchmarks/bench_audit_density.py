"""Near duplicates relative to each dataset's own density (issue #25, item 4).

For image sets (digits, PneumoniaMNIST, BreastMNIST) and tables (scikit-learn's breast_cancer and
diabetes, a synthetic table): the train/test near-duplicate finding on the data as released (must not
be a false overlap error), and with planted near-copies (5% of test: copies of random train samples
with small noise; 3 seeds): recall of the planted copies among the pairs the audit marks as the excess,
and the finding's severity. Exact duplicates are counted apart (they stay exact). The pooled look (val and test together against
train's own density) is printed for the data as released: a warning about the split, never an error.

Run: .venv/bin/python benchmarks/bench_audit_density.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_audit_common import digits_bundle, run_audit  # noqa: E402
from bench_audit_planted import synthetic_table  # noqa: E402

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split  # noqa: E402

MEDMNIST = Path("/work/shared/data/medmnist")
for cand in (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist", MEDMNIST):
    if cand.is_dir():
        MEDMNIST = cand
        break
SEEDS = (1, 2, 3)


def medmnist(flag: str) -> DatasetBundle:
    from closedloop.data.sources.medmnist_npz import MedMNISTSource

    return MedMNISTSource({"flag": flag, "root": str(MEDMNIST), "download": False}).load(0)


def sklearn_table(name: str, seed: int = 0) -> DatasetBundle:
    from sklearn import datasets

    d = getattr(datasets, f"load_{name}")(as_frame=True)
    X, y = d.data.reset_index(drop=True), d.target.to_numpy()
    idx = np.random.default_rng(seed).permutation(len(y))
    n = len(y)
    parts = idx[: n * 6 // 10], idx[n * 6 // 10 : n * 8 // 10], idx[n * 8 // 10 :]
    regression = name == "diabetes"
    meta = DatasetMeta(
        name=name,
        source="sklearn",
        kind="table",
        label_names=[] if regression else [str(c) for c in sorted(set(y))],
        feature_names=list(X.columns),
    )
    splits = {
        k: Split(X=X.iloc[p].reset_index(drop=True), y=y[p].astype(float if regression else int))
        for k, p in zip(("train", "val", "test"), parts, strict=True)
    }
    return DatasetBundle(meta=meta, splits=splits)


def plant(b: DatasetBundle, seed: int) -> tuple[DatasetBundle, set[int]]:
    """Append copies of 5% (of test's size) random train samples, with small noise, to test."""
    rng = np.random.default_rng(seed)
    te, tr = b.splits["test"], b.train
    n = max(2, round(0.05 * len(te)))
    src = rng.choice(len(tr), n, replace=False)
    if isinstance(tr.X, pd.DataFrame):
        c = tr.X.iloc[src].reset_index(drop=True).copy()
        for col in c.columns:
            if pd.api.types.is_float_dtype(c[col]):
                c[col] = c[col] + rng.normal(0, 0.01 * float(tr.X[col].std() or 1.0), n)
        X = pd.concat([te.X, c], ignore_index=True)
    else:
        noisy = tr.X[src].astype(np.float32) + rng.normal(0, 3.0, tr.X[src].shape)
        X = np.concatenate([te.X, np.clip(np.round(noisy), 0, 255).astype(np.uint8)])
    test = Split(X=X, y=np.concatenate([te.y, tr.y[src]]))
    truth = set(range(len(te), len(te) + n))
    return DatasetBundle(meta=b.meta, splits={"train": tr, "val": b.val, "test": test}), truth


def near_line(out) -> tuple[str, dict, int]:  # type: ignore[no-untyped-def]
    res = out.audit.results["duplicates"]
    nd = res["metrics"]["near_density"].get("train-test", {})
    sev = [
        f["severity"]
        for f in out.audit.findings
        if f["check"] == "duplicates"
        and f["message"].startswith("train/test")
        and "exact" not in f["message"]
    ]
    exact = [f for f in out.audit.findings if f["check"] == "duplicates" and "exact copies" in f["message"]]
    n_exact = sum(
        f["evidence"].get("test_samples", 0) for f in exact if f["message"].startswith("train/test")
    )
    return (sev[0] if sev else "none"), nd, n_exact


def held_out_line(out) -> str:  # type: ignore[no-untyped-def]
    """The pooled look: val+test together against train's own density (a warning about the split)."""
    nd = out.audit.results["duplicates"]["metrics"]["near_density"].get("train-held-out", {})
    sev = [f["severity"] for f in out.audit.findings if f["message"].startswith("train/held-out")]
    return (
        f"val+test pooled: finding {sev[0] if sev else 'none'} (held-out close "
        f"{nd.get('held-out_close_rate')}, train within {nd.get('train_within_rate')}, excess "
        f"{nd.get('excess')}, p {nd.get('p_value')})"
    )


def main() -> None:
    sets = [
        ("digits", digits_bundle),
        ("pneumoniamnist", lambda: medmnist("pneumoniamnist")),
        ("breastmnist", lambda: medmnist("breastmnist")),
        ("breast_cancer (table)", lambda: sklearn_table("breast_cancer")),
        ("diabetes (table)", lambda: sklearn_table("diabetes")),
        ("synthetic (table)", synthetic_table),
    ]
    print(
        "near duplicates relative to the data's own density; planted: 5% of test, train copies + small noise"
    )
    print("(images: Gaussian sd 3 on 0..255; tables: sd 1% of each float column's sd), seeds", SEEDS)
    all_recall = []
    for name, load in sets:
        b = load()
        t0 = time.perf_counter()
        out, _, _ = run_audit(b, checks=["duplicates"], stop_on=[])
        sev, nd, n_exact = near_line(out)
        dt = time.perf_counter() - t0
        print(
            f"{name}: as released: near train/test finding {sev} (test close {nd.get('test_close_rate')}, "
            f"train within {nd.get('train_within_rate')}, excess {nd.get('excess')}, p {nd.get('p_value')}); "
            f"exact train/test copies {n_exact} ({dt:.1f}s)"
        )
        print(f"   {held_out_line(out)}")
        rec, sevs = [], []
        for seed in SEEDS:
            planted, truth = plant(b, seed)
            out, _, _ = run_audit(planted, checks=["duplicates"], stop_on=[])
            d = out.audit.duplicates
            flagged = set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b)
            rec.append(len(flagged & truth) / len(truth))
            sevs.append(near_line(out)[0])
        all_recall += rec
        print(
            f"   planted {len(truth)}: recall among excess pairs {np.mean(rec):.3f} "
            f"(per seed {[round(r, 3) for r in rec]}); severity {sevs}"
        )
    print(f"mean recall over all sets and seeds: {np.mean(all_recall):.3f}; min {np.min(all_recall):.3f}")
    big = synthetic_table(n=50000)
    t0 = time.perf_counter()
    out, _, _ = run_audit(big, checks=["duplicates"], stop_on=[])
    sev, nd, _ = near_line(out)
    print(
        f"50,000-row synthetic table (30,000 train): duplicates check {time.perf_counter() - t0:.1f}s, "
        f"near train/test finding {sev} (shared machine)"
    )


if __name__ == "__main__":
    main()
