"""Are closedloop's tree candidates worse, or only ranked worse (issue #25, MedExp's gap, session 27)? On
DEVELOPMENT data only: the split seed's development part split again (``bench_tables.development_bundle``:
train / validation / a development hold-out); the test part is never read.

Per (table, seed, re-split): closedloop's tree family alone (bench_tables' train settings, the split marked
``seeded_stratified`` as a user's CSV is, so small tables take the k-fold protocol). Then every tree
configuration its validation ledger holds (the ladder's rungs, each tuning trial, pruned ones included) is
scored by ONE common yardstick, the reference's protocol: plain LightGBM, stratified 5-fold CV over train +
validation (the same folds for every configuration), per-round early stopping (patience 50, up to 2,000
rounds), the best round's mean-of-folds ROC AUC. Beside them, on the same folds: the tuned plain LightGBM's
trials (``bench_tables.tuned_lightgbm`` with a fixed trial count) and two fixed configurations a practitioner
starts from (LightGBM's defaults; the same at learning rate 0.02). Printed: each configuration's validation
score (closedloop's ranking) and CV AUC; which one the tune phase and the cross-validation chose; the best CV
AUC among closedloop's candidates against the reference's best. Development hold-out AUC of the shipped model
and of the reference's refit too.

Run: .venv/bin/python benchmarks/diag_tree_trials_cv.py [--tables medexp] [--seeds 12 13] [--resplits 106]
     [--ref-trials 10] [--out FILE]
"""

from __future__ import annotations

import argparse
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
import numpy as np  # noqa: E402

UNREGULARIZED = {
    "num_leaves": 31,
    "max_depth": -1,
    "learning_rate": 0.1,
    "min_child_samples": 1,
    "reg_lambda": 0.0,
    "reg_alpha": 0.0,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
}
"""closedloop's tree family's own defaults (``build_lgbm``): a configuration's params override these."""

FIXED = {
    "LightGBM defaults": {"num_leaves": 31, "learning_rate": 0.1, "min_child_samples": 20},
    "LightGBM defaults at learning rate 0.02": {
        "num_leaves": 31,
        "learning_rate": 0.02,
        "min_child_samples": 20,
    },
}


def lgb_full(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": "auc",
        "num_threads": 1,
        "verbosity": -1,
        "seed": 0,
        **params,
        "bagging_freq": 1 if params.get("bagging_fraction", 1.0) < 1 else 0,
    }


def dataset(x: np.ndarray, y: np.ndarray, cats: list[int]) -> Any:
    import lightgbm as lgb

    return lgb.Dataset(
        x, label=y, categorical_feature=cats or "auto", params={"verbosity": -1, "feature_pre_filter": False}
    )


def cv_auc(x: np.ndarray, y: np.ndarray, cats: list[int], params: dict[str, Any]) -> tuple[float, int]:
    """Mean-of-folds ROC AUC at the best round, stratified 5-fold (seed 0: the same folds for every call)."""
    import lightgbm as lgb

    p, ds = lgb_full(params), dataset(x, y, cats)
    cv = lgb.cv(
        p,
        ds,
        num_boost_round=2000,
        nfold=5,
        stratified=True,
        seed=0,
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    s = np.asarray(cv["valid auc-mean"])
    return float(s.max()), int(s.argmax()) + 1


def ledger_configs(res: Any) -> list[tuple[str, float, dict[str, Any]]]:
    """(description, validation score, LightGBM params) of every tree configuration in the ledger."""
    out = []
    for line in (res.run_dir / "validation_ledger.jsonl").read_text().splitlines():
        e = json.loads(line)
        params = e.get("params", {})
        if e.get("stage") != "train" or params.get("family", "lgbm") != "lgbm" or "model" not in params:
            continue
        if e["description"].startswith("cross-validation") or "default model" in e["description"]:
            continue
        metric = next(v for k, v in e["metrics"].items() if k != "status")
        model = {k: v for k, v in params["model"].items() if k in UNREGULARIZED}
        out.append((e["description"], float(metric), {**UNREGULARIZED, **model}))
    return out


def one(name: str, seed: int, resplit: int, runs: Path, ref_trials: int) -> dict[str, float]:
    from closedloop.models.trained import raw_array

    X, y, cats = B.TABLES[name]()
    data, y_dev = B.development_bundle(X, y, cats, name, seed, f"{name}_dev", resplit=resplit)
    data = dataclasses.replace(data, meta=data.meta.model_copy(update={"split_origin": "seeded_stratified"}))
    B.say(B.development_header("diag_tree_trials_cv", seed, data, len(y_dev)) + f"; re-split {resplit}")
    res = B.closedloop_run(data, "lgbm", runs / f"{name}_{seed}_{resplit}")
    tr, va, ho = (data.splits[k] for k in ("train", "val", "test"))
    x = np.concatenate([raw_array(tr.X), raw_array(va.X)])
    yy = np.concatenate([np.asarray(tr.y), np.asarray(va.y)])
    cat_idx = [list(tr.X.columns).index(c) for c in cats]
    tune = json.loads(
        next(
            (res.run_dir / res.summary["stages"]["train"]["dir"] / "work").rglob("phase_tune.json")
        ).read_text()
    )["outcomes"]["tune"]
    cvp = res.summary["stages"]["train"].get("cross_validation") or {}
    B.say(
        f"  closedloop: tune phase chose {tune.get('best_trial_number', 'the rung')}; cross-validation chose "
        f"{cvp.get('chosen', '-')}; development hold-out AUC of the shipped model "
        f"{B.auc(np.asarray(ho.y), res.artifact('model').predict_proba(ho.X)[:, 1]):.4f}"
    )
    best_cl = -1.0
    scored: list[tuple[str, float, dict[str, Any], int]] = []
    for desc, val, params in ledger_configs(res):
        auc, rounds = cv_auc(x, yy, cat_idx, params)
        best_cl = max(best_cl, auc)
        scored.append((desc, auc, params, rounds))
        B.say(
            f"  {desc:<40} validation {val:.4f}  5-fold CV {auc:.4f} ({rounds} rounds; leaves "
            f"{params['num_leaves']}, learning rate {params['learning_rate']:.3g}, min_child_samples "
            f"{params['min_child_samples']})"
        )
    picks = replays(res, scored, x, yy, cat_idx, raw_array(ho.X), np.asarray(ho.y), tune, cvp)
    fixed: dict[str, float] = {}
    for label, params in FIXED.items():
        fixed[label], rounds = cv_auc(x, yy, cat_idx, params)
        B.say(f"  {label:<40} 5-fold CV {fixed[label]:.4f} ({rounds} rounds)")
    Xtv = B.pd.concat([tr.X, va.X], ignore_index=True)
    model, info, rounds = B.tuned_lightgbm(Xtv, yy, seconds=3600, n_trials=ref_trials)
    ref = cv_auc(x, yy, cat_idx, {k: v for k, v in info.items() if k in UNREGULARIZED})[0]
    ref_ho = B.auc(np.asarray(ho.y), model.predict(ho.X))
    B.say(
        f"  reference ({info['trials']} trials): its own CV {info['cv_auc']:.4f}; its best on the common folds "
        f"{ref:.4f} (leaves {info['num_leaves']}, learning rate {info['learning_rate']:.3g}); development "
        f"hold-out AUC of its refit {ref_ho:.4f}"
    )
    B.say(
        f"  best 5-fold CV among closedloop's candidates {best_cl:.4f}; minus the reference's {best_cl - ref:+.4f}; "
        + "; ".join(f"{k} minus the reference's {v - ref:+.4f}" for k, v in fixed.items())
    )
    return {"best_cl": best_cl, "ref": ref, "ref_holdout": ref_ho, **fixed, **picks}


def replays(
    res: Any,
    scored: list[tuple[str, float, dict[str, Any], int]],
    x: np.ndarray,
    y: np.ndarray,
    cats: list[int],
    x_ho: np.ndarray,
    y_ho: np.ndarray,
    tune: dict[str, Any],
    cvp: dict[str, Any],
) -> dict[str, float]:
    """Development hold-out AUC of plain LightGBM refits on train + validation (each configuration with the
    rounds the common 5-fold CV chose): one pick against the average of several."""
    import lightgbm as lgb

    def proba(entry: tuple[str, float, dict[str, Any], int]) -> np.ndarray:
        return lgb.train(lgb_full(entry[2]), dataset(x, y, cats), num_boost_round=entry[3]).predict(x_ho)

    by_desc = {e[0].replace(" (pruned)", ""): e for e in scored}
    tuned = f"tuning trial {tune.get('best_trial_number')}"
    chosen = cvp.get("chosen", "hold-out choice")
    shipped = tuned if chosen == "hold-out choice" else f"tuning {chosen}"
    cross_validated = [tuned] + [
        f"tuning {c['candidate']}" for c in cvp.get("candidates", []) if c["candidate"] != "hold-out choice"
    ]
    ranked = sorted(scored, key=lambda e: -e[1])
    p: dict[str, np.ndarray] = {}
    out: dict[str, float] = {}
    for label, members in (
        ("the configuration closedloop shipped", [shipped]),
        ("the average of the two closedloop cross-validated", cross_validated),
        ("the best by the common CV", [ranked[0][0]]),
        ("the average of the top 3 by the common CV", [e[0] for e in ranked[:3]]),
    ):
        members = [m.replace(" (pruned)", "") for m in members]
        if not all(m in by_desc for m in members):
            B.say(f"  replay of {label}: not run ({members} not all in the ledger)")
            continue
        for m in members:
            if m not in p:
                p[m] = proba(by_desc[m])
        out[label] = B.auc(y_ho, np.mean([p[m] for m in members], axis=0))
        B.say(f"  replay of {label} ({', '.join(members)}): development hold-out AUC {out[label]:.4f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", nargs="+", default=["medexp"], choices=sorted(B.TABLES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[12])
    ap.add_argument("--resplits", nargs="+", type=int, default=[106])
    ap.add_argument("--ref-trials", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    B.TASK["metric"] = "auc"  # the benchmark's metric (bench_tables --metric auc): closedloop ranks on it too
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            for seed in args.seeds:
                for r in args.resplits:
                    rows.append(one(name, seed, r, Path(tmp), args.ref_trials))
    base = "the configuration closedloop shipped"
    for k in sorted({k for r in rows for k in r if k.startswith("the ") and k != base}):
        d = [r[k] - r[base] for r in rows if k in r and base in r]
        B.say(
            f"mean over {len(d)} runs: development hold-out AUC, {k} minus the shipped configuration's replay "
            f"{np.mean(d):+.4f} (standard error {np.std(d, ddof=1) / max(len(d), 1) ** 0.5 if len(d) > 1 else 0:.4f})"
        )
    d = [r["ref_holdout"] - r[base] for r in rows if base in r]
    B.say(
        f"mean over {len(d)} runs: development hold-out AUC, the reference's refit minus the shipped replay {np.mean(d):+.4f}"
    )
    gap = [r["best_cl"] - r["ref"] for r in rows]
    B.say(
        f"mean over {len(rows)} runs: best closedloop candidate minus the reference's best {np.mean(gap):+.4f}"
    )
    for k in FIXED:
        B.say(
            f"mean over {len(rows)} runs: {k} minus the reference's best {np.mean([r[k] - r['ref'] for r in rows]):+.4f}"
        )
    if args.out:
        Path(args.out).write_text("\n".join(B.LINES) + "\n")


if __name__ == "__main__":
    main()
