"""Planted problems: duplicates across splits (exact, noisy, brightness-shifted), a leaky column, a
shifted test set; and clean data (digits, a synthetic table) that must stay at `info`.

Run: .venv/bin/python benchmarks/bench_audit_planted.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_audit_common import digits_bundle, pneumonia_bundle, run_audit  # noqa: E402

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split  # noqa: E402

CHECKS_FAST = ["duplicates"]


def plant_duplicates(b: DatasetBundle, n_each: int, seed: int) -> tuple[DatasetBundle, set[tuple[int, int]]]:
    """Append copies of random train images to test: exact, +Gaussian noise (sd 8), brightness x1.1+20."""
    rng = np.random.default_rng(seed)
    te = b.splits["test"]
    src = rng.choice(len(b.train), 3 * n_each, replace=False)
    copies = []
    for k, i in enumerate(src):
        x = b.train.X[i].astype(np.float32)
        if k < n_each:
            c = x
        elif k < 2 * n_each:
            c = x + rng.normal(0, 8, x.shape)
        else:
            c = x * 1.1 + 20
        copies.append(np.clip(np.round(c), 0, 255).astype(np.uint8))
    X = np.concatenate([te.X, np.stack(copies)])
    y = np.concatenate([te.y, b.train.y[src]])
    truth = {(int(i), len(te) + k) for k, i in enumerate(src)}
    return DatasetBundle(meta=b.meta, splits={"train": b.train, "val": b.val, "test": Split(X, y)}), truth


def dup_scores(name: str, b: DatasetBundle) -> None:
    out, dt, _ = run_audit(b, checks=CHECKS_FAST, stop_on=[])
    base = out.audit.duplicates
    base_tt = base[(base.split_a == "train") & (base.split_b == "test")]
    planted, truth = plant_duplicates(b, 20, 1)
    out2, _, _ = run_audit(planted, checks=CHECKS_FAST, stop_on=[])
    d = out2.audit.duplicates
    tt = d[(d.split_a == "train") & (d.split_b == "test")]
    found = {(int(a), int(c)) for a, c in zip(tt.index_a, tt.index_b, strict=True)}
    kinds = ["exact", "noisy", "brightness"]
    per = {}
    for k, kind in enumerate(kinds):
        part = {
            t for t in truth if len(b.splits["test"]) + 20 * k <= t[1] < len(b.splits["test"]) + 20 * (k + 1)
        }
        per[kind] = len(part & found) / len(part)
    recall = len(truth & found) / len(truth)
    extra = len({f for f in found if f[1] >= len(b.splits["test"])} - truth)
    sev = sorted(
        {
            f["severity"]
            for f in out2.audit.findings
            if f["check"] == "duplicates" and "test overlap" in f["message"]
        }
    )
    print(
        f"{name}: train/test pairs on clean data: {len(base_tt)} (false alarms); planted 60 -> recall {recall:.3f} "
        f"(exact {per['exact']:.2f}, noisy {per['noisy']:.2f}, brightness {per['brightness']:.2f}); wrong pairings "
        f"{extra}; finding severity {sev}"
    )


def synthetic_table(
    seed: int = 0, leaky: bool = False, shifted: bool = False, n: int = 3000
) -> DatasetBundle:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=12, n_informative=5, random_state=seed)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    df["site"] = pd.Categorical(np.random.default_rng(seed).choice(["a", "b", "c"], n))
    if leaky:  # recorded after the diagnosis: nearly the label
        df["took_antibiotics"] = (y ^ (np.random.default_rng(seed).random(n) < 0.01)).astype(float)
    idx = np.random.default_rng(seed).permutation(n)
    tr, va, te = idx[: n * 6 // 10], idx[n * 6 // 10 : n * 8 // 10], idx[n * 8 // 10 :]
    splits = {
        k: Split(X=df.iloc[i].reset_index(drop=True), y=y[i])
        for k, i in (("train", tr), ("val", va), ("test", te))
    }
    if shifted:
        Xt = splits["test"].X.copy()
        Xt["f0"] = Xt["f0"] + 1.0
        Xt["f3"] = Xt["f3"] * 1.5
        splits["test"] = Split(X=Xt, y=splits["test"].y)
    meta = DatasetMeta(
        name="synthetic",
        source="synthetic",
        kind="table",
        label_names=["0", "1"],
        feature_names=list(df.columns),
        categorical_features=["site"],
    )
    return DatasetBundle(meta=meta, splits=splits)


def shifted_images(b: DatasetBundle) -> DatasetBundle:
    te = b.splits["test"]
    X = np.clip(te.X.astype(np.float32) * 0.8 + 30, 0, 255).astype(np.uint8)  # other scanner: washed out
    return DatasetBundle(meta=b.meta, splits={"train": b.train, "val": b.val, "test": Split(X, te.y)})


def non_info(out) -> list[str]:
    return [
        f"{f['severity']} [{f['check']}] {f['message'][:90]}"
        for f in out.audit.findings
        if f["severity"] != "info"
    ]


def main() -> None:
    digits = digits_bundle()
    print(
        "== planted duplicates (20 exact + 20 noisy sd 8 + 20 brightness x1.1+20 copies of train images added to test)"
    )
    dup_scores("digits", digits)
    dup_scores("pneumoniamnist", pneumonia_bundle())
    print("== planted leaky column (synthetic table, 'took_antibiotics' = label with 1% flips)")
    out, _, _ = run_audit(synthetic_table(leaky=True), checks=["target_leakage"], stop_on=[])
    print(
        "  ",
        [f"{f['severity']}: {f['message'][:80]}" for f in out.audit.findings if f["severity"] == "error"],
    )
    print("== planted leaky pixel marker (digits, burned-in 2x2 corner patch with intensity 20 * class)")
    b = digits_bundle()
    X = b.train.X.copy()
    X[:, :2, :2, 0] = (20 * b.train.y)[:, None, None]
    bl = DatasetBundle(
        meta=b.meta, splits={"train": Split(X, b.train.y), "val": b.val, "test": b.splits["test"]}
    )
    out, _, _ = run_audit(bl, checks=["target_leakage"], stop_on=[])
    print(
        "  ",
        [f"{f['severity']}: {f['message'][:60]}" for f in out.audit.findings if f["severity"] == "error"][:2],
    )
    print("== planted shifted test set")
    out, _, _ = run_audit(synthetic_table(shifted=True), checks=["split_shift"], stop_on=[])
    print("   table (f0 + 1 sd, f3 x 1.5):", out.audit.results["split_shift"]["metrics"], non_info(out))
    out, _, _ = run_audit(shifted_images(digits), checks=["split_shift"], stop_on=[])
    print(
        "   digits (test x0.8 + 30):",
        out.audit.results["split_shift"]["metrics"],
        [m[:60] for m in non_info(out)],
    )
    print("== clean data, all checks: findings above info")
    for name, data in (("digits", digits), ("synthetic table", synthetic_table())):
        out, dt, _ = run_audit(data, stop_on=[])
        print(
            f"   {name}: {len(non_info(out))} warnings/errors {non_info(out)}; failed checks {out.audit.failed} ({dt:.1f}s)"
        )


if __name__ == "__main__":
    main()
