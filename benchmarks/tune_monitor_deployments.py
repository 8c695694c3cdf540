"""Issue 19, session 12: a development protocol that can see an unlucky deployment, then the report halves once.

Session 11 (``tune_monitor_last_window.py``) left the reliability flag's training-rows reference
(``train_reference_rows``) off: on 12 development deployments every candidate flagged every test window,
so its declared tie-break kept the current flag, while on the report halves one deployment in ten
(held-out rows that lean toward the test distribution) let 16 of 300 test windows through unflagged and
off by more than 0.03. Twelve development deployments could not show a one-in-ten deployment.

This successor declares (docs/monitor_decisions.md, "The reliability flag's knobs, chosen per deployment"), and
prints before it runs:

* **>= 30 development deployments** (``--half dev --draws 30``), each drawn exactly as before
  (``bench_monitor_guarantee.draw_deployment``: 262 held-out rows from the unseen pool's development half,
  seed ``POOL_SEED``; its other 988 rows are its in-distribution production; test windows from the test
  split's development half, seed 19);
* **the flag's knob**: ``train_reference_rows`` in ``TRAIN_ROWS_CANDIDATES`` (0 = off, the shipped default;
  otherwise the union of the held-out mean-shift test and the training-rows test, each at half the
  per-deployment domain level 0.005: every candidate spends the same level, so the stated guarantee is
  unchanged). The training rows are drawn exactly as the monitor stage draws them;
* **the estimate's knob**: ``ESTIMATES`` (the confidence-based estimate as is; recalibrated by Platt
  scaling on the deployment's held-out rows, ``closedloop.monitoring.recalibrate``; the importance-weighted
  Platt estimate the monitor already reports as ``estimate_weighted``);
* **the rule** (``RULE``, printed), chosen on the development halves only; the report halves are then
  run ONCE with ``--flag``/``--estimate`` naming the development choice (``--half report``).

The same run measures the stream targets on the pool halves (the stream test is not tuned here):

* in-distribution: per deployment, its 988 production rows as one stream in a random order (no repeats;
  a last look at its end: the pool-halves protocol), and ``--null-streams`` streams of 2,000 rows. A half
  holds only 1,250 images, so those 2,000 are drawn from every unseen row but the deployment's held-out
  rows (both halves; the stream test is not tuned here, so the development half's rows are as fresh to it
  as the report half's). Streams drawn with repeats from the 988 would not do: the stream test's
  cross-fitted classifier recognizes a row whose copy it trained on, a shift that is not there.
  Target: a stream alarm in <= 5% of runs;
* the test distribution: ``--orders`` streams of 600 (three windows of 200 from the test half) per
  deployment; target: the stream alarm within 600 rows in >= 90% of orders.

Run (session 12, monitor3; docs/results/monitor_deployments_dev.txt, monitor_deployments.txt):
  PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_deployments.py --workdir /tmp/mon19/r2500 --half dev --draws 30
  ... --half report --draws 10 --orders 10 --flag N --estimate NAME    (once, with the development choice)

Protocol v3 (session 13, monitor4; ``--protocol v3``; declared in docs/monitor_decisions.md "Protocol v3" and printed,
``RULE_V3``): random deployments plus a stratum of leaning ones (held-out rows drawn from the development pool
rows an out-of-fold classifier finds most like the development test half, ``leaning_rows``), flag candidates
``TRAIN_ROWS_V3``, estimate candidates ``ESTIMATES_V3`` scored through the library's own
``fit_estimate_calibration``, the weakest deployment first. The monitor each deployment builds now names
``estimate_calibration: none``, so "cbpe" is CBPE again (its default became ``heldout_platt`` after session
12's runs) and ``--protocol v2`` reproduces them. Runs (docs/results/monitor_deployments_v3_dev.txt,
monitor_deployments_v3_fresh.txt, monitor_deployments_v3.txt):
  ... --protocol v3 --half dev --draws 60 --leaning 60 --null-streams 0 --stop-at 04:08
  ... --protocol v3 --half report --first-draw 100 --draws 10 --orders 10 --flag 0 --estimate heldout_platt
  ... --protocol v3 --half report --first-draw 0 --draws 10 --orders 10 --flag 0 --estimate heldout_platt

Protocol v4 (session 14, estimate5; ``--protocol v4``; declared in docs/monitor_decisions.md "Protocol v4"): v3's
deployments of one training, plus ``--domain-windows`` in-distribution windows per random deployment scored by
the domain part only, saved with ``--save``; ``tune_monitor_union.py`` applies v4's rule over the trainings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TOLERANCE = 0.03
"""The issue's tolerance between the label-free estimate and realized AUC / ACC."""
TRAIN_ROWS_CANDIDATES = (0, 500, 1000, 2000)
"""``train_reference_rows`` values tried (0: off, the shipped default before this run)."""
ESTIMATES = ("cbpe", "heldout_platt", "weighted_platt")
"""Label-free estimates tried: as shipped; Platt-recalibrated on the held-out rows; importance-weighted
Platt (the monitor's ``estimate_weighted``, its threshold not mapped, as shipped)."""
STREAM_ROWS = 2000
RULE = """Declared rule (session 12, before any run of this script):
  1. the flag's knob, with the estimate as shipped (cbpe): eligible when in-distribution windows are flagged
     <= 10% and the domain part flags <= 5% of a deployment's in-distribution windows in >= 90% of deployments;
     among those, lexicographically:
       (a) fewest test windows unflagged and off by > 0.03 (summed over deployments);
       (b) the weakest deployment: fewest such windows in any one deployment;
       (c) the weakest deployment's share of test windows flagged (the lowest over deployments), higher first;
       (d) fewest in-distribution windows flagged;
       (e) off (0) first, then fewer training rows.
  2. the estimate, with the chosen flag: eligible when its test windows unflagged and off by > 0.03 are no
     more than cbpe's; among those: (a) the largest share of unflagged in-distribution windows within 0.03
     (AUC and ACC); (b) fewest test windows unflagged and off; (c) cbpe first.
  3. the report halves once, with the development choice; the chosen flag becomes the shipped default only
     if there the in-distribution windows flagged stay <= 10% and the per-deployment targets hold (the
     domain part <= 5% in >= 90% of deployments; the per-window alarm rate <= 5% in >= 90% of deployments)."""

Row = dict[str, Any]

# -- protocol v3 (session 13, monitor4; declared in docs/monitor_decisions.md, "Protocol v3", before any v3 run) --------
TRAIN_ROWS_V3 = (0, 1000, 2000)
"""``train_reference_rows`` values tried by protocol v3."""
ESTIMATES_V3 = ("heldout_platt", "heldout_platt_bias", "heldout_bias")
"""``estimate_calibration`` values tried by protocol v3 (``closedloop.monitoring.recalibrate``): the shipped
Platt map; the Platt map and then the accuracy estimate moved by its own error on the held-out rows; that
constant correction alone. CBPE (``none``) is printed beside them, never chosen."""
LEAN_TOP = 0.5
"""A leaning deployment draws its held-out rows from this top share of the development pool half, ranked by
an out-of-fold classifier's probability that a row comes from the development test half."""
RULE_V3 = """Declared rule, protocol v3 (session 13, docs/monitor_decisions.md "Protocol v3", committed before any v3 run):
  deployments: random ones (held-out rows drawn as before) and leaning ones (held-out rows drawn from the
  development pool rows that look most like the development test half; see LEAN_TOP); in-distribution
  figures and eligibility come from the random deployments only (the guarantee is over random draws of the
  held-out rows); test-window figures from both.
  1. the flag's knob, train_reference_rows in (0, 1000, 2000), with the estimate as shipped (heldout_platt):
     eligible when the random deployments' in-distribution windows are flagged <= 10% and the domain part
     flags <= 5% of a deployment's in-distribution windows in >= 90% of random deployments; among those,
     lexicographically:
       (a) the weakest deployment first: fewest test windows unflagged and off by > 0.03 in any one deployment;
       (b) fewest such windows summed over all deployments;
       (c) the weakest deployment's share of test windows flagged (the lowest over deployments), higher first;
       (d) fewest in-distribution windows flagged (random deployments);
       (e) off (0) first, then fewer training rows.
  2. the estimate, estimate_calibration in (heldout_platt, heldout_platt_bias, heldout_bias), with the chosen
     flag: eligible when its test windows unflagged and off by > 0.03 are no more than heldout_platt's, both
     summed and in the weakest deployment; among those: (a) the largest share of the random deployments'
     unflagged in-distribution windows within 0.03 of realized AUC and ACC; (b) fewest test windows unflagged
     and off; (c) heldout_platt first.
  3. the report halves once with the development choice: deployments no run has drawn (report draws 100-109)
     and, for continuity, session 12's report deployments (draws 0-9). The chosen flag becomes the shipped
     default only if on the fresh deployments the in-distribution windows flagged stay <= 10% and the
     domain part and the per-window alarm are each <= 5% in >= 90% of deployments; the chosen estimate
     becomes the default (it is chosen on development data only)."""


def train_rows_drawn(n_train: int, rows: int) -> np.ndarray:
    """The training rows the monitor stage keeps for ``train_reference_rows: rows`` (its own draw)."""
    if n_train <= rows:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(1).choice(n_train, rows, replace=False))


def flag_fn(rows: int, level: float):
    """The domain part of the flag for ``train_reference_rows: rows`` (the union spends ``level``)."""
    if rows == 0:
        return lambda r: r["p_ms"] <= level
    return lambda r: min(r["p_ms"], r["p_train"][rows]) <= level / 2


def score(rows: list[Row], domain, estimate: str) -> dict[str, Any]:
    inn = [r for r in rows if r["kind"] == "in"]
    test = [r for r in rows if r["kind"] == "test"]
    draws = sorted({r["draw"] for r in rows})

    def flagged(r: Row) -> bool:
        return r["other"] or domain(r)

    def off(r: Row) -> bool:
        return not flagged(r) and r["err"][estimate] > TOLERANCE

    draws_in = sorted({r["draw"] for r in inn})  # all draws in v2; v3's leaning ones have no such windows
    per_draw_domain = np.array([np.mean([domain(r) for r in inn if r["draw"] == d]) for d in draws_in])
    per_draw_alarm = np.array([np.mean([r["alarm"] for r in inn if r["draw"] == d]) for d in draws_in])
    off_per_draw = np.array([sum(off(r) for r in test if r["draw"] == d) for d in draws])
    flagged_per_draw = np.array([np.mean([flagged(r) for r in test if r["draw"] == d]) for d in draws])
    kept = [r for r in inn if not flagged(r)]
    return {
        "in_flagged": float(np.mean([flagged(r) for r in inn])),
        "in_kept_within": float(np.mean([r["err"][estimate] <= TOLERANCE for r in kept]))
        if kept
        else float("nan"),
        "domain_p90": float(np.quantile(per_draw_domain, 0.9)),
        "domain_draws_ok": float(np.mean(per_draw_domain <= 0.05)),
        "alarm_p90": float(np.quantile(per_draw_alarm, 0.9)),
        "alarm_draws_ok": float(np.mean(per_draw_alarm <= 0.05)),
        "test_flagged": float(np.mean([flagged(r) for r in test])),
        "off": int(off_per_draw.sum()),
        "weakest_off": int(off_per_draw.max()),
        "weakest_off_draw": int(draws[int(off_per_draw.argmax())]),
        "weakest_flagged": float(flagged_per_draw.min()),
        "off_rows": [r for r in test if off(r)],
        "n_in": len(inn),
        "n_test": len(test),
        "n_draws": len(draws),
    }


def choose_flag(scores: dict[int, dict[str, Any]], weakest_first: bool = False) -> int:
    """The declared flag rule: eligible candidates, then fewest unflagged-and-off test windows and the
    weakest deployment's (protocol v3: ``weakest_first``, the weakest deployment before the total)."""
    ok = [k for k, s in scores.items() if s["in_flagged"] <= 0.10 and s["domain_draws_ok"] >= 0.90]
    if not ok:
        return 0

    def key(k: int) -> tuple[float, ...]:
        off = (
            (scores[k]["weakest_off"], scores[k]["off"])
            if weakest_first
            else (scores[k]["off"], scores[k]["weakest_off"])
        )
        return (*off, -scores[k]["weakest_flagged"], scores[k]["in_flagged"], k)

    return min(ok, key=key)


def choose_estimate(scores: dict[str, dict[str, Any]]) -> str:
    ok = [e for e, s in scores.items() if s["off"] <= scores["cbpe"]["off"]]
    return min(ok, key=lambda e: (-scores[e]["in_kept_within"], scores[e]["off"], e != "cbpe"))


def score_v3(rows: list[Row], domain, estimate: str) -> dict[str, Any]:
    """Protocol v3: in-distribution figures from the random deployments, test-window figures from all."""
    rand = score([r for r in rows if r["stratum"] == "random"], domain, estimate)
    both = score(rows, domain, estimate)
    keep = ("off", "weakest_off", "weakest_off_draw", "weakest_flagged", "off_rows", "n_test", "test_flagged")
    return rand | {k: both[k] for k in keep} | {"n_draws_all": both["n_draws"]}


def choose_estimate_v3(scores: dict[str, dict[str, Any]]) -> str:
    base = scores["heldout_platt"]
    ok = [
        e
        for e, s in scores.items()
        if e in ESTIMATES_V3 and s["off"] <= base["off"] and s["weakest_off"] <= base["weakest_off"]
    ]
    return min(ok, key=lambda e: (-scores[e]["in_kept_within"], scores[e]["off"], e != "heldout_platt"))


def leaning_rows(
    info: Any, model: Any, pool_half: np.ndarray, Xu: np.ndarray, X_test: np.ndarray
) -> np.ndarray:
    """The development pool rows a leaning deployment draws its held-out rows from: the top ``LEAN_TOP`` of
    the pool half by an out-of-fold logistic classifier's probability of belonging to the development test
    half (inputs: the summary features, the model's penultimate features and its logit; standardized;
    C = 0.1; 5 stratified folds, seed 19). Development data only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from closedloop.monitoring.profile import forward_all, model_input, summary_features

    def inputs(X: np.ndarray) -> np.ndarray:
        emb, proba = forward_all(model, model_input(info, X))
        p = np.clip(proba[:, -1], 1e-6, 1 - 1e-6)
        return np.hstack([summary_features(info, X), emb, np.log(p / (1 - p))[:, None]])

    Z = np.vstack([inputs(Xu[pool_half]), inputs(X_test)])
    t = np.r_[np.zeros(len(pool_half)), np.ones(len(X_test))].astype(int)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    folds = StratifiedKFold(5, shuffle=True, random_state=19)
    score_ = cross_val_predict(clf, Z, t, cv=folds, method="predict_proba")[: len(pool_half), 1]
    top = np.argsort(-score_, kind="stable")[: int(round(LEAN_TOP * len(pool_half)))]
    return np.sort(pool_half[top])


def line(name: str, s: dict[str, Any]) -> str:
    return (
        f"   [{name}] in-distribution flagged {s['in_flagged']:.1%} (target <= 10%), unflagged within {TOLERANCE} "
        f"{s['in_kept_within']:.1%}; domain part per deployment 90th pct {s['domain_p90']:.1%}, deployments <= 5% "
        f"{s['domain_draws_ok']:.0%}; test windows flagged {s['test_flagged']:.1%}, the weakest deployment's "
        f"{s['weakest_flagged']:.1%}; test windows unflagged and off by > {TOLERANCE}: {s['off']} (the weakest "
        f"deployment {s['weakest_off']}, draw {s['weakest_off_draw']})"
    )


def print_streams(args: Any, n_dep: int, streams_in: list, streams_test: list) -> None:
    """Section 3: the stream targets on the pool halves (the stream test as shipped, never tuned here)."""
    print(f"\n3. Stream alarms ({n_dep} deployments; the stream test as shipped)")
    for kind, what in (
        ("2000", f"streams of {STREAM_ROWS} (from all unseen rows but the held-out ones)"),
        (
            "production",
            "each deployment's production rows as one stream (no repeats, a last look at the end)",
        ),
    ):
        al = [(d, a) for d, k, a in streams_in if k == kind]
        if not al:
            print(f"   in-distribution {what}: not run")
            continue
        per = np.array([np.mean([a for dd, a in al if dd == d]) for d in sorted({d for d, _ in al})])
        print(
            f"   in-distribution {what}: alarm in {np.mean([a for _, a in al]):.1%} of {len(al)} runs (target <= 5%); "
            f"per deployment: 90th pct {np.quantile(per, 0.9):.0%}, deployments never alarmed {np.mean(per == 0):.0%}"
        )
    hit = [a for _, a, _ in streams_test]
    at = [r for _, a, r in streams_test if a and r is not None]
    per = np.array(
        [
            np.mean([a for dd, a, _ in streams_test if dd == d])
            for d in sorted({d for d, _, _ in streams_test})
        ]
    )
    print(
        f"   test distribution, streams of 600 (3 windows of 200 from the {args.half} half): alarm within 600 rows in "
        f"{np.mean(hit):.1%} of {len(hit)} orders (target >= 90%), median row {np.median(at) if at else float('nan'):.0f}; "
        f"per deployment: lowest {per.min():.0%}, 10th pct {np.quantile(per, 0.1):.0%}"
    )


def report_v3(rows: list[Row], args: Any, done: list[int], streams_in: list, streams_test: list) -> None:
    """Protocol v3's choice (development half) or its one measurement (report half), then the streams."""
    from tune_monitor_last_window import DOMAIN_LEVEL

    n_rand = len({r["draw"] for r in rows if r["stratum"] == "random"})
    n_lean = len({r["draw"] for r in rows if r["stratum"] == "leaning"})
    dev = args.half == "dev"
    n_in = sum(r["kind"] == "in" and r["stratum"] == "random" for r in rows)
    n_test = sum(r["kind"] == "test" for r in rows)
    print(
        f"\n1. The flag's knob ({n_rand} random and {n_lean} leaning deployments; {n_in} in-distribution windows of "
        f"the random ones, {n_test} test windows of all; estimate heldout_platt)"
    )

    def by_stratum(s: dict[str, Any], name: str) -> str:
        lean = sum(r["stratum"] == "leaning" for r in s["off_rows"])
        return f"   {name}: unflagged and off by stratum: random {len(s['off_rows']) - lean}, leaning {lean}"

    flag_scores = {k: score_v3(rows, flag_fn(k, DOMAIN_LEVEL), "heldout_platt") for k in TRAIN_ROWS_V3}
    for k, s in flag_scores.items():
        print(line(f"train_reference_rows {k}", s))
        if n_lean:
            print(by_stratum(s, f"train_reference_rows {k}"))
    flag = choose_flag(flag_scores, weakest_first=True) if dev else args.flag
    print(
        f"   {'chosen by the declared rule' if dev else 'the development choice, measured once'}: train_reference_rows {flag}"
    )

    print(f"\n2. The estimate (flag: train_reference_rows {flag}; none = CBPE, printed, never chosen)")
    est_scores = {e: score_v3(rows, flag_fn(flag, DOMAIN_LEVEL), e) for e in ("none", *ESTIMATES_V3)}
    for e, s in est_scores.items():
        print(line(e, s))
        if n_lean:
            print(by_stratum(s, e))
    est = choose_estimate_v3(est_scores) if dev else args.estimate
    print(f"   {'chosen by the declared rule' if dev else 'the development choice, measured once'}: {est}")
    s = est_scores[est]
    for r in s["off_rows"]:
        print(
            f"   unflagged and off: draw {r['draw']} ({r['stratum']}), max |error| {r['err'][est]:.3f}; held-out "
            f"mean-shift p {r['p_ms']:.3g}, "
            + ", ".join(f"train {k} p {p:.3g}" for k, p in r["p_train"].items())
        )
    domain = flag_fn(flag, DOMAIN_LEVEL)
    inn = [
        r for r in rows if r["kind"] == "in" and r["stratum"] == "random" and not (r["other"] or domain(r))
    ]
    errs = {e: np.array([r["err"][e] for r in inn]) for e in ("none", *ESTIMATES_V3)}
    print(
        "   unflagged in-distribution windows (random deployments), |error| (max of AUC, ACC) median / 95th pct: "
        + "; ".join(f"{e} {np.median(v):.4f} / {np.quantile(v, 0.95):.4f}" for e, v in errs.items())
    )
    ok = s["in_flagged"] <= 0.10 and s["domain_draws_ok"] >= 0.90 and s["alarm_draws_ok"] >= 0.90
    print(
        f"   per-window alarm per deployment 90th pct {s['alarm_p90']:.1%}, deployments <= 5% {s['alarm_draws_ok']:.0%}; "
        f"domain part per deployment 90th pct {s['domain_p90']:.1%}, deployments <= 5% {s['domain_draws_ok']:.0%}"
        + ("" if dev else f"; rule 3's checks for the flag {'hold' if ok else 'FAIL'}")
    )
    print_streams(args, len(done), streams_in, streams_test)


def main() -> None:
    from bench_monitor_guarantee import (
        SPLIT_SEED,
        deployment,
        deployment_parser,
        draw_deployment,
        test_halves,
    )
    from tune_monitor_last_window import DOMAIN_LEVEL, POOL_SEED, pool_halves

    ap = deployment_parser()
    ap.set_defaults(draws=30, null_streams=3)
    ap.add_argument("--windows", type=int, default=10, help="in-distribution windows of 200 per deployment")
    ap.add_argument("--orders", type=int, default=6, help="test-distribution streams of 600 per deployment")
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument(
        "--flag", type=int, default=None, help="report half: the development choice of train_reference_rows"
    )
    ap.add_argument(
        "--estimate", default=None, help=f"report half: the development choice, one of {ESTIMATES}"
    )
    ap.add_argument(
        "--protocol",
        choices=["v2", "v3", "v4"],
        default="v2",
        help="v2: session 12's (default, reproducible); v3; v4: v3's deployments for tune_monitor_union.py",
    )
    ap.add_argument(
        "--domain-windows",
        type=int,
        default=0,
        help="v4: extra in-distribution windows per random deployment scored by the domain part only",
    )
    ap.add_argument("--save", default=None, help="v4: write the windows' records here (pickle)")
    ap.add_argument(
        "--leaning", type=int, default=0, help="v3, dev half: leaning deployments (draws 1000...)"
    )
    ap.add_argument("--stop-at", default=None, help="HH:MM UTC: start no deployment after this (declared)")
    args = ap.parse_args()
    v3 = args.protocol in ("v3", "v4")  # v4 draws v3's deployments (tune_monitor_union.py scores them)
    flags_tried = TRAIN_ROWS_V3 if v3 else TRAIN_ROWS_CANDIDATES
    estimates_tried = ("none", *ESTIMATES_V3) if v3 else ESTIMATES
    if args.half == "report" and (args.flag not in flags_tried or args.estimate not in estimates_tried):
        raise SystemExit(
            f"--half report needs --flag (one of {flags_tried}) and --estimate (one of {estimates_tried})"
        )
    if (args.domain_windows or args.save) and args.protocol != "v4":
        raise SystemExit("--domain-windows and --save are protocol v4's")
    if args.leaning and (not v3 or args.half != "dev"):
        raise SystemExit("--leaning: leaning deployments are protocol v3's, on the development half only")

    from closedloop.monitoring.domain import domain_check
    from closedloop.monitoring.drift import Sample
    from closedloop.monitoring.drift.predictions import confidences
    from closedloop.monitoring.estimate import estimate, realized
    from closedloop.monitoring.profile import forward_all, model_input, summary_features
    from closedloop.monitoring.recalibrate import fit_estimate_calibration
    from closedloop.monitoring.train_reference import train_reference_check
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    t0 = time.time()
    run, data, task, model, Xu, yu = deployment(Path(args.workdir), args.remove, args.train_seed)
    # train_reference_rows 0 and the estimate as the model gives it (CBPE): each candidate is scored below
    # (estimate_calibration is named: its default became heldout_platt after session 12's runs)
    cfg = BuildMonitorProfileConfig(window_sizes=[200], estimate_calibration="none")
    half = pool_halves(len(yu))[args.half]
    Xt, yt = test_halves()[args.half]
    print(RULE_V3 if v3 else RULE)
    print(
        f"== {args.half.upper()} halves: the unseen in-distribution pool's (seed {POOL_SEED}, {len(half)} of {len(yu)} "
        f"images) and the test split's (seed {SPLIT_SEED}, {len(yt)} images); model {run.name}; {args.draws} "
        f"deployments of {args.pool} held-out rows; per deployment {args.windows} in-distribution windows of 200, its "
        f"{len(half) - args.pool} production rows as one stream, {args.null_streams} in-distribution streams of "
        f"{STREAM_ROWS} and {args.orders} test streams of 3 windows; domain level {DOMAIN_LEVEL}; flag candidates "
        f"train_reference_rows {flags_tried}; estimates {estimates_tried}; protocol {args.protocol}; "
        f"{args.leaning} leaning deployments; 2 shared CPU cores ==",
        flush=True,
    )
    # the deployments in order: v3 alternates random and leaning ones (draws 1000...)
    randoms = [(d, "random") for d in range(args.first_draw, args.first_draw + args.draws)]
    leanings = [(1000 + i, "leaning") for i in range(args.leaning)]
    plan: list[tuple[int, str]] = []
    while randoms or leanings:
        plan += randoms[:1] + leanings[:1]
        randoms, leanings = randoms[1:], leanings[1:]
    stop = None
    if args.stop_at:
        import datetime as dt

        hh, mm = (int(x) for x in args.stop_at.split(":"))
        now = dt.datetime.now(dt.UTC)
        stop = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    lean_pool = None
    info: Any = None  # the profile's info: the leaning rows need it, and a random deployment comes first
    tr_X = data.train.X
    rows: list[Row] = []
    streams_in: list[tuple[int, str, bool]] = []  # (draw, kind, alarmed)
    streams_test: list[tuple[int, bool, int | None]] = []  # (draw, alarm within 600, row)
    feats_u = None
    biases: list[tuple[float, float]] = []  # per deployment: (held-out rows' bias, its production's bias)
    done: list[int] = []
    for d, stratum in plan:
        if stop is not None and time.time() >= stop:
            print(
                f"  stopped by --stop-at {args.stop_at} UTC (declared) after {len(done)} deployments",
                flush=True,
            )
            break
        rng = np.random.default_rng([POOL_SEED, d])
        if stratum == "leaning" and lean_pool is None:
            lean_pool = leaning_rows(info, model, half, Xu, Xt)
            print(
                f"  leaning deployments draw from {len(lean_pool)} of the {len(half)} pool rows", flush=True
            )
        pool, rest, profile, mon = draw_deployment(
            data,
            task,
            model,
            cfg,
            (Xu, yu),
            half,
            rng,
            args.pool,
            d,
            lean_pool if stratum == "leaning" else None,
        )
        info = profile.info
        if feats_u is None:
            feats_u = summary_features(info, Xu)
            emb_u, proba_u = forward_all(model, model_input(info, Xu))
            feats_t = summary_features(info, Xt)
            emb_t, proba_t = forward_all(model, model_input(info, Xt))
            train_feats = {
                k: summary_features(info, tr_X[train_rows_drawn(len(tr_X), k)]) for k in flags_tried if k
            }
        full = Sample(features=feats_u, embeddings=profile.reduce(emb_u), proba=proba_u)
        tsample = Sample(features=feats_t, embeddings=profile.reduce(emb_t), proba=proba_t)
        thr = info.threshold
        cals = {
            e: fit_estimate_calibration(e, profile.domain.proba, profile.domain.labels, thr)
            for e in ("heldout_platt", "heldout_platt_bias", "heldout_bias")
        }

        def bias(proba: np.ndarray, y: np.ndarray, thr: float = thr) -> float:
            """Mean confidence minus accuracy: what a constant correction of CBPE's ACC would remove."""
            conf = confidences(proba, "binary", thr)
            return float(conf.mean() - np.mean((proba[:, 1] >= thr) == np.asarray(y).reshape(-1)))

        # diagnosis only (never chosen from): the held-out rows' estimate of the bias, and the production's own
        biases.append((bias(profile.domain.proba, profile.domain.labels), bias(proba_u[rest], yu[rest])))

        def record(
            s: Sample,
            y: np.ndarray,
            seed: list[int],
            kind: str,
            status: Any = None,
            mon=mon,
            cals=cals,
            d=d,
            stratum=stratum,
            thr=thr,
            train_feats=train_feats,
        ):
            r = mon.evaluate(s, seed=seed, stream=status)
            real = realized(["auc", "acc"], y, s.proba, "binary", thr)
            ests = {
                "cbpe": r["estimated"] or r["estimate_withheld"],
                "weighted_platt": r["estimate_weighted"],
            }
            ests["none"] = ests["cbpe"]
            for name, cal in cals.items():  # the library's own calibration (as the monitor applies it)
                if cal is None:
                    ests[name] = ests["cbpe"]
                    continue
                e = cal.correct(
                    estimate(
                        cal.proba(s.proba),
                        "binary",
                        cal.threshold(thr),
                        ["auc", "acc"],
                        rng=np.random.default_rng(seed),
                    )
                )
                ests[name] = {m: v["value"] for m, v in e.items()}
            prng = np.random.default_rng([*seed, 1])
            rows.append(
                {
                    "draw": d,
                    "stratum": stratum,
                    "kind": kind,
                    "other": bool(set(r["estimate_flags"]) & {"drift", "ess", "stream"}),
                    "alarm": r["alert"] == "alarm",
                    "p_ms": (r["domain"] or {}).get("p_value", 1.0),
                    "p_train": {
                        k: getattr(train_reference_check(f, s.features, prng), "p_value", 1.0)
                        for k, f in train_feats.items()
                    },
                    "acc_gap": float(ests["cbpe"]["acc"] - real["acc"]),
                    "auc_err": float(abs(ests["cbpe"]["auc"] - real["auc"])),
                    "bias": biases[-1],
                    "err": {
                        name: max(abs(est[m] - real[m]) for m in ("auc", "acc")) if est else float("inf")
                        for name, est in ests.items()
                    },
                }
            )

        # a leaning deployment's in-distribution windows count for nothing in v3's rule: only its test windows
        if stratum == "random":
            for w in range(args.windows):
                idx = rng.choice(rest, 200, replace=False)
                record(full.take(idx), yu[idx], [d, w], "in")
            # v4: more windows for the domain part's rate per deployment (the held-out mean-shift test as the
            # monitor runs it, and the training rows' test), nothing else
            for w in range(args.domain_windows):
                idx = rng.choice(rest, 200, replace=False)
                s, seed = full.take(idx), [d, 1000 + w]
                chk, _ = domain_check(profile.domain, s, "binary", np.random.default_rng(seed))
                prng = np.random.default_rng([*seed, 1])
                rows.append(
                    {
                        "draw": d,
                        "stratum": stratum,
                        "kind": "dom",
                        "p_ms": chk.p_value,
                        "p_train": {
                            k: getattr(train_reference_check(f, s.features, prng), "p_value", 1.0)
                            for k, f in train_feats.items()
                        },
                    }
                )
            # its production as one stream, no repeats: 4 windows evaluated with the stream's status, a last look at the end
            sr, order = mon.stream_test(), rng.permutation(rest)
            for k in range(4):
                widx = order[200 * k : 200 * (k + 1)]
                record(full.take(widx), yu[widx], [d, 200 + k], "in", mon.stream_update(sr, full.take(widx)))
            status = mon.stream_update(sr, full.take(order[800:]), last=True)
            streams_in.append((d, "production", bool(status["alarm"])))
            # 2,000 fresh rows: more than a half holds, so from every unseen row but this deployment's held-out ones
            # (the stream test is not tuned here; drawing with repeats instead would fake a shift: a cross-fitted
            # classifier recognizes a row whose copy it trained on)
            others = np.setdiff1d(np.arange(len(yu)), pool)
            for _ in range(args.null_streams):
                sr, order = mon.stream_test(), rng.permutation(others)[:STREAM_ROWS]
                for k in range(STREAM_ROWS // 200):
                    status = mon.stream_update(sr, full.take(order[200 * k : 200 * (k + 1)]))
                streams_in.append((d, "2000", bool(status["alarm"])))
        for o in range(args.orders):
            sr = mon.stream_test()
            for k in range(3):
                widx = rng.choice(len(yt), 200, replace=False)
                status = mon.stream_update(sr, tsample.take(widx))
                record(tsample.take(widx), yt[widx], [d, 500 + 3 * o + k], "test", status)
            streams_test.append((d, bool(status["alarm"]), status.get("alarm_at")))
        done.append(d)
        print(f"  draw {d:>2} ({stratum}): {time.time() - t0:.0f} s", flush=True)
    if args.save:
        import pickle

        with open(args.save, "wb") as fh:
            pickle.dump(
                {
                    "run": run.name,
                    "train_seed": args.train_seed,
                    "half": args.half,
                    "rows": rows,
                    "streams_in": streams_in,
                    "streams_test": streams_test,
                    "done": done,
                },
                fh,
            )
    if v3:
        report_v3(rows, args, done, streams_in, streams_test)
        print(f"total {time.time() - t0:.0f} s")
        return

    n_dep = args.draws
    s0 = score(rows, flag_fn(0, DOMAIN_LEVEL), "cbpe")
    print(
        f"\n1. The flag's knob ({s0['n_in']} in-distribution windows, {s0['n_test']} test windows, {n_dep} deployments; "
        f"estimate cbpe)"
    )
    flag_scores = {k: score(rows, flag_fn(k, DOMAIN_LEVEL), "cbpe") for k in TRAIN_ROWS_CANDIDATES}
    for k, s in flag_scores.items():
        print(line(f"train_reference_rows {k}", s))
    flag = choose_flag(flag_scores) if args.half == "dev" else args.flag
    print(
        f"   {'chosen by the declared rule' if args.half == 'dev' else 'the development choice, measured once'}: train_reference_rows {flag}"
    )

    print(f"\n2. The estimate (flag: train_reference_rows {flag})")
    est_scores = {e: score(rows, flag_fn(flag, DOMAIN_LEVEL), e) for e in ESTIMATES}
    for e, s in est_scores.items():
        print(line(e, s))
    est = choose_estimate(est_scores) if args.half == "dev" else args.estimate
    print(
        f"   {'chosen by the declared rule' if args.half == 'dev' else 'the development choice, measured once'}: {est}"
    )
    s = est_scores[est]
    for r in s["off_rows"]:
        print(
            f"   unflagged and off: draw {r['draw']}, max |error| {r['err'][est]:.3f}; held-out mean-shift p {r['p_ms']:.3g}, "
            + ", ".join(f"train {k} p {p:.3g}" for k, p in r["p_train"].items())
        )
    inn = [r for r in rows if r["kind"] == "in" and not (r["other"] or flag_fn(flag, DOMAIN_LEVEL)(r))]
    errs = {e: np.array([r["err"][e] for r in inn]) for e in ESTIMATES}
    print(
        "   unflagged in-distribution windows, |error| (max of AUC, ACC) median / 95th pct: "
        + "; ".join(f"{e} {np.median(v):.4f} / {np.quantile(v, 0.95):.4f}" for e, v in errs.items())
    )
    # why (or whether) a recalibration on the held-out rows can close the gap to the noise floor: a constant
    # correction of CBPE's ACC by the bias measured on the held-out rows, and by the production's own bias
    # (an oracle: it reads the production's labels); diagnosis only, never chosen from
    b = np.array(biases)
    print(
        f"   CBPE's ACC bias (mean confidence - accuracy) per deployment: production rows mean {b[:, 1].mean():+.4f} "
        f"(s.d. over deployments {b[:, 1].std():.4f}); its held-out rows' estimate of it: s.d. of the difference "
        f"{np.std(b[:, 0] - b[:, 1]):.4f} (262 rows)"
    )
    for name, corr in (
        ("no correction", lambda r: 0.0),
        ("held-out bias removed", lambda r: r["bias"][0]),
        ("production bias removed (oracle)", lambda r: r["bias"][1]),
    ):
        within = np.mean([max(r["auc_err"], abs(r["acc_gap"] - corr(r))) <= TOLERANCE for r in inn])
        print(
            f"   unflagged in-distribution windows within {TOLERANCE} of realized AUC and ACC, {name}: {within:.1%}"
        )
    print(
        f"   shipped default: {'train_reference_rows ' + str(flag) if args.half == 'report' and flag and s['in_flagged'] <= 0.10 and s['domain_draws_ok'] >= 0.90 and s['alarm_draws_ok'] >= 0.90 else 'unchanged by this run (dev half, or the checks of rule 3 fail, or the choice is off)'}"
        f"; per-window alarm per deployment 90th pct {s['alarm_p90']:.1%}, deployments <= 5% {s['alarm_draws_ok']:.0%}"
    )

    print_streams(args, n_dep, streams_in, streams_test)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
