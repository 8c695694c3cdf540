"""Issue 19, session 19 (rule E19): the estimate's Platt map fitted on more rows, without retraining.

Session 18 (rule E18) found one lever for the unflagged in-distribution windows within 0.03: the Platt map of
``estimate_calibration: heldout_platt`` is fitted on ~262 held-out rows, and fitted on more of them its own noise
shrinks. A pipeline has no other rows the deployed model never saw: with the train stage's default
``final_fit: train+val`` and ``holdout_fraction: 0.5`` the final fit trains on the other 262 of PneumoniaMNIST's
524 validation rows. This script measures whether those **fitted-on validation rows** still help the map
(docs/monitor_decisions.md, "The Platt map on the validation rows too (session 19, rule E19)"):

* ``heldout_platt`` (shipped): Platt on the deployment's held-out rows;
* ``heldout_val_platt``: Platt on the held-out rows plus the validation rows the final fit trained on;
* ``heldout_val_platt_half``: the same, each fitted-on row with weight 0.5.

In the benchmarks a deployment's held-out rows are drawn from the unseen images (``bench_monitor_guarantee``
replaces the validation split by them); the fitted-on rows are the training run's own validation rows outside
its held-out record, the same for every deployment of a training.

Modes:

* ``--dev``: development trainings 0-16, deployments ``--first-draw`` 1200 .. (100 other-half windows of 200 each,
  flag-free, as rule E18's ``--dev``), a diagnosis of the fitted-on rows, and the saved development sets with
  their saved flags: ``--saved`` (``tune_monitor_test_windows.py --save``) and ``--saved-report``
  (``tune_monitor_estimate_map.py --report --save`` sets), each window's shipped error checked.
* ``--report``: trainings 17, 18, deployments 1250 .., the real monitor's flags (``tune_monitor_estimate_map``'s
  report protocol), every candidate beside ``heldout_platt`` on the same windows.

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_val_map.py --dev --nets /tmp/nets --saved ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import tune_monitor_estimate_map as e18  # noqa: E402

TOLERANCE = e18.TOLERANCE
WINDOW = e18.WINDOW
REPORT_SEEDS = (17, 18)
RULE = (
    "rule E19 (declared in docs/monitor_decisions.md before any run on trainings 17, 18): candidates heldout_platt (shipped), "
    "heldout_val_platt (Platt on the held-out rows plus the validation rows the final fit trained on), "
    "heldout_val_platt_half (those rows at weight 0.5), scored on the same windows; no candidate adds a flag, so "
    "in-distribution windows flagged are unchanged; 1. eligible when, summed over the saved development sets, no "
    "more test windows are unflagged and off by > 0.03 than under heldout_platt; 2. the development choice is the "
    "eligible candidate with the largest pooled share of unflagged in-distribution guarantee windows within 0.03 "
    "(trainings 0-16, deployments 1200-1219), if that share is higher than heldout_platt's and no more than 0.5 "
    "point below it in any development training; otherwise heldout_platt; 3. reported once on trainings 17, 18 "
    "(deployments 1250-1269) beside heldout_platt on the same windows; the choice replaces the default only if "
    "there its in-distribution windows flagged stay <= 10% in each training, it leaves no more test windows "
    "unflagged and off, and its pooled share of unflagged in-distribution windows within 0.03 is higher than "
    "heldout_platt's; otherwise the default stays"
)
VAL_WEIGHT = {"heldout_val_platt": 1.0, "heldout_val_platt_half": 0.5}
CANDIDATES = ("heldout_platt", *VAL_WEIGHT)


def fit_pooled(
    p_pool: np.ndarray, y_pool: np.ndarray, p_val: np.ndarray, y_val: np.ndarray, weight: float
) -> tuple[float, float]:
    """``(slope, intercept)`` of the Platt map fitted on the held-out rows (weight 1) and the fitted-on
    validation rows (``weight``), by the monitor's own fit (``fit_platt``); the identity if it cannot be fitted."""
    from closedloop.monitoring.recalibrate import fit_platt

    proba = np.concatenate([p_pool, p_val])
    y = np.concatenate([y_pool, y_val]).astype(int)
    w = np.concatenate([np.ones(len(y_pool)), np.full(len(y_val), weight)])
    pl = fit_platt(proba, y, w)
    return (1.0, 0.0) if pl is None else (pl.slope, pl.intercept)


class ValDeployment(e18.Deployment):
    """A deployment's candidate maps: the shipped one on its held-out rows, and the pooled ones (rule E19)."""

    def __init__(
        self, p_pool: np.ndarray, y_pool: np.ndarray, threshold: float, p_val: np.ndarray, y_val: np.ndarray
    ) -> None:
        super().__init__(p_pool, y_pool, threshold)
        self.maps = {"heldout_platt": self.maps["heldout_platt"]} | {
            name: fit_pooled(p_pool, y_pool, p_val, y_val, w) for name, w in VAL_WEIGHT.items()
        }


def maker(p_val: np.ndarray, y_val: np.ndarray) -> Callable[..., ValDeployment]:
    """``make(p_pool, y_pool, threshold)`` for one training's fitted-on validation rows."""
    return lambda p, y, thr: ValDeployment(p, y, thr, p_val, y_val)


def fitted_val_rows(nets: Path, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The training run's validation rows its final fit trained on (those outside its held-out record): the
    deployed model's probabilities, the labels, and the record's note."""
    from closedloop.artifacts.heldout import HeldOut
    from closedloop.data.bundle import DatasetBundle
    from closedloop.models.trained import TrainedModel
    from closedloop.monitoring.profile import ProfileInfo, forward_all, model_input

    run = sorted((nets / f"t{seed}" / "runs").glob("*/*/summary.json"))[-1].parent
    model = TrainedModel.load(next(run.glob("stages/*_train/artifacts/model")))
    data = DatasetBundle.load(next(run.glob("stages/*_data/artifacts/data")))
    plan = HeldOut.of(model.info or {})
    if plan is None:
        raise SystemExit(f"t{seed}: the model records no held-out split")
    fit = np.setdiff1d(np.arange(len(data.val)), np.asarray(plan.indices, dtype=np.int64))
    info = ProfileInfo.model_construct(kind=data.kind, input_shape=list(data.image_shape or ()))
    _, p = forward_all(model, model_input(info, np.asarray(data.val.X)[fit]))
    y = np.asarray(data.val.y).reshape(-1).astype(int)[fit]
    return (
        p,
        y,
        f"{len(fit)} of {len(data.val)} validation rows in the final fit ({model.info.get('fitted_on')})",
    )


def diagnose_fitted(tr: dict[str, Any]) -> str:
    """How the fitted-on validation rows differ from unseen rows: realized ACC, mean confidence, Platt map."""
    thr = tr["threshold"]

    def part(p: np.ndarray, y: np.ndarray) -> str:
        pred = p[:, 1] >= thr
        conf = np.where(pred, p[:, 1], 1 - p[:, 1]).mean()
        a, b = e18.fit_map("heldout_platt", p[:, 1], y)
        return f"ACC {np.mean(pred == y):.4f}, mean confidence {conf:.4f}, Platt ({a:.2f}, {b:+.2f})"

    return (
        f"t{tr['seed']}: fitted-on validation rows ({len(tr['yv'])}) {part(tr['pv'], tr['yv'])}; all "
        f"{len(tr['yu'])} unseen rows {part(tr['pu'], tr['yu'])}"
    )


def replay_report_set(
    tr: dict[str, Any], saved_rows: list[dict[str, Any]], make: Callable[..., e18.Deployment]
) -> list[dict[str, Any]]:
    """A ``tune_monitor_estimate_map.py --report --save`` set replayed from the model's outputs (its draws:
    held-out rows ``[19, d]``, windows ``[19, d, 1]``, test streams ``[19, d, 3]``), each window's shipped error
    checked against the saved one; the saved monitor flags kept."""
    from tune_monitor_last_window import pool_halves

    pu, yu = tr["pu"], tr["yu"]
    pt, yt = tr["pt_report"], tr["yt_report"]
    halves = pool_halves(len(yu))
    out = []
    for d in sorted({w["d"] for w in saved_rows}):
        perm = np.random.default_rng([19, d]).permutation(halves["report"])
        pool = np.sort(perm[: e18.POOL])
        dep = make(pu[pool], yu[pool], tr["threshold"])
        og, trng = np.random.default_rng([19, d, 1]), np.random.default_rng([19, d, 3])
        for w in [x for x in saved_rows if x["d"] == d]:
            if w["kind"] == "in":
                idx = og.choice(halves["dev"], WINDOW, replace=False)
                row = dep.window(pu[idx], yu[idx])
            else:
                idx = trng.choice(len(yt), WINDOW, replace=False)
                row = dep.window(pt[idx], yt[idx])
            err = max(row["heldout_platt"]["auc"], row["heldout_platt"]["acc"])
            if abs(err - max(w["heldout_platt"]["auc"], w["heldout_platt"]["acc"])) > 1e-6:
                raise SystemExit(f"replay mismatch: t{tr['seed']} d{d} {w['kind']} window: {err}")
            out.append({"t": tr["seed"], "d": d, "kind": w["kind"], "saved_flag": w["saved_flag"], **row})
    return out


def test_off(rows: list[dict[str, Any]], cand: str) -> int:
    """Test windows the saved / monitor flags leave unflagged and the candidate's estimate off by > 0.03."""
    return sum(1 for w in rows if w["kind"] == "test" and not w["saved_flag"] and e18.off(w, cand))


def print_dev(rows: list[dict[str, Any]], saved: list[dict[str, Any]]) -> dict[str, Any]:
    seeds = sorted({w["t"] for w in rows})
    sets = sorted({w["set"] for w in saved})
    res: dict[str, Any] = {}
    for cand in CANDIDATES:
        per_t = {t: e18.share_within([w for w in rows if w["t"] == t], cand)[0] for t in seeds}
        pooled, bad, kept = e18.share_within(rows, cand)
        fl_max = max(
            (
                float(np.mean([w["saved_flag"] for w in saved if w["set"] == s and w["kind"] == "in"]))
                for s in sets
            ),
            default=0.0,
        )
        ins = [w for w in saved if w["kind"] == "in"]
        res[cand] = {"pooled": pooled, "per_t": per_t, "test_off": test_off(saved, cand)}
        print(
            f"[{cand}] guarantee windows: unflagged within {TOLERANCE} {pooled:.2%} ({bad} of {kept} off); per "
            "training "
            + ", ".join(f"t{t} {v:.1%}" for t, v in per_t.items())
            + f"; saved sets ({len(sets)}): in-distribution flagged max per set {fl_max:.1%} (unchanged: no "
            f"candidate flags), unflagged within {e18.share_within(ins, cand, 'saved_flag')[0]:.1%} of {len(ins)}; "
            f"test windows unflagged and off {res[cand]['test_off']} of {sum(w['kind'] == 'test' for w in saved)}",
            flush=True,
        )
    return res


def decide(res: dict[str, Any]) -> str:
    """Rule E19, clauses 1 and 2."""
    base = res["heldout_platt"]
    best, best_share = "heldout_platt", base["pooled"]
    for cand in CANDIDATES[1:]:
        r = res[cand]
        eligible = r["test_off"] <= base["test_off"]
        gap = min(r["per_t"][t] - base["per_t"][t] for t in r["per_t"])
        ok = eligible and r["pooled"] > base["pooled"] and gap >= -0.005
        print(
            f"  {cand}: eligible {eligible} (test off {r['test_off']} <= {base['test_off']}); pooled {r['pooled']:.2%} "
            f"vs heldout_platt {base['pooled']:.2%}; worst training gap {gap:+.2%} (>= -0.50 points) -> "
            + ("can be chosen" if ok else "not chosen")
        )
        if ok and r["pooled"] > best_share:
            best, best_share = cand, r["pooled"]
    return best


def noise_floor(rows: list[dict[str, Any]]) -> float:
    """The share of windows whose realized ACC is within 0.03 of an exact estimate (its own sampling noise)."""
    from scipy.stats import norm

    return float(np.mean([2 * norm.cdf(TOLERANCE / w["sd_window"]) - 1 for w in rows]))


def print_report(rows: list[dict[str, Any]], pick: str) -> None:
    """Every candidate on the report's windows, and clause 3."""
    seeds = sorted({w["t"] for w in rows})
    ins = [w for w in rows if w["kind"] == "in"]
    for t in seeds:
        mine = [w for w in ins if w["t"] == t]
        print(
            f"  t{t}: {len({w['d'] for w in mine})} deployments finished ({min(w['d'] for w in mine)}-"
            f"{max(w['d'] for w in mine)}), {len(mine)} in-distribution and "
            f"{sum(w['t'] == t and w['kind'] == 'test' for w in rows)} test windows; ACC's own noise floor on the "
            f"unflagged ones {noise_floor([w for w in mine if not w['saved_flag']]):.1%} (normal approximation, exact map)"
        )
    share: dict[str, float] = {}
    for cand in CANDIDATES:
        parts = []
        for t in seeds:
            mine = [w for w in ins if w["t"] == t]
            sh, bad, kept = e18.share_within(mine, cand, "saved_flag")
            fl = np.mean([w["saved_flag"] for w in mine])
            parts.append(
                f"t{t}: flagged {fl:.1%}, unflagged within {TOLERANCE} {sh:.2%} ({bad} of {kept} off)"
            )
        sh, bad, kept = e18.share_within(ins, cand, "saved_flag")
        share[cand] = sh
        print(
            f"[{cand}] in-distribution {'; '.join(parts)}; pooled {sh:.2%} ({bad} of {kept}); test windows "
            f"unflagged and off by > {TOLERANCE}: {test_off(rows, cand)} of {sum(w['kind'] == 'test' for w in rows)}",
            flush=True,
        )
    if pick == "heldout_platt":
        print(
            f"development choice {pick}: nothing replaces the default (rule E19, clause 3); it stays heldout_platt"
        )
        return
    fl_ok = all(np.mean([w["saved_flag"] for w in ins if w["t"] == t]) <= 0.10 for t in seeds)
    toff = {c: test_off(rows, c) for c in (pick, "heldout_platt")}
    better = share[pick] > share["heldout_platt"]
    adopt = fl_ok and toff[pick] <= toff["heldout_platt"] and better
    print(
        f"development choice {pick}: flagged <= 10% per training {fl_ok}; test off {toff}; higher share {better} -> "
        + ("it replaces the default" if adopt else "the default stays heldout_platt")
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    e18.estimate_arguments(ap)
    ap.add_argument(
        "--saved-report",
        nargs="*",
        default=[],
        help="tune_monitor_estimate_map.py --report --save sets (development)",
    )
    ap.add_argument(
        "--pick", default="heldout_platt", choices=CANDIDATES, help="report: the development choice"
    )
    args = ap.parse_args()
    print(RULE, flush=True)
    nets = Path(args.nets)
    if args.dev:
        seeds = args.train_seeds if args.train_seeds is not None else list(range(17))
        if set(seeds) & set(REPORT_SEEDS):
            ap.error("--dev: trainings 17 and 18 are the report set (rule E19)")
        first = 1200 if args.first_draw is None else args.first_draw
        print(
            f"== development: trainings {seeds}, deployments {first}-{first + args.draws - 1}, {args.windows} "
            f"other-half windows of {WINDOW} each (flag-free); saved sets {len(args.saved) + len(args.saved_report)}"
            f"; tolerance {TOLERANCE} =="
        )
        trainings: dict[int, dict[str, Any]] = {}

        def training(s: int) -> dict[str, Any]:
            if s not in trainings:
                tr = e18.load_training(nets, s, args.remove)
                tr["pv"], tr["yv"], note = fitted_val_rows(nets, s)
                trainings[s] = tr
                print(f"  [fitted-on rows] {note}; {diagnose_fitted(tr)}", flush=True)
            return trainings[s]

        rows = []
        for s in seeds:
            tr = training(s)
            rows += e18.guarantee_windows(tr, first, args.draws, args.windows, make=maker(tr["pv"], tr["yv"]))
        saved: list[dict[str, Any]] = []
        for f in args.saved:
            z = json.loads(Path(f).read_text())
            tr = training(z["settings"]["seed"])
            got = e18.saved_windows(tr, z, make=maker(tr["pv"], tr["yv"]))
            saved += [w | {"set": f} for w in got]
            print(
                f"  saved set {f} (t{tr['seed']}): {len(got)} windows replayed, every shipped error reproduced"
            )
        for f in args.saved_report:
            z = json.loads(Path(f).read_text())
            tr = training(z[0]["t"])
            got = replay_report_set(tr, z, maker(tr["pv"], tr["yv"]))
            saved += [w | {"set": f} for w in got]
            print(
                f"  saved set {f} (t{tr['seed']}): {len(got)} windows replayed, every shipped error reproduced"
            )
        res = print_dev(rows, saved)
        print(f"development choice by rule E19: {decide(res)}")
    else:
        seeds = args.train_seeds or list(REPORT_SEEDS)
        args.first_draw = 1250 if args.first_draw is None else args.first_draw
        print(
            f"== report: trainings {seeds}, deployments {args.first_draw}-{args.first_draw + args.draws - 1}, "
            f"{args.windows} other-half windows and {args.orders} test streams of 3 windows each, the real monitor's "
            f"flags; development choice {args.pick} =="
        )
        rows = []
        for s in seeds:
            pv, yv, note = fitted_val_rows(nets, s)
            print(f"  [fitted-on rows] t{s}: {note}", flush=True)
            rows += e18.report_training(args, s, make=maker(pv, yv))
        print_report(rows, args.pick)


if __name__ == "__main__":
    main()
