"""``closedloop adapt`` (added to the main CLI by :func:`add_commands`)."""

from __future__ import annotations

import argparse
from typing import Any

from closedloop.adapt.arguments import DEFAULT_CHALLENGERS, WARM_START_THRESHOLD, WARM_START_WEIGHT
from closedloop.stats.promotion_arguments import add_promotion_arguments


def cmd_adapt(args: argparse.Namespace) -> int:
    from closedloop.adapt.retrain import RetrainSpec
    from closedloop.adapt.run import champion_threshold_words, run_adapt
    from closedloop.core.errors import ConfigError

    try:
        spec = RetrainSpec(
            calibration_fraction=args.retrain_calibration_fraction,
            weight=args.retrain_weight,
            overrides=tuple(args.retrain_set or ()),
            mode=args.retrain_mode,
            epochs=args.retrain_epochs,
            lr=args.retrain_lr,
            threshold_fit=args.retrain_threshold,
        )
    except ValueError as exc:  # pydantic: name the flag and the value
        first = exc.errors()[0] if hasattr(exc, "errors") else {}
        flag = {
            "calibration_fraction": "--retrain-calibration-fraction",
            "weight": "--retrain-weight",
            "epochs": "--retrain-epochs",
            "lr": "--retrain-lr",
        }.get(str((first.get("loc") or ("",))[0]), "--retrain-*")
        raise ConfigError(f"{flag} {first.get('input')!r}: {first.get('msg', exc)}") from exc

    r = run_adapt(
        args.run_dir,
        args.labels,
        eval_labels=args.eval_labels,
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        alpha=args.alpha,
        margin=args.margin,
        effect=args.effect,
        metric=args.metric,
        out=args.out,
        unseal_test=args.unseal_test,
        challengers=tuple(x.strip() for x in args.challengers.split(",") if x.strip()),
        retrain=spec,
        test_mix=args.test_mix,
    )
    print(r.split.note)
    c = r.choice.chosen
    print(
        f"challenger: {c.describe()}{champion_threshold_words(r.champion_threshold)}; "
        f"{r.choice.candidates} candidates fitted and chosen in {r.seconds['challenger_fit'] * 1000:.0f} ms"
    )
    if r.retrain_choice:
        rc = r.retrain_choice
        other = rc["other_oof_cost_on_calibration_rows"]
        print(
            f"retrained challenger: cost {rc['retrain_calibration_cost']:.4f} on the {rc['n_calibration']} "
            "labels its threshold was set on (threshold cross-fitted there)"
            + ("" if other is None else f" vs {other:.4f} for {rc['other_chosen']} (out of fold)")
            + f": {rc['chosen']} chosen ({r.seconds['retrain']:.0f} s)"
        )
    ex = r.excluded_from_production
    if ex.get("n"):
        print(
            f"left out of the evaluation part: {ex['n']} sample(s) a model trained or adapted on {ex['by']}"
        )
    for name, m in r.production.items():
        print(
            f"  {name:<10} at its shipped threshold on the evaluation part: ACC {m['acc']:.3f}, "
            f"sensitivity {m['sensitivity']:.3f}, specificity {m['specificity']:.3f}, "
            f"expected cost {m['expected_cost']:.4f}"
            if "sensitivity" in m
            else f"  {name:<10} deciding the most probable class on the evaluation part: ACC {m['acc']:.3f}, "
            f"balanced accuracy {m['balanced_accuracy']:.3f}, error rate {m['expected_cost']:.4f}"
        )
    for w in r.warnings:
        print(f"warning: {w}")
    d = r.decision
    print(("PROMOTE: " if d.promote else "keep the champion: ") + "; ".join(d.reasons))
    print(f"written: {r.out_dir}/adapt.json, adapt.md, challenger.json, model/ (the adapted model)")
    print(f"serve it next to the champion: closedloop serve {r.champion} --shadow {r.out_dir}")
    ref = r.monitor_reference
    print(f"its monitor reference: {ref.get('path')}" if ref.get("path") else f"note: {ref.get('note')}")
    return 0


def add_commands(subparsers: Any) -> None:
    ad = subparsers.add_parser(
        "adapt",
        help="adapt the deployed model (recalibration, last-layer or whole-network fine-tune) on production labels and judge it on production",
    )
    ad.add_argument("run_dir", help="run directory of the deployed model (the champion)")
    ad.add_argument(
        "labels",
        help=".npz (images, labels[, selected_by, model_version, proba]) or CSV/Parquet with a label column",
    )
    add_promotion_arguments(
        ad, eval_labels_help="judge on this file instead of a random part of LABELS (randomly selected only)"
    )
    ad.add_argument(
        "--eval-fraction", type=float, default=0.5, help="share of LABELS that judges (default 0.5)"
    )
    ad.add_argument("--seed", type=int, default=0, help="seed of the adaptation/evaluation split")
    ad.add_argument(
        "--challengers",
        default=",".join(DEFAULT_CHALLENGERS),
        help="challenger families tried, comma-separated: recalibration (threshold, Platt, temperature; "
        "torch-free, seconds), head (last layer fine-tuned toward the champion's), finetune (the network "
        "fine-tuned from the champion's weights, its training data replayed; torch), retrain (the champion's "
        "config rerun with part of the adaptation labels added to train, its threshold set on the rest; "
        "minutes, or seconds with --retrain-mode warm_start); chosen on the adaptation part only; on "
        "PneumoniaMNIST's shifted test distribution the warm start alone (--challengers retrain "
        "--retrain-mode warm_start) did best on the development half (docs/adapt.md) "
        f"(default: {','.join(DEFAULT_CHALLENGERS)})",
    )
    ad.add_argument(
        "--retrain-weight",
        type=int,
        default=None,
        help="retrain: each production label is added to train this many times (default: 1 for a pipeline "
        f"rerun, {WARM_START_WEIGHT} for a warm start, chosen on bench_shift_recovery's development half)",
    )
    ad.add_argument(
        "--retrain-calibration-fraction",
        type=float,
        default=0.5,
        help="retrain: share of the adaptation part kept out of training to set its threshold on (default 0.5)",
    )
    ad.add_argument(
        "--retrain-mode",
        choices=["pipeline", "warm_start"],
        default="pipeline",
        help="retrain: rerun the champion's config (pipeline; minutes) or train the champion's network further "
        "from its weights on its training split plus the production labels (warm_start; seconds to tens of "
        "seconds) (default pipeline)",
    )
    ad.add_argument(
        "--retrain-epochs",
        type=int,
        default=1,
        help="retrain, warm_start: passes over the training split (default 1: chosen with --retrain-weight "
        f"{WARM_START_WEIGHT}, --retrain-lr 5e-4 and the warm start alone (--challengers retrain) on "
        "bench_shift_recovery's development half, docs/adapt.md)",
    )
    ad.add_argument(
        "--retrain-lr",
        type=float,
        default=5e-4,
        help="retrain, warm_start: Adam's learning rate (default 5e-4)",
    )
    ad.add_argument(
        "--retrain-threshold",
        choices=["held_out", "cross_fit", "cross_fit_half", "cross_fit_platt", "cross_fit_half_platt"],
        default=None,
        help="retrain: where its threshold at the task's costs is set: held_out (on the calibration part, "
        "never trained on; the model trains on the rest), cross_fit (warm_start only: two warm starts on "
        "swapped halves score the half each never trained on; the shipped warm start trains on every "
        "adaptation label, its threshold set on those out-of-fold scores; three warm starts) or "
        "cross_fit_half (the same out-of-fold scores; the shipped warm start is the one on the fit half; "
        "two warm starts); cross_fit_platt, cross_fit_half_platt: the same, the threshold where a Platt map "
        f"of the out-of-fold scores reaches the task's cost ratio (default: {WARM_START_THRESHOLD} for a warm start, chosen on bench_shift_recovery's "
        "development half; held_out for a pipeline rerun)",
    )
    ad.add_argument(
        "--retrain-set",
        action="append",
        metavar="KEY=VALUE",
        help="retrain: override the champion's config for the retrain, as closedloop run --set "
        "(e.g. train.budget_minutes=5); repeatable",
    )
    ad.add_argument("--effect", type=float, help="smallest cost reduction worth detecting (sizes the split)")
    ad.add_argument(
        "--metric",
        default=None,
        choices=["expected_cost", "balanced_accuracy", "acc"],
        help="the declared comparison, each model at its own threshold (default: expected cost at the task's "
        "costs; acc for a multi-class model)",
    )
    ad.add_argument(
        "--test-mix",
        default=None,
        choices=["original", "production"],
        help="the class mix the original test split is judged at for non-inferiority: as it is (original; "
        "default for a binary model), or its rows weighted to the adaptation labels' class mix (production; "
        "default for a multi-class model)",
    )
    ad.add_argument("--out", help="output folder (default RUN/adapt/<time>)")
    ad.set_defaults(func=cmd_adapt)
