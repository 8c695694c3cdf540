"""What does the tuned plain LightGBM do that closedloop's tree path does not (issue #25, session 18,
famsel)? Each difference measured in isolation, on DEVELOPMENT data only: each table's split-seed
development part is split again (``bench_tables.development_bundle``: train / validation / a development
hold-out); the test part is never read.

Per (table, seed):

* closedloop's tree family alone (``family: lgbm``, bench_tables' train settings): its shipped model's
  hold-out AUC, the chosen configuration (leaves, learning rate, ...), the rounds of its final fit, the rows
  it trained on, the train stage's seconds;
* replays with plain LightGBM of that configuration (closedloop's LightGBM parameters, its seed, its float32
  rows, its categorical columns), each changing ONE thing against the replay of the shipped fit ("as shipped":
  train + the validation rows not held out, the chosen rounds):
  - ``rows``: train + ALL validation rows (the calibration rows too), the chosen rounds;
  - ``rounds scaled``: the shipped rows, rounds times (rows of the final fit / train rows);
  - ``per-round stop``: the rounds chosen on validation per round (patience 50 rounds, as the reference's
    ``lgb.cv``) instead of per epoch (2 / learning rate rounds), refitted on the shipped rows;
  - ``cv rounds``: the rounds chosen by 5-fold CV over train + validation (the reference's protocol), refitted
    on the shipped rows;
  - ``seeds``: the shipped fit with 4 other LightGBM seeds (the bagging's noise floor: the spread of these);
* the reference (``bench_tables.tuned_lightgbm``, a fixed number of Optuna trials instead of a time budget so
  the load does not choose it) on train + validation, refitted on them (its protocol: 5-fold CV, all rows);
  and its best parameters fitted closedloop's way (early stopping per round on validation, refit on the
  shipped rows): the search (closedloop's parameters against the reference's, same protocol) apart from the
  protocol (the reference's parameters, its protocol against closedloop's).

Multi-label (``medexp_multilabel``) is not replayed (its trees use a custom objective): the closedloop run only.
Printed per (table, seed) and saved as JSON (``--save-dir``).

Run: .venv/bin/python benchmarks/diag_tree_refit.py [--tables NAME ...] [--seeds 0 1] --save-dir DIR
     [--ref-trials N] [--out FILE]
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import bench_tables as B  # noqa: E402
import diag_tree_ladder as L  # noqa: E402
import numpy as np  # noqa: E402

LINES: list[str] = []
RULE = (
    "declared rule (docs/trees_decisions.md, session 18, famsel): the tree family's final fit on train + the validation "
    "rows not held out boosts the chosen rounds times (final-fit rows / train rows) (`train.tree_refit_rounds: "
    "scaled`) instead of the count chosen on train alone, only if, on the development parts of split seeds 0 "
    "and 1 re-split with seeds 100 and 101 (partitions no diagnosis read; the test part never read), the replay "
    "of the scaled fit against the shipped model (the replay of the shipped fit must equal closedloop's own "
    "hold-out AUC within 1e-4, else that run counts as not measured) gives (a) synthetic_50k: gain averaged over "
    "the two seeds >= +0.0005 and neither below -0.0005; (b) no run of breast_cancer, nwtco, medexp, "
    "synthetic_50k, diamonds below -max(0.001, 2 x that run's seed-noise sd); (c) the mean gain over those 10 "
    "runs >= 0; every run finished by 17:50 UTC (a run not finished or not measured: the rule rejects); "
    "else the final fit keeps the chosen rounds"
)
RULE_TABLES = ["breast_cancer", "nwtco", "medexp", "synthetic_50k", "diamonds"]


def ho_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Hold-out AUC of a booster's predictions (binary: P(positive), 1-D) or a model's probabilities."""
    return B.auc(y, p) if p.ndim == 1 else L.holdout_auc(y, p)


def say(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)


def lgb_params(model: Any) -> dict[str, Any]:
    """The LightGBM parameters closedloop's tree engine trained the shipped booster with (its own text)."""
    net = model.network
    text = net.lgb_booster().model_to_string()
    seed = int(re.search(r"\[seed: (-?\d+)\]", text).group(1))  # type: ignore[union-attr]
    p = dict(net.params)
    k = model.n_outputs if model.problem_type != "binary" else 1
    base = {"objective": "binary", "metric": "auc"} if k == 1 else {"objective": "multiclass", "num_class": k}
    return {
        **base,
        **p,
        "bagging_freq": 1 if p["bagging_fraction"] < 1 else 0,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbosity": -1,
        "feature_pre_filter": False,
    }


class Replay:
    """Plain LightGBM fits on closedloop's own rows (float32 raw features, NaN missing, categorical codes)."""

    def __init__(self, data: Any, model: Any, cats: list[str]) -> None:
        from closedloop.models.trained import raw_array

        cols = list(data.splits["train"].X.columns)
        self.cat = [cols.index(c) for c in cats]
        self.x = {k: raw_array(data.splits[k].X) for k in ("train", "val", "test")}
        self.y = {k: np.asarray(data.splits[k].y) for k in ("train", "val", "test")}
        held = np.asarray(model.heldout.indices, dtype=np.int64)
        keep = np.ones(len(self.y["val"]), bool)
        keep[held] = False
        if model.heldout.evaluated_on == "validation":  # final fit on train only
            keep[:] = False
        self.fit_val = np.flatnonzero(keep)

    def rows(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        xt, yt = self.x["train"], self.y["train"]
        if which == "train":
            return xt, yt
        idx = self.fit_val if which == "shipped" else np.arange(len(self.y["val"]))
        return np.concatenate([xt, self.x["val"][idx]]), np.concatenate([yt, self.y["val"][idx]])

    def dataset(self, x: np.ndarray, y: np.ndarray) -> Any:
        import lightgbm as lgb

        return lgb.Dataset(
            x,
            label=y,
            categorical_feature=self.cat or "auto",
            params={"verbosity": -1, "feature_pre_filter": False},
            free_raw_data=False,
        )

    def fit(self, params: dict[str, Any], which: str, rounds: int) -> Any:
        import lightgbm as lgb

        return lgb.train(params, self.dataset(*self.rows(which)), num_boost_round=max(1, int(rounds)))

    def holdout(self, booster: Any) -> float:
        return ho_auc(self.y["test"], booster.predict(self.x["test"]))

    def per_round_rounds(self, params: dict[str, Any], limit: int) -> int:
        """Rounds chosen on validation per round (patience 50, as lgb.cv in the reference), train only."""
        import lightgbm as lgb

        p = {**params, "metric": "auc" if params["objective"] == "binary" else "multi_logloss"}
        b = lgb.train(
            p,
            self.dataset(*self.rows("train")),
            num_boost_round=limit,
            valid_sets=[self.dataset(self.x["val"], self.y["val"])],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        return int(b.best_iteration or limit)

    def cv_rounds(self, params: dict[str, Any], limit: int) -> int:
        """Rounds chosen by stratified 5-fold CV over train + validation (the reference's protocol)."""
        import lightgbm as lgb

        p = {**params, "metric": "auc" if params["objective"] == "binary" else "multi_logloss"}
        cv = lgb.cv(
            p,
            self.dataset(*self.rows("all")),
            num_boost_round=limit,
            nfold=5,
            stratified=True,
            seed=0,
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        s = np.asarray(cv[f"valid {p['metric']}-mean"])
        return int(np.argmax(s) if p["metric"] == "auc" else np.argmin(s)) + 1


def reference_params(best: dict[str, Any], k: int) -> dict[str, Any]:
    base = {"objective": "binary", "metric": "auc"} if k == 2 else {"objective": "multiclass", "num_class": k}
    keep = (
        "learning_rate",
        "num_leaves",
        "min_child_samples",
        "reg_lambda",
        "reg_alpha",
        "feature_fraction",
        "bagging_fraction",
    )
    return {
        **base,
        **{n: best[n] for n in keep},
        "bagging_freq": 1,
        "num_threads": 1,
        "verbosity": -1,
        "seed": 0,
    }


def one(name: str, seed: int, ref_trials: int, runs: Path, resplit: int | None = None) -> dict[str, Any]:
    X, y, cats = B.TABLES[name]()
    data, y_dev = B.development_bundle(X, y, cats, name, seed, f"{name}_dev", resplit)
    again = "" if resplit is None else f", re-split seed {resplit}"
    say(B.development_header(f"diag_tree_refit {name}{again}", seed, data, len(y_dev)))
    t0 = time.perf_counter()
    res = B.closedloop_run(data, "lgbm", runs)
    s = res.summary["stages"]["train"]
    model = res.artifact("model")
    ho = data.splits["test"]  # the development hold-out (the split seed's test part is not here)
    out: dict[str, Any] = {
        "table": name,
        "seed": seed,
        "resplit": resplit,
        "shipped": L.holdout_auc(np.asarray(ho.y), np.asarray(model.predict_proba(ho.X))),
        "train_s": s["seconds"],
        "run_s": time.perf_counter() - t0,
        "fitted_on": model.info.get("fitted_on"),
        # a one-family run's decisions do not start with the family's name, as diag_tree_ladder's read them
        "ladder": L.tree_ladder([d | {"decision": "lgbm: " + d["decision"]} for d in s["decisions"]]),
        "load": os.getloadavg()[0],
        "clock": [
            d["decision"]
            for d in s["decisions"]
            if "clock" in d["decision"] or "time budget" in d["decision"]
        ],
    }
    net = model.network
    rounds = int(
        net.lgb_booster().num_trees() // max(1, model.n_outputs if model.problem_type != "binary" else 1)
    )
    out |= {"params": dict(net.params), "rounds_per_epoch": net.rounds_per_epoch, "rounds": rounds}
    say(
        f"  closedloop trees: hold-out AUC {out['shipped']:.4f}; fitted on {out['fitted_on']}; {rounds} rounds "
        f"({net.rounds_per_epoch} per epoch); leaves {net.params['num_leaves']}, learning rate "
        f"{net.params['learning_rate']:.3f}, min_child_samples {net.params['min_child_samples']}; train stage "
        f"{out['train_s']:.1f} s; load {out['load']:.1f}; clock: {'; '.join(out['clock']) or 'no decision names it'}"
    )
    if model.problem_type == "multilabel" or model.info["hparams"].get("class_weight", "none") != "none":
        say("  not replayed (multi-label objective or class weights)")
        return out
    rp, params = Replay(data, model, cats), lgb_params(model)
    n_train, n_fit = len(rp.y["train"]), len(rp.y["train"]) + len(rp.fit_val)
    limit = 8 * rounds + 200
    base = rp.holdout(rp.fit(params, "shipped", rounds))
    rep: dict[str, Any] = {"as shipped": base}
    rep["rows"] = rp.holdout(rp.fit(params, "all", rounds))
    scaled = round(rounds * n_fit / n_train)
    rep["rounds scaled"] = rp.holdout(rp.fit(params, "shipped", scaled))
    pr = cr = 0
    if resplit is None:  # the rule's runs (re-splits) need the scaled fit and the seeds only
        pr = rp.per_round_rounds(params, limit)
        rep["per-round stop"] = rp.holdout(rp.fit(params, "shipped", pr))
        cr = rp.cv_rounds(params, limit)
        rep["cv rounds"] = rp.holdout(rp.fit(params, "shipped", cr))
    seeds = [
        rp.holdout(rp.fit({**params, "seed": params["seed"] + j}, "shipped", rounds)) for j in range(1, 5)
    ]
    out |= {"replay": rep, "seed_aucs": seeds, "n_train": n_train, "n_fit": n_fit}
    out |= {"scaled_rounds": scaled, "per_round_rounds": pr, "cv_rounds": cr}
    say(
        f"  replay as shipped {base:.4f} (closedloop's own {out['shipped']:.4f}); "
        + "; ".join(f"{k} {v - base:+.4f}" for k, v in rep.items() if k != "as shipped")
        + f" (rounds: shipped {rounds}, scaled {scaled}"
        + (f", per-round stop {pr}, 5-fold CV {cr}" if resplit is None else "")
        + f"; rows {n_train} train, "
        f"{n_fit} shipped fit, {len(rp.y['train']) + len(rp.y['val'])} all)"
    )
    say(
        f"  seed noise: 4 other LightGBM seeds {', '.join(f'{v - base:+.4f}' for v in seeds)} (sd "
        f"{np.std([base, *seeds], ddof=1):.4f})"
    )
    if ref_trials == 0 or resplit is not None:
        return out
    # the reference: its search and protocol on train + validation, then its parameters closedloop's way
    x_all, y_all = rp.rows("all")
    cols = list(data.splits["train"].X.columns)
    import pandas as pd

    frame = pd.concat([data.splits["train"].X, data.splits["val"].X], ignore_index=True)[cols]
    t1 = time.perf_counter()
    ref_model, info, ref_rounds = B.tuned_lightgbm(frame, y_all, seconds=1e9, seed=0, n_trials=ref_trials)
    ref_s = time.perf_counter() - t1
    p = ref_model.predict(ho.X)
    ref = ho_auc(np.asarray(ho.y), p)
    k = len(np.unique(y_all))
    rpar = reference_params(info, k)
    ref_pr = rp.per_round_rounds(rpar, 5000)
    ref_cl = rp.holdout(rp.fit(rpar, "shipped", ref_pr))
    out["reference"] = {
        "holdout": ref,
        "trials": info["trials"],
        "rounds": ref_rounds,
        "leaves": info["num_leaves"],
        "learning_rate": info["learning_rate"],
        "closedloop_way": ref_cl,
        "closedloop_way_rounds": ref_pr,
        "seconds": ref_s,
    }
    say(
        f"  reference ({info['trials']} trials, {ref_s:.0f} s): hold-out AUC {ref:.4f} ({ref - out['shipped']:+.4f} "
        f"vs closedloop's trees); leaves {info['num_leaves']}, learning rate {info['learning_rate']:.3f}, "
        f"{ref_rounds} rounds on all {len(y_all)} rows; its parameters closedloop's way (per-round stop on "
        f"validation, {ref_pr} rounds, shipped rows) {ref_cl:.4f}: protocol {ref - ref_cl:+.4f}, search "
        f"{ref_cl - rep['per-round stop']:+.4f} (against closedloop's parameters the same way)"
    )
    return out


def decide(save: Path) -> None:
    """The declared rule (:data:`RULE`) applied to the saved re-split runs."""
    got = {
        (d["table"], d["seed"]): d for d in map(json.loads, map(Path.read_text, save.glob("*_resplit*.json")))
    }
    say(
        "\n== the rule applied (gain = hold-out AUC of the scaled-rounds replay minus closedloop's shipped model)"
    )
    gain: dict[tuple[str, int], float] = {}
    bad: list[str] = []
    for key in [(t, s) for t in RULE_TABLES for s in (0, 1)]:
        d = got.get(key)
        if d is None or "replay" not in d:
            bad.append(f"{key[0]} seed {key[1]} not run")
            continue
        rep, sd = d["replay"], float(np.std([d["replay"]["as shipped"], *d["seed_aucs"]], ddof=1))
        same = abs(rep["as shipped"] - d["shipped"]) <= 1e-4
        gain[key] = rep["rounds scaled"] - rep["as shipped"]
        floor = -max(0.001, 2 * sd)
        say(
            f"  {key[0]:<14} seed {key[1]} (re-split {d['resplit']}): shipped {d['shipped']:.4f} ({d['rounds']} rounds), "
            f"scaled {rep['rounds scaled']:.4f} ({d['scaled_rounds']} rounds): gain {gain[key]:+.4f}; seed-noise sd "
            f"{sd:.4f} (floor {floor:+.4f}); replay of the shipped fit equal: {same}"
        )
        if not same:
            bad.append(f"{key[0]} seed {key[1]} replay differs")
        d["floor"] = floor
    if bad:
        say(f"  not measured: {bad} -> REJECTED: the final fit keeps the chosen rounds")
        return
    syn = [gain["synthetic_50k", s] for s in (0, 1)]
    a = np.mean(syn) >= 0.0005 and min(syn) >= -0.0005
    below = [f"{k[0]} seed {k[1]}" for k, g in gain.items() if g < got[k]["floor"]]
    b = not below
    c = float(np.mean(list(gain.values()))) >= 0
    say(
        f"  (a) synthetic_50k gain mean {np.mean(syn):+.4f} (>= +0.0005), lowest {min(syn):+.4f} (>= -0.0005): {a}"
    )
    say(f"  (b) runs below their floor: {below or 'none'}: {b}")
    say(f"  (c) mean gain over {len(gain)} runs {np.mean(list(gain.values())):+.4f} (>= 0): {c}")
    verdict = (
        "ADOPTED: train.tree_refit_rounds: scaled"
        if a and b and c
        else "REJECTED: the final fit keeps the chosen rounds"
    )
    say(f"  -> {verdict}")


def family_choice(name: str, seed: int, runs: Path) -> dict[str, Any]:
    """Is the family choice on the validation rows beyond its own noise? closedloop's family run (both
    families, bench_tables' settings) on the development re-split: the families' validation scores, the
    paired difference and its bootstrap interval (the stage's own), the shipped model's hold-out AUC."""
    X, y, cats = B.TABLES[name]()
    data, y_dev = B.development_bundle(X, y, cats, name, seed, f"{name}_dev")
    say(B.development_header(f"diag_tree_refit --family-choice {name}", seed, data, len(y_dev)))
    res = B.closedloop_run(data, ["lgbm", "mlp"], runs)
    fam = res.summary["stages"]["train"]["families"]
    ho = data.splits["test"]
    shipped = L.holdout_auc(np.asarray(ho.y), np.asarray(res.artifact("model").predict_proba(ho.X)))
    rows = {r["family"]: r["score"] for r in fam["rows"]}
    ci = fam.get("paired_ci95") or [float("nan"), float("nan")]
    say(
        f"  family choice on {fam['evaluated_on']} ({len(data.splits['val'].y)} rows): trees {rows['lgbm']:.4f}, "
        f"MLP {rows['mlp']:.4f} -> chose {fam['chosen']}; paired difference chosen minus runner-up "
        f"{fam.get('paired_delta', float('nan')):+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}] (the stage's bootstrap); "
        f"shipped model's hold-out AUC {shipped:.4f}; load {os.getloadavg()[0]:.1f}"
    )
    return {"table": name, "seed": seed, "family": fam, "shipped": shipped}


def main() -> None:
    ap = L.development_parser()
    ap.add_argument(
        "--ref-trials", type=int, default=6, help="the reference's Optuna trials (0: no reference)"
    )
    ap.add_argument(
        "--resplit", type=int, default=None, help="the rule's runs: re-split seed = split seed + this"
    )
    ap.add_argument("--family-choice", action="store_true", help="the family choice's own noise (see above)")
    args = ap.parse_args()
    B.TASK["metric"] = "auc"
    if args.resplit is not None or args.decide:
        say(RULE)
    if args.decide:
        decide(Path(args.save_dir))
    else:
        up = os.popen("uptime").read().strip()
        say(
            f"diag_tree_refit: task {B.TASK}; started {time.strftime('%H:%M UTC', time.gmtime())}; uptime: {up}"
        )
        save = Path(args.save_dir)
        save.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for name in args.tables:
                with tempfile.TemporaryDirectory(dir="/tmp/famsel") as tmp:
                    if args.family_choice:
                        out, tag = family_choice(name, seed, Path(tmp)), "family"
                    else:
                        resplit = None if args.resplit is None else seed + args.resplit
                        out = one(name, seed, args.ref_trials, Path(tmp), resplit)
                        tag = "seed" if resplit is None else f"resplit{resplit}_seed"
                (save / f"{name}_{tag}{seed}.json").write_text(json.dumps(out))
                if args.out:
                    Path(args.out).write_text("\n".join(LINES) + "\n", encoding="utf-8")
    if args.out:
        Path(args.out).write_text("\n".join(LINES) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
