"""Closing the loop on a real shift: a few production labels, an adapted challenger, one rule.

PneumoniaMNIST's test distribution differs from train (the audit tells them apart); it plays
production. The champion is the shipped config (quick preset) trained on a copy without 1,000 random
train images (``shift_recovery_run.py``, cached under benchmarks/out/). The 624 test images are split
once (seed 0) into a development half and a report half: ``closedloop adapt``'s defaults were
checked on the development half; every figure below is on the report half. The pipeline's own test
opening is unchanged (it is the original test split the non-inferiority check reads).

Per draw: 100 random labeled production images -> ``run_adapt`` (random adaptation/evaluation split,
challenger chosen on the adaptation part among recalibrations, last-layer fine-tunes and whole-network
fine-tunes with replay (``--challengers``), ``decide_promotion``: better on the evaluation part AND
non-inferior on the original test split) -> the adapted challenger at its own shipped threshold on the
report-half images it never saw (every image not among the 100).

Scenarios: the test distribution as is; two medmnistc-style corruptions (severity 3) of it; and
in-distribution production (the 1,000 held-out train images), where nothing changed and an
adaptation should almost never be promoted.

With ``--challengers ...,retrain`` every draw also retrains with half of the adaptation labels added
to train (``closedloop adapt``'s retrained challenger): the champion's config rerun (``--retrain-mode
pipeline``, about a minute per draw on a quiet 2-core machine) or its network trained further from its
weights (``--retrain-mode warm_start --retrain-weight 5``; chosen on the development half by
``shift_recovery_tune.py`` with the line-up ``--challengers retrain``, the warm start alone; seconds
to tens of seconds on a CPU). Several line-ups separated by ``;`` are judged on the same draws. Per
scenario the bench prints, besides the targets, how many draws were better on production
(p < alpha), non-inferior on the clean original test split, and both, and the bounds of
``shift_recovery_bounds.py`` (the oracle threshold on the champion's scores; the same oracle on each
draw's challenger's own scores, on the images it never saw; the declared test's simulated power),
the gap of the shipped threshold to that oracle (points of cost change), and the promotion bound of
the challenger itself: per draw, the declared test on its own decisions against the champion's over
``--challenger-power-draws`` simulated evaluation sets of the protocol's size from its unseen images.
``--retrain-threshold held_out;cross_fit_half;cross_fit;cross_fit_platt;cross_fit_half_platt`` pairs with the line-ups of ``--challengers``
(where the warm start's threshold is set: ``closedloop adapt --retrain-threshold``); one warm start per
distinct training set is trained and shared between line-ups.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_shift_recovery.py [--draws 25] [--half dev]
     [--challengers recalibration,head,finetune[,retrain]] [--eval-fraction 0.5] [--retrain-weight 1]
     [--retrain-mode warm_start --retrain-weight 5 --retrain-epochs 1 --retrain-lr 5e-4]
     [--retrain-threshold held_out|cross_fit_half|cross_fit, or one per line-up separated by ';'] [--power-draws 400]
     [--bounds-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from shift_recovery_bounds import (  # noqa: E402
    AT_TARGET,
    challenger_oracle,
    cut_for_power,
    power_table,
    print_bound,
    print_power,
    promotion_power,
    threshold_bounds,
)
from shift_recovery_run import NPZ, OUT, champion_run  # noqa: E402


def gaussian_noise(X: np.ndarray, rng: np.random.Generator, c: float = 0.18) -> np.ndarray:
    """ImageNet-C / MedMNIST-C style Gaussian noise, severity 3 (sd 0.18 on the [0, 1] scale)."""
    x = X.astype(np.float64) / 255 + rng.normal(0, c, X.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def contrast(X: np.ndarray, rng: np.random.Generator, c: float = 0.2) -> np.ndarray:
    """ImageNet-C / MedMNIST-C style contrast reduction, severity 3 (factor 0.2 around each image's mean)."""
    x = X.astype(np.float64) / 255
    m = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
    return (np.clip((x - m) * c + m, 0, 1) * 255).round().astype(np.uint8)


def point(y: np.ndarray, d: np.ndarray, costs: tuple[float, float]) -> dict[str, float]:
    from closedloop.adapt.run import operating_point

    return operating_point(y, d, costs)


def share_warm_starts() -> None:
    """When several line-ups judge the same draw, train its warm-start retrain once: the same champion,
    fit labels, setting and seed give the same network (``_warm_started``'s inputs are all of it), so
    later line-ups get a copy (their retrain seconds then exclude the training)."""
    import copy
    import hashlib

    from closedloop.adapt import retrain as retrain_module

    train = retrain_module._warm_started
    last: dict[tuple, tuple] = {}
    # what trains the network: the threshold's fit and the calibration share only choose the rows,
    # which the key holds (a cross-fit's first half is the held-out mode's model)
    recipe = {"threshold_fit", "calibration_fraction"}

    def once(run_dir: Path, fit_part, spec, seed: int):  # noqa: ANN001, ANN202 (the wrapped signature)
        data = np.ascontiguousarray(np.asarray(fit_part.X)).tobytes() + np.asarray(fit_part.y).tobytes()
        key = (str(run_dir), hashlib.sha256(data).hexdigest(), spec.model_dump_json(exclude=recipe), seed)
        if key not in last:
            if len(last) >= 4:  # draws run one after another: a draw trains at most 3 distinct ones
                last.pop(next(iter(last)))
            last[key] = train(run_dir, fit_part, spec, seed)
        model, device, run = last[key]
        return copy.deepcopy(model), device, run

    retrain_module._warm_started = once


def _champion_test_auc(run_dir: Path) -> str:
    """The champion run's own test AUC (its one test opening), as its evaluation artifact records it."""
    from closedloop.artifacts.evaluation import EvaluationReport
    from closedloop.core.run_reader import RunDir

    run = RunDir(run_dir)
    auc = run.artifact(EvaluationReport).test.get("auc") if run.artifact_dir(EvaluationReport) else None
    return "not recorded" if auc is None or auc.value is None else f"{auc.value:.3f}"


def summarize(
    name: str,
    lineup: str | None,
    rows: list,
    need: list[tuple[int, int, float]],
    y: np.ndarray,
    p_all: np.ndarray,
    shipped_threshold: float,
    costs: tuple[float, float],
    args: argparse.Namespace,
) -> None:
    """One scenario's (and line-up's) figures over its draws, the bounds and the targets met or not."""
    promoted = np.array([r[0] for r in rows])
    ch = {
        k: np.array([r[1][k] for r in rows])
        for k in ("acc", "sensitivity", "specificity", "expected_cost", "auc")
    }
    cp = {
        k: np.array([r[2][k] for r in rows])
        for k in ("acc", "sensitivity", "specificity", "expected_cost", "auc")
    }
    fit = np.array([r[3] for r in rows])
    t_recal = np.array([r[5] for r in rows])
    methods = {
        m: sum(r[4] == m for r in rows)
        for m in ("threshold", "platt", "temperature", "head", "finetune", "retrain")
    }
    better = np.array([r[6] for r in rows])
    noninf = np.array([r[7] for r in rows])
    red = 1 - ch["expected_cost"] / cp["expected_cost"]
    # when the rule keeps the champion, the champion is what runs
    shipped = {k: np.where(promoted, ch[k], cp[k]) for k in ch}
    n_unseen = len(y) - args.labels
    print(
        f"\n[{name}] production: {len(y)} images ({'held-out train images' if name == 'in_distribution' else 'test images of the ' + args.half + ' half'}), {n_unseen} unseen per draw"
        + (f"; line-up --challengers {lineup}" if lineup else "")
    )
    print(
        f"  champion  at its shipped threshold on unseen production: median ACC {np.median(cp['acc']):.3f}, "
        f"specificity {np.median(cp['specificity']):.3f}, sensitivity {np.median(cp['sensitivity']):.3f}, "
        f"expected cost {np.median(cp['expected_cost']):.4f}"
    )
    print(
        f"  challenger at its shipped threshold on unseen production: median ACC {np.median(ch['acc']):.3f} "
        f"(10th-90th pct {np.percentile(ch['acc'], 10):.3f}-{np.percentile(ch['acc'], 90):.3f}, min "
        f"{ch['acc'].min():.3f}), specificity {np.median(ch['specificity']):.3f} "
        f"({np.percentile(ch['specificity'], 10):.3f}-{np.percentile(ch['specificity'], 90):.3f}), sensitivity "
        f"{np.median(ch['sensitivity']):.3f} ({np.percentile(ch['sensitivity'], 10):.3f}-"
        f"{np.percentile(ch['sensitivity'], 90):.3f}), expected cost {np.median(ch['expected_cost']):.4f}"
    )
    print(
        f"  expected cost per case vs the champion: median change {-np.median(red):+.1%} "
        f"(10th-90th percentile {-np.percentile(red, 90):+.1%} to {-np.percentile(red, 10):+.1%})"
    )
    print(
        f"  promoted in {promoted.sum()} of {len(promoted)} draws ({promoted.mean():.0%}); "
        f"what runs after the decision: median ACC {np.median(shipped['acc']):.3f}, "
        f"expected cost {np.median(shipped['expected_cost']):.4f}, mean cost change vs the champion "
        f"{np.mean(shipped['expected_cost'] / cp['expected_cost'] - 1):+.1%}"
    )
    print(
        f"  the rule's two parts: better on the production evaluation part (p < alpha) in {better.sum()} of "
        f"{len(rows)} draws; non-inferior on the clean original test split in {noninf.sum()}; both in "
        f"{(better & noninf).sum()}"
    )
    print(
        f"  ranking on unseen production: AUC champion median {np.median(cp['auc']):.3f}, challenger "
        f"{np.median(ch['auc']):.3f} (10th-90th pct {np.percentile(ch['auc'], 10):.3f}-{np.percentile(ch['auc'], 90):.3f})"
    )
    print(
        f"  chosen challenger: {methods}; fit + choice time (every family) median {np.median(fit):.1f} s, "
        f"max {fit.max():.1f} s (wall time); recalibration family alone median "
        f"{np.median(t_recal) * 1000:.1f} ms, max {t_recal.max() * 1000:.1f} ms (target <= 5 s)"
    )
    nd = np.array(need, float)
    print(
        f"  evaluation labels per draw {np.median(nd[:, 0]):.0f}; needed to detect the declared effect (a quarter "
        f"of the champion's cost) with 80% power: median {np.median(nd[:, 1]):.0f}; one-sided p median "
        f"{np.median(nd[:, 2]):.3f} (10th-90th pct {np.percentile(nd[:, 2], 10):.3f}-{np.percentile(nd[:, 2], 90):.3f})"
    )
    # the ceiling of any operating-point change: the threshold chosen at the task's costs on ALL the
    # production images of this scenario (an oracle that sees the answers; not a deployable model)
    from closedloop.stats.business import choose_threshold

    t_or = choose_threshold(y, p_all, cost_fp=costs[0], cost_fn=costs[1], prevalence=float(y.mean()))
    orc = point(y, p_all >= t_or, costs)
    champ_all = point(y, p_all >= shipped_threshold, costs)
    print(
        f"  oracle threshold at the task's costs on all {len(y)} images (sees the answers): ACC {orc['acc']:.3f}, "
        f"specificity {orc['specificity']:.3f}, sensitivity {orc['sensitivity']:.3f}, cost change "
        f"{orc['expected_cost'] / champ_all['expected_cost'] - 1:+.1%}"
    )
    n_eval = int(np.median(nd[:, 0]))
    bound = threshold_bounds(y, p_all, shipped_threshold, costs)
    print_bound(bound, len(y))
    # the same oracle on the CHALLENGER's scores, per draw on its unseen images: whether its ranking
    # could have reached the targets with a perfect threshold (then the shortfall is its threshold's)
    oc = {k: np.array([r[8][k] for r in rows]) for k in rows[0][8]}
    print(
        f"  oracle threshold on the challenger's own scores (per draw, its {n_unseen} unseen images, sees the "
        f"answers): cost change vs the champion median {np.median(oc['cost_change']):+.1%} (10th-90th pct "
        f"{np.percentile(oc['cost_change'], 10):+.1%} to {np.percentile(oc['cost_change'], 90):+.1%}; <= -40% in "
        f"{int((oc['cost_change'] <= -0.40).sum())} of {len(rows)} draws), ACC {np.median(oc['acc']):.3f}, "
        f"specificity {np.median(oc['specificity']):.3f}, sensitivity {np.median(oc['sensitivity']):.3f}; best "
        f"specificity with sensitivity >= 0.95 median {np.median(oc['specificity_at_sens95']):.3f}"
    )
    # how far the shipped threshold lands from that oracle on the same scores (0: the oracle itself)
    gap = -red - oc["cost_change"]
    print(
        f"  gap of the shipped threshold to that oracle (challenger cost change minus the oracle's, per draw): "
        f"median {np.median(gap) * 100:+.1f} points (10th-90th pct {np.percentile(gap, 10) * 100:+.1f} to "
        f"{np.percentile(gap, 90) * 100:+.1f})"
    )
    own = np.array([r[9] for r in rows], float)
    if not np.isnan(own).any():
        print(
            f"  promotion bound of THIS challenger at {int(np.median(nd[:, 0]))} evaluation labels (the declared test "
            f"on its own decisions against the champion's, {args.challenger_power_draws} simulated evaluation sets "
            f"per draw from its unseen images; promotion also needs non-inferiority): mean over draws {own.mean():.0%}, "
            f"median {np.median(own):.0%} (10th-90th pct {np.percentile(own, 10):.0%}-{np.percentile(own, 90):.0%})"
        )
    shifted = name != "in_distribution"
    # the promotion target is judged against what the declared test can find at this evaluation size
    # for a challenger exactly at the cost target (simulated; None: not simulated)
    target_power = None
    if args.power_draws and shifted:
        table = power_table(y, p_all, shipped_threshold, costs, draws=args.power_draws, also=(n_eval,))
        cut = cut_for_power(y, p_all, shipped_threshold, costs, n_eval, draws=args.power_draws)
        print_power(table, len(y), n_eval, args.power_draws, cut)
        target_power = table[AT_TARGET][n_eval]
    targets = (
        [
            (
                "median ACC >= 0.90",
                np.median(ch["acc"]) >= 0.90,
                max(bound["acc"], np.median(oc["acc"])) >= 0.90,
            ),
            (
                "median specificity >= 0.80",
                np.median(ch["specificity"]) >= 0.80,
                max(bound["specificity_at_sens95"], np.median(oc["specificity_at_sens95"])) >= 0.80,
            ),
            ("median sensitivity >= 0.95", np.median(ch["sensitivity"]) >= 0.95, True),
            (
                "median cost change <= -40%",
                -np.median(red) <= -0.40,
                min(bound["cost_change"], np.median(oc["cost_change"])) <= -0.40,
            ),
            ("promoted >= 90%", promoted.mean() >= 0.90, target_power is None or target_power >= 0.90),
        ]
        if shifted
        else [("promoted <= 5%", promoted.mean() <= 0.05, True)]
    )
    print(
        "  targets: "
        + "; ".join(
            f"{t} {'met' if ok else 'NOT met'}"
            + (
                ""
                if ok or reachable
                else " (beyond the declared test's power above)"
                if t.startswith("promoted")
                else " (beyond the threshold oracle's bound above, on the champion's and the challenger's scores)"
            )
            for t, ok, reachable in targets
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=25)
    ap.add_argument(
        "--first-draw",
        type=int,
        default=0,
        help="draws first..first+draws-1 (rounds of a long run, same seeds)",
    )
    ap.add_argument("--labels", type=int, default=100, help="production labels per draw")
    ap.add_argument("--half", choices=["dev", "report"], default="report")
    ap.add_argument("--eval-fraction", type=float, default=0.5, help="closedloop adapt --eval-fraction")
    ap.add_argument(
        "--metric", default="expected_cost", help="closedloop adapt --metric (the declared comparison)"
    )
    ap.add_argument("--scenarios", default="test,gaussian_noise,contrast,in_distribution")
    ap.add_argument(
        "--challengers",
        default="recalibration,head,finetune",
        help="closedloop adapt --challengers; several line-ups separated by ';' judge the same draws "
        "(each summarized apart; a warm start is trained once per draw and shared)",
    )
    ap.add_argument("--retrain-weight", type=int, default=1, help="closedloop adapt --retrain-weight")
    ap.add_argument(
        "--retrain-mode",
        choices=["pipeline", "warm_start"],
        default="pipeline",
        help="closedloop adapt --retrain-mode",
    )
    ap.add_argument(
        "--retrain-threshold",
        default="held_out",
        help="closedloop adapt --retrain-threshold (held_out or cross_fit); several separated by ';' pair "
        "with the line-ups of --challengers (one value: every line-up)",
    )
    ap.add_argument(
        "--retrain-epochs", type=int, default=1, help="closedloop adapt --retrain-epochs (warm_start)"
    )
    ap.add_argument(
        "--retrain-lr", type=float, default=5e-4, help="closedloop adapt --retrain-lr (warm_start)"
    )
    ap.add_argument(
        "--work", default=None, help="folder for the draws' files (default under the champion's cache)"
    )
    ap.add_argument("--retrain-set", action="append", default=[], help="closedloop adapt --retrain-set")
    ap.add_argument(
        "--bounds-only",
        action="store_true",
        help="only the threshold oracle's bound and the declared test's power per scenario (a minute)",
    )
    ap.add_argument(
        "--challenger-power-draws",
        type=int,
        default=100,
        help="per draw, simulated evaluation sets for the declared test's power on the challenger's own "
        "decisions (its promotion bound; 0: not simulated)",
    )
    ap.add_argument(
        "--power-draws",
        type=int,
        default=400,
        help="simulated draws per evaluation size for the declared test's power (0: not simulated)",
    )
    args = ap.parse_args()

    import torch
    from sklearn.metrics import roc_auc_score

    from closedloop.adapt.challengers import choose_challenger
    from closedloop.adapt.retrain import RetrainSpec
    from closedloop.adapt.run import run_adapt
    from closedloop.core.io import read_json
    from closedloop.models.trained import TrainedModel
    from closedloop.stages.monitor.retrain import _load_run

    torch.set_num_threads(1)  # the machine is shared: one thread per process avoids oversubscription
    # line-ups: --challengers and --retrain-threshold paired (one value of either: every line-up)
    fams, fits = args.challengers.split(";"), args.retrain_threshold.split(";")
    if len(fams) != len(fits) and 1 not in (len(fams), len(fits)):
        raise SystemExit(f"--challengers has {len(fams)} line-ups, --retrain-threshold {len(fits)} values")
    n_lineups = max(len(fams), len(fits))
    fams, fits = fams * (n_lineups // len(fams)), fits * (n_lineups // len(fits))
    labels = [
        f + (f" --retrain-threshold {t}" if "retrain" in f.split(",") else "")
        for f, t in zip(fams, fits, strict=True)
    ]
    if n_lineups > 1 and args.retrain_mode == "warm_start":
        share_warm_starts()
    t0 = time.time()
    run_dir, X_in, y_in = champion_run()
    t_champion = time.time() - t0
    model, task = _load_run(run_dir)
    costs = (float(task.business.cost_false_positive), float(task.business.cost_false_negative))
    with np.load(NPZ) as z:
        X_test, y_test = z["test_images"][..., None], z["test_labels"].reshape(-1).astype(int)
    perm = np.random.default_rng(0).permutation(len(y_test))
    halves = {"dev": np.sort(perm[: len(perm) // 2]), "report": np.sort(perm[len(perm) // 2 :])}
    half = halves[args.half]
    assert isinstance(model, TrainedModel)
    info = read_json(OUT / "champion.json")
    test_auc = _champion_test_auc(run_dir)
    plan = info.get("final_plan") or {}
    plan_text = (
        f"final fit {plan.get('epochs')} of {plan.get('asked_epochs')} tuned epoch(s), "
        f"{'cut: ' + str(plan.get('why')) if plan.get('why') else 'not cut by the budget'}"
        if plan
        else "final plan not recorded"
    )
    print(
        f"== bench_shift_recovery: PneumoniaMNIST, champion {run_dir.name} (shipped config, quick preset with "
        f"budget_minutes {info.get('budget_minutes', 2)} as a ceiling ({plan_text}), 1,000 train images held out; test AUC {test_auc}; "
        f"threshold {model.threshold:.4f}, costs FP {costs[0]:g} / FN {costs[1]:g}); "
        f"{args.draws} draws (from draw {args.first_draw}) of {args.labels} production labels; {args.half} half of the test images "
        f"({len(half)}); --eval-fraction {args.eval_fraction}, --metric {args.metric}, --challengers {args.challengers}"
        + (
            f" (retrain: {args.retrain_mode}, weight {args.retrain_weight}, threshold {args.retrain_threshold}"
            + (
                f", {args.retrain_epochs} epoch(s), lr {args.retrain_lr:g}"
                if args.retrain_mode == "warm_start"
                else ""
            )
            + ")"
            if "retrain" in args.challengers
            else ""
        )
        + f"; {'device ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}; "
        f"{os.cpu_count()} CPU cores =="
    )
    scenarios = {
        "test": (X_test[half], y_test[half]),
        "gaussian_noise": (gaussian_noise(X_test[half], np.random.default_rng(1)), y_test[half]),
        "contrast": (contrast(X_test[half], np.random.default_rng(2)), y_test[half]),
        "in_distribution": (X_in, y_in),
    }
    # a run with the retrained challenger writes elsewhere: it may run beside a run without it
    work = (
        Path(args.work)
        if args.work
        else OUT
        / (
            "adapt"
            if "retrain" not in args.challengers
            else f"adapt-{args.challengers}-{args.retrain_mode}-w{args.retrain_weight}-e{args.retrain_epochs}-lr{args.retrain_lr:g}-{args.retrain_threshold}"
        )
    )
    for name in args.scenarios.split(","):
        X, y = scenarios[name]
        p_all = model.predict_proba(X)[:, 1]
        if args.bounds_only:
            n_eval = int(round(args.labels * args.eval_fraction))
            c = point(y, p_all >= model.threshold, costs)
            print(
                f"\n[{name}] {len(y)} images; champion at its shipped threshold: ACC {c['acc']:.3f}, specificity "
                f"{c['specificity']:.3f}, sensitivity {c['sensitivity']:.3f}, expected cost {c['expected_cost']:.4f}"
            )
            print_bound(threshold_bounds(y, p_all, model.threshold, costs), len(y))
            if args.power_draws and name != "in_distribution":
                table = power_table(y, p_all, model.threshold, costs, draws=args.power_draws, also=(n_eval,))
                cut = cut_for_power(y, p_all, model.threshold, costs, n_eval, draws=args.power_draws)
                print_power(table, len(y), n_eval, args.power_draws, cut)
            continue
        z_all = model.predict_logits(X).reshape(-1).astype(np.float64) / model.temperature
        phi_all = model.embed(X).astype(np.float64)
        lineups = [
            (
                tuple(f.split(",")),
                RetrainSpec(
                    weight=args.retrain_weight,
                    overrides=tuple(args.retrain_set),
                    mode=args.retrain_mode,
                    epochs=args.retrain_epochs,
                    lr=args.retrain_lr,
                    threshold_fit=t,
                ),
            )
            for f, t in zip(fams, fits, strict=True)
        ]
        rows: dict[int, list] = {k: [] for k in range(len(lineups))}
        need: dict[int, list[tuple[int, int, float]]] = {k: [] for k in range(len(lineups))}
        for i in range(args.first_draw, args.first_draw + args.draws):
            rng = np.random.default_rng([7, i])
            idx = np.sort(rng.choice(len(y), args.labels, replace=False))
            unseen = np.setdiff1d(np.arange(len(y)), idx)
            lab = work / f"{name}-{args.half}-{i}.npz"
            lab.parent.mkdir(parents=True, exist_ok=True)
            np.savez(lab, images=X[idx], labels=y[idx], model_version=run_dir.name)
            for k, (families, spec) in enumerate(lineups):
                r = run_adapt(
                    run_dir,
                    lab,
                    seed=i,
                    eval_fraction=args.eval_fraction,
                    metric=args.metric,
                    out=work / (f"{name}-{args.half}-{i}" + (f"-l{k}" if len(lineups) > 1 else "")),
                    unseal_test=f"bench draw {i}",
                    challengers=families,
                    retrain=spec,
                )
                rec = r.choice.chosen
                p_ch = rec.proba(z_all[unseen], phi_all[unseen], X[unseen])
                chall = point(y[unseen], p_ch >= rec.threshold, costs)
                champ = point(y[unseen], p_all[unseen] >= model.threshold, costs)
                chall["auc"] = float(roc_auc_score(y[unseen], p_ch))
                champ["auc"] = float(roc_auc_score(y[unseen], p_all[unseen]))
                # the torch-free recalibration path alone, timed on the same adaptation labels
                ia = np.asarray(r.split.adaptation, int)
                t_rec = time.perf_counter()
                choose_challenger(
                    y[idx][ia], z_all[idx][ia], None, costs=costs, families=("recalibration",), seed=i
                )
                t_rec = time.perf_counter() - t_rec
                ni = r.decision.non_inferiority
                row = (
                    r.decision.promote,
                    chall,
                    champ,
                    r.seconds["challenger_fit"] + r.seconds.get("retrain", 0.0),
                    rec.method,
                    t_rec,
                    r.decision.significant and r.decision.better,
                    ni is not None and ni.ok,
                    challenger_oracle(y[unseen], p_ch, p_all[unseen] >= model.threshold, costs),
                    promotion_power(
                        y[unseen],
                        p_ch >= rec.threshold,
                        p_all[unseen] >= model.threshold,
                        costs,
                        len(r.split.evaluation),
                        draws=args.challenger_power_draws,
                        seed=i,
                    )  # fmt: skip
                    if args.challenger_power_draws
                    else float("nan"),
                )
                rows[k].append(row)
                need[k].append((len(r.split.evaluation), r.n_needed_for_effect, r.decision.p_value))
                # one line per draw as it ends: a run cut short (a shared machine) still says what it measured
                print(
                    f"    draw {i}{f' [{labels[k]}]' if len(lineups) > 1 else ''}: "
                    f"{rec.method} chosen; unseen production ACC {chall['acc']:.3f} (champion "
                    f"{champ['acc']:.3f}), specificity {chall['specificity']:.3f}, sensitivity {chall['sensitivity']:.3f}, "
                    f"cost {chall['expected_cost']:.4f} vs {champ['expected_cost']:.4f}, AUC {chall['auc']:.3f} vs "
                    f"{champ['auc']:.3f}; better on production {row[6]} (p {r.decision.p_value:.3f}), non-inferior "
                    f"on clean test {row[7]}; promoted {r.decision.promote}; {row[3]:.0f} s; oracle threshold on its "
                    f"scores: cost change {row[8]['cost_change']:+.3f}, specificity {row[8]['specificity']:.3f}, "
                    f"sensitivity {row[8]['sensitivity']:.3f}, best specificity at sensitivity >= 0.95 "
                    f"{row[8]['specificity_at_sens95']:.3f}"
                    + ("" if np.isnan(row[9]) else f"; its promotion bound {row[9]:.0%}"),
                    flush=True,
                )
        for k, lineup in enumerate(labels):
            summarize(
                name, lineup if len(lineups) > 1 else None, rows[k], need[k], y, p_all, model.threshold,
                costs, args,
            )  # fmt: skip
    print(f"\n(champion run: {t_champion / 60:.1f} min including the cache check)")


if __name__ == "__main__":
    main()
