"""Issue 19: which p-value should the reference stream test's looks use (``stream_look_test``)?

Declared in docs/monitor_decisions.md ("The stream's look test", session 14) before any run. Over several
trainings (``--train-seeds``: bench_monitor_guarantee.trained_run's seed, the removed-image draw and the
pipeline seed; workdirs ``--nets``/t<seed>), each with ``--draws`` deployments (262 unseen images as
held-out rows, the monitor stage's defaults), the profile's reference stream test is run with
``look_test: mean_shift``; every look computes the domain check once and keeps **both** p-values
(the cross-fitted classifier's and the mean-shift permutation test's), so the two candidates are scored
on the same looks of the same rows:

1. ``--null-streams`` unseen in-distribution streams of 2,000 rows per deployment (looks every 200);
   a candidate's stream alarms when a look has ``p_k <= stream_alpha * stream_delta / (k (k + 1))``
   (the shipped per-deployment level);
2. ``--orders`` test-distribution streams of 600 rows per deployment (three windows of 200 from the
   ``--half`` of the test split, each without repeats): alarm within 600 rows.

The rule (``RULE``, printed first): eligible candidates keep the in-distribution stream alarm at <= 5%
of runs in every training; among them the highest worst-training detection within 600 rows wins; a tie
keeps the shipped default. ``--half dev`` tunes; ``--half report`` (fresh deployments, ``--first-draw``)
is run once after the choice is committed.

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_stream_look.py --nets /tmp/nets --half dev

Session 15 (``--protocol s15``; declared in docs/monitor_decisions.md, "The stream's look test, decided on a finer
development criterion", before any s15 run; ``RULE_S15`` printed first): the same looks, and every window of
every stream is also evaluated by the monitor (``Monitor.evaluate``, no stream status): its own estimate
flags and its label-free estimate against realized AUC / ACC. A candidate's stream evidence (the level over
runs, as ``evidence_at``) withholds the estimate of the window it is reached in and every later one. The
rule adds detection within 200 rows and the test windows left unflagged and off by > 0.03, and makes a
candidate ineligible when its stream evidence adds a deployment whose in-distribution windows are flagged
more than 10%. ``--stop-at HH:MM`` (UTC): start no deployment after it.

Session 15, second rule (``--protocol s16``; declared in docs/monitor_decisions.md, "session 15, second rule", before
its report run; ``RULE_S16`` printed first): the same measurement as s15 (so s15's saved trainings are read
back), and eligibility 1(b) becomes the issue's rate: the share of in-distribution windows flagged (own
flags or the candidate's stream evidence) over all of a training's deployments <= 10%.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CANDIDATES = ("classifier", "mean_shift")
"""The looks' p-values (``stream_look_test``); the first is the shipped default before this run."""
RULE = (
    "rule (declared in docs/monitor_decisions.md before the run): a candidate is eligible when its in-distribution "
    "2,000-row streams alarm in <= 5% of runs in EVERY training; among eligible candidates the highest "
    "worst-training share of test-distribution streams alarming within 600 rows wins; a tie keeps the "
    "shipped default (classifier)"
)
NULL_ROWS = 2000
TEST_ROWS = 600
RULE_S15 = (
    "rule s15 (declared in docs/monitor_decisions.md before the run): 1. eligible when in EVERY training (a) the "
    "in-distribution 2,000-row streams alarm in <= 5% of runs and (b) the candidate's stream evidence "
    "(p_k <= stream_alpha/(k(k+1)), as evidence_at) adds no deployment whose in-distribution windows are "
    "flagged > 10% (deployments above 10% with it == above 10% by the windows' own flags alone); 2. among "
    "eligible candidates, lexicographically, higher first: (a) worst-training share of test orders alarming "
    "within 600 rows, (b) worst-training share alarming within 200 rows, (c) fewer test windows unflagged "
    "and off by > 0.03 from realized AUC or ACC (summed over trainings); a tie keeps classifier; 3. the "
    "choice becomes the default unless the report run finds it ineligible by 1(a) or 1(b) in a report training"
)
RULE_S16 = (
    "rule s16 (declared in docs/monitor_decisions.md before the report run, written after reading session 15's "
    "development results): 1. eligible when in EVERY training (a) the in-distribution 2,000-row streams "
    "alarm in <= 5% of runs and (b) the share of in-distribution windows flagged (the windows' own flags or "
    "the candidate's stream evidence, p_k <= stream_alpha/(k(k+1)) at or before the window's last row) over "
    "all that training's deployments is <= 10%; 2. among eligible candidates, lexicographically, higher "
    "first: (a) worst-training share of test orders alarming within 600 rows, (b) worst-training share "
    "alarming within 200 rows, (c) fewer test windows unflagged and off by > 0.03 from realized AUC or ACC "
    "(summed over trainings); a tie keeps classifier; 3. the choice becomes the default only if it is "
    "eligible by 1(a) and 1(b) in every report training"
)
MEASURED_AS = {"s14": "s14", "s15": "s15", "s16": "s15"}
"""The measurement each protocol runs (s16 changes only the rule, so s15's saved trainings are read back)."""
TOLERANCE = 0.03
"""The issue's tolerance between the label-free estimate and realized AUC / ACC."""
FLAG_TARGET = 0.10
"""The issue's target share of in-distribution windows flagged."""


def alarm_row(looks: list[tuple[int, float]], level: float) -> int | None:
    """The row of the first look with ``p_k <= level / (k (k + 1))`` (None: no alarm)."""
    from closedloop.monitoring.stream_reference import spend

    for k, (n, p) in enumerate(looks, start=1):
        if p <= level * spend(k):
            return n
    return None


def run_looks(test, rows, chunk: int = 200) -> dict[str, list[tuple[int, float]]]:
    """Feed ``rows`` ``chunk`` at a time; each look's (rows so far, p-value) for both candidates."""
    out: dict[str, list[tuple[int, float]]] = {c: [] for c in CANDIDATES}
    for start in range(0, len(rows), chunk):
        before = test.looks
        test.update(rows.take(np.arange(start, min(len(rows), start + chunk))))
        if test.looks > before:
            out["classifier"].append((test.n, float(test.p_classifier)))
            out["mean_shift"].append((test.n, float(test.p_value)))
    return out


def windows_of(mon, s, y: np.ndarray, seed: list[int], thr: float) -> list[tuple[bool, float]]:
    """Each window of 200 of a stream, as the monitor sees it without a stream status: (its own estimate
    flags raised, max |estimate - realized| over AUC and ACC)."""
    from closedloop.monitoring.estimate import realized

    out = []
    for k in range(0, len(y), 200):
        idx = np.arange(k, min(len(y), k + 200))
        r = mon.evaluate(s.take(idx), seed=[*seed, k // 200])
        real = realized(["auc", "acc"], y[idx], s.proba[idx], "binary", thr)
        est = r["estimated"] or r["estimate_withheld"]
        err = max(abs(est[m] - real[m]) for m in ("auc", "acc")) if est else float("inf")
        out.append((bool(r["estimate_flags"]), float(err)))
    return out


def stop_time(hhmm: str | None) -> float | None:
    """``--stop-at HH:MM`` (UTC, today) as a timestamp."""
    if not hhmm:
        return None
    import datetime as dt

    hh, mm = (int(x) for x in hhmm.split(":"))
    now = dt.datetime.now(dt.UTC)
    return now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()


def model_outputs(info: Any, model: Any, *arrays: Any) -> tuple[Any, ...]:
    """Per array: its summary features and the model's (embeddings, probabilities). They do not depend on
    the deployment's draw, so the tuning scripts compute them once per training."""
    from closedloop.monitoring.profile import forward_all, model_input, summary_features

    out: list[Any] = []
    for X in arrays:
        out += [summary_features(info, X), forward_all(model, model_input(info, X))]
    return tuple(out)


@dataclasses.dataclass
class Draw:
    """One deployment of a training: its held-out rows' profile and monitor, and the samples to stream."""

    d: int
    rest: np.ndarray  # the unseen rows that are not the held-out rows (in-distribution production)
    profile: Any
    mon: Any
    thr: float
    full: Any  # every unseen row as a drift Sample
    tsample: Any  # every test-half row as a drift Sample
    srng: np.random.Generator  # the draw's stream generator (seed [19, d, 2])


@dataclasses.dataclass
class Training:
    """A trained #19 network with its unseen rows and the test half, and the deployments drawn from it."""

    run: Path
    yu: np.ndarray
    Xt: np.ndarray
    yt: np.ndarray
    t0: float
    draws: Iterator[Draw]


def deployment_draws(args: argparse.Namespace, seed: int, cfg: Any) -> Training:
    """Load training ``seed`` and draw its deployments lazily: ``args.first_draw ..``, ``args.pool``
    held-out rows each from ``[19, d]``, none started after ``--stop-at``. Shared by this script and
    ``tune_monitor_test_windows.py`` so both draw the same deployments the same way."""
    from bench_monitor_guarantee import deployment, test_halves

    from closedloop.data.bundle import Split
    from closedloop.monitoring import Monitor
    from closedloop.monitoring.drift import Sample
    from closedloop.stages.monitor.stage import build_profile

    t0 = time.time()
    run, data, task, model, Xu, yu = deployment(Path(args.nets) / f"t{seed}", args.remove, seed)
    Xt, yt = test_halves()[args.half]

    def draws() -> Iterator[Draw]:
        cache = None
        stop = stop_time(args.stop_at)
        for d in range(args.first_draw, args.first_draw + args.draws):
            if stop is not None and time.time() >= stop:
                print(
                    f"  t{seed}: stopped by --stop-at {args.stop_at} UTC (declared) before draw {d}",
                    flush=True,
                )
                return
            rng = np.random.default_rng([19, d])
            perm = rng.permutation(len(yu))
            pool, rest = np.sort(perm[: args.pool]), perm[args.pool :]
            bundle = dataclasses.replace(data, splits={**data.splits, "val": Split(X=Xu[pool], y=yu[pool])})
            profile = build_profile(cfg, bundle, task, model, np.random.default_rng([7, d]))
            if cache is None:  # the model's outputs do not depend on the draw: computed once
                cache = model_outputs(profile.info, model, Xu, Xt)
            fu, (eu, pu), ft, (et, pt) = cache
            yield Draw(
                d=d,
                rest=rest,
                profile=profile,
                mon=Monitor(profile, model, seed=d, effects=False),
                thr=profile.info.threshold,
                full=Sample(features=fu, embeddings=profile.reduce(eu), proba=pu),
                tsample=Sample(features=ft, embeddings=profile.reduce(et), proba=pt),
                srng=np.random.default_rng([19, d, 2]),
            )

    return Training(run=run, yu=yu, Xt=Xt, yt=yt, t0=t0, draws=draws())


def one_training(args: argparse.Namespace, seed: int, level: float) -> dict[str, dict[str, list]]:
    from closedloop.monitoring.stream_reference import ReferenceStreamTest, new_stream_test
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    # train_reference_rows 0: the profiles of the rules measured before T21 made the training-rows test default
    cfg = BuildMonitorProfileConfig(window_sizes=[200], stream_look_test="mean_shift", train_reference_rows=0)
    res: dict[str, Any] = {c: {"null": [], "test": []} for c in CANDIDATES}
    s15 = MEASURED_AS[args.protocol] == "s15"
    res["streams"] = []  # s15: each stream's looks (both candidates) and windows (own flags, error)
    tr = deployment_draws(args, seed, cfg)
    yu, Xt, yt, t0 = tr.yu, tr.Xt, tr.yt, tr.t0
    for dr in tr.draws:
        d, rest, profile, mon, thr, full, tsample, srng = (
            dr.d, dr.rest, dr.profile, dr.mon, dr.thr, dr.full, dr.tsample, dr.srng,
        )  # fmt: skip
        for o in range(args.null_streams):
            test = new_stream_test(profile, seed=[d, 1, o])
            assert isinstance(test, ReferenceStreamTest) and test.look_test == "mean_shift"
            idx = srng.choice(rest, NULL_ROWS, replace=False)
            looks = run_looks(test, full.take(idx))
            for c in CANDIDATES:
                res[c]["null"].append((d, alarm_row(looks[c], level)))
            if s15:
                wins = windows_of(mon, full.take(idx), yu[idx], [d, 1, o], thr)
                res["streams"].append({"d": d, "kind": "null", "looks": looks, "windows": wins})
        for o in range(args.orders):
            idx = np.concatenate([srng.choice(len(Xt), 200, replace=False) for _ in range(3)])
            looks = run_looks(new_stream_test(profile, seed=[d, 2, o]), tsample.take(idx))
            for c in CANDIDATES:
                res[c]["test"].append((d, alarm_row(looks[c], level)))
            if s15:
                wins = windows_of(mon, tsample.take(idx), yt[idx], [d, 2, o], thr)
                res["streams"].append({"d": d, "kind": "test", "looks": looks, "windows": wins})
        print(
            f"  t{seed} draw {d:>3}: "
            + "; ".join(
                f"{c} null {sum(r is not None for dd, r in res[c]['null'] if dd == d)}/{args.null_streams}, "
                f"test<=600 {sum(r is not None for dd, r in res[c]['test'] if dd == d)}/{args.orders}"
                for c in CANDIDATES
            )
            + f"; {time.time() - t0:.0f} s",
            flush=True,
        )
    print(f"  t{seed}: model {tr.run.name}, {len(yu)} unseen images; {time.time() - t0:.0f} s", flush=True)
    return res


def score_s15(streams: list[dict[str, Any]], c: str, level: float, alpha: float) -> dict[str, Any]:
    """One candidate in one training: what its looks and the windows' own flags give (RULE_S15)."""
    per_dep: dict[int, list[tuple[bool, bool]]] = {}  # in-distribution windows: (own flag, with the stream)
    kept_within, test_off, test_flagged, hit600, hit200, rows, null_alarm = [], 0, [], [], [], [], []
    n_test = 0
    for st in streams:
        looks = [tuple(x) for x in st["looks"][c]]
        alarm, evidence = alarm_row(looks, level), alarm_row(looks, alpha)
        for i, (own, err) in enumerate(st["windows"]):
            # the monitor withholds the estimate of the window whose look reached the evidence, and every later one
            flagged = own or (evidence is not None and evidence <= 200 * (i + 1))
            if st["kind"] == "null":
                per_dep.setdefault(st["d"], []).append((own, flagged))
                if not flagged:
                    kept_within.append(err <= TOLERANCE)
            else:
                n_test += 1
                test_flagged.append(flagged)
                test_off += int(not flagged and err > TOLERANCE)
        if st["kind"] == "null":
            null_alarm.append(alarm is not None)
        else:
            hit600.append(alarm is not None and alarm <= TEST_ROWS)
            hit200.append(alarm is not None and alarm <= 200)
            rows.append(alarm)
    own_rate = {d: float(np.mean([o for o, _ in v])) for d, v in per_dep.items()}
    with_rate = {d: float(np.mean([f for _, f in v])) for d, v in per_dep.items()}
    at = [r for r in rows if r is not None]
    return {
        "null_alarm": float(np.mean(null_alarm)),
        "n_null": len(null_alarm),
        "deployments": len(per_dep),
        "over_own": sum(r > FLAG_TARGET for r in own_rate.values()),
        "over_with": sum(r > FLAG_TARGET for r in with_rate.values()),
        "in_flagged": float(np.mean([f for v in per_dep.values() for _, f in v])),
        "in_flagged_own": float(np.mean([o for v in per_dep.values() for o, _ in v])),
        "dep_max": max(with_rate.values()),
        "dep_max_own": max(own_rate.values()),
        "kept_within": float(np.mean(kept_within)) if kept_within else float("nan"),
        "within600": float(np.mean(hit600)),
        "within200": float(np.mean(hit200)),
        "orders": len(hit600),
        "median_row": float(np.median(at)) if at else float("nan"),
        "test_off": test_off,
        "n_test": n_test,
        "test_flagged": float(np.mean(test_flagged)),
    }


def line_s15(name: str, s: dict[str, Any]) -> str:
    return (
        f"[{name}] {s['deployments']} deployments; in-distribution windows flagged {s['in_flagged']:.1%} "
        f"({s['in_flagged_own']:.1%} by their own flags), per deployment max {s['dep_max']:.1%} "
        f"({s['dep_max_own']:.1%}); deployments above {FLAG_TARGET:.0%}: {s['over_with']} ({s['over_own']} by own "
        f"flags); unflagged within {TOLERANCE}: {s['kept_within']:.1%}; test orders within 200 rows "
        f"{s['within200']:.1%}, within 600 {s['within600']:.1%} of {s['orders']}, median row {s['median_row']:.0f}; "
        f"test windows flagged {s['test_flagged']:.1%}, unflagged and off by > {TOLERANCE}: {s['test_off']} of "
        f"{s['n_test']}"
    )


def eligible_s15(s: dict[str, Any]) -> bool:
    """RULE_S15's 1: no in-distribution alarm beyond 5%; the stream evidence adds no deployment above 10%."""
    return s["null_alarm"] <= 0.05 and s["over_with"] == s["over_own"]


def eligible_s16(s: dict[str, Any]) -> bool:
    """RULE_S16's 1: no in-distribution alarm beyond 5%; <= 10% of in-distribution windows flagged overall."""
    return s["null_alarm"] <= 0.05 and s["in_flagged"] <= FLAG_TARGET


def summary_s15(args: argparse.Namespace, scores: dict[str, dict[int, dict[str, Any]]]) -> None:
    """RULE_S15 (or RULE_S16) over the trainings (development half), or its one measurement (report half)."""
    rule = args.protocol
    print(f"\nsummary over trainings ({rule}):")
    keys: dict[str, tuple[float, float, int]] = {}
    ok: dict[str, bool] = {}
    for c in CANDIDATES:
        sc = [scores[c][s] for s in args.train_seeds]
        ok[c] = all((eligible_s16 if rule == "s16" else eligible_s15)(s) for s in sc)
        keys[c] = (
            min(s["within600"] for s in sc),
            min(s["within200"] for s in sc),
            -sum(s["test_off"] for s in sc),
        )

        def each(field: str, fmt: str = "{:.1%}", sc: list = sc) -> str:
            return ", ".join(fmt.format(s[field]) for s in sc)

        over = ", ".join(f"{s['over_with']} (own flags {s['over_own']})" for s in sc)
        rate = ", ".join(f"{s['in_flagged']:.1%} (own flags {s['in_flagged_own']:.1%})" for s in sc)
        print(
            f"[{c}] in-distribution stream alarm per training {each('null_alarm')}; "
            + (
                f"in-distribution windows flagged per training {rate}; "
                if rule == "s16"
                else f"deployments with in-distribution windows flagged > {FLAG_TARGET:.0%} per training {over}; "
            )
            + f"eligible: {ok[c]}; "
            f"within 600 per training {each('within600')} (worst {keys[c][0]:.1%}); within 200 "
            f"{each('within200')} (worst {keys[c][1]:.1%}); test windows unflagged and off by > {TOLERANCE}: "
            f"{each('test_off', '{}')} (total {-keys[c][2]} of {sum(s['n_test'] for s in sc)})"
        )
    if args.half == "report":
        print(
            f"report half: measured once; the choice was made on the development half (rule {rule.upper()}'s 3: it "
            + (
                "becomes the default only if eligible here): "
                if rule == "s16"
                else "stays the default unless ineligible here): "
            )
            + ", ".join(f"{c} eligible {ok[c]}" for c in CANDIDATES)
        )
        return
    eligible = [c for c in CANDIDATES if ok[c]]
    if not eligible:
        print(f"no candidate eligible: the shipped default ({CANDIDATES[0]}) stays")
        return
    best = max(keys[c] for c in eligible)
    chosen = (
        CANDIDATES[0]
        if keys.get(CANDIDATES[0]) == best and ok[CANDIDATES[0]]
        else max(eligible, key=keys.get)
    )
    print(
        f"chosen by the declared rule {rule}: stream_look_test {chosen} (worst-training within 600 {best[0]:.1%}, "
        f"within 200 {best[1]:.1%}, test windows unflagged and off {-best[2]})"
    )


def main() -> None:
    from bench_monitor_guarantee import SPLIT_SEED

    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--nets", required=True, help="folder of the trainings' workdirs t<seed> (outside the repo)"
    )
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--remove", type=int, default=2500)
    ap.add_argument("--half", choices=["dev", "report"], default="dev")
    ap.add_argument("--first-draw", type=int, default=0, help="deployments first-draw .. first-draw+draws-1")
    ap.add_argument("--draws", type=int, default=12)
    ap.add_argument("--pool", type=int, default=262)
    ap.add_argument("--null-streams", type=int, default=4)
    ap.add_argument("--orders", type=int, default=5)
    ap.add_argument(
        "--protocol",
        choices=["s14", "s15", "s16"],
        default="s14",
        help="s15: windows evaluated too, RULE_S15; s16: the same measurement, RULE_S16",
    )
    ap.add_argument("--stop-at", default=None, help="HH:MM UTC: start no deployment after this (declared)")
    ap.add_argument(
        "--save",
        default=None,
        help="folder (outside the repo) for each training's results; a training saved there with the same "
        "settings is read back instead of rerun (trainings run one process each, then one run summarizes)",
    )
    args = ap.parse_args()

    cfg = BuildMonitorProfileConfig()
    assert cfg.stream_delta is not None
    level = cfg.stream_alpha * cfg.stream_delta
    s15 = MEASURED_AS[args.protocol] == "s15"
    print({"s14": RULE, "s15": RULE_S15, "s16": RULE_S16}[args.protocol])
    print(
        f"== candidates {', '.join(CANDIDATES)}; trainings {args.train_seeds} ({args.remove} train images removed, "
        f"seed = removed-image draw and pipeline seed); deployments {args.first_draw}..{args.first_draw + args.draws - 1} "
        f"per training ({args.pool} held-out rows each); per deployment {args.null_streams} in-distribution streams of "
        f"{NULL_ROWS} and {args.orders} test-distribution streams of {TEST_ROWS} ({args.half} half, seed {SPLIT_SEED}); "
        f"a look every {cfg.stream_look} rows, alarm at p_k <= {level:g}/(k(k+1)); protocol {args.protocol}"
        + (
            f" (measured as {MEASURED_AS[args.protocol]})"
            if MEASURED_AS[args.protocol] != args.protocol
            else ""
        )
        + (
            f", every window evaluated by the monitor (shipped defaults), stream evidence at p_k <= "
            f"{cfg.stream_alpha:g}/(k(k+1)), tolerance {TOLERANCE}, stop at {args.stop_at or 'none'} UTC"
            if s15
            else ""
        )
        + " ==",
        flush=True,
    )
    table: dict[str, dict[int, tuple[float, float]]] = {c: {} for c in CANDIDATES}
    scores: dict[str, dict[int, dict[str, Any]]] = {c: {} for c in CANDIDATES}
    for seed in args.train_seeds:
        key = {k: v for k, v in vars(args).items() if k not in ("train_seeds", "save", "stop_at")} | {
            "seed": seed,
            "protocol": MEASURED_AS[args.protocol],
        }
        saved = Path(args.save) / f"t{seed}_{args.half}_{args.first_draw}.json" if args.save else None
        old = json.loads(saved.read_text()) if saved is not None and saved.is_file() else None
        # the number of deployments may differ per training (the clock amendment in docs/monitor_decisions.md)
        if old is not None and {k: v for k, v in old["settings"].items() if k != "draws"} == {
            k: v for k, v in key.items() if k != "draws"
        }:
            res = old["results"]
            print(
                f"  t{seed}: read back from {saved} (run by an earlier process with the same settings, "
                f"{old['settings']['draws']} deployments)"
            )
        else:
            res = one_training(args, seed, level)
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps({"settings": key, "results": res}))
        for c in CANDIDATES:
            null = [r is not None for _, r in res[c]["null"]]
            rows = [r for _, r in res[c]["test"]]
            hit = [r is not None and r <= TEST_ROWS for r in rows]
            at = [r for r in rows if r is not None]
            table[c][seed] = (float(np.mean(null)), float(np.mean(hit)))
            per_draw = {}
            for d, r in res[c]["null"]:
                per_draw.setdefault(d, []).append(r is not None)
            worst = max(np.mean(v) for v in per_draw.values())
            print(
                f"[t{seed} {c}] in-distribution streams of {NULL_ROWS}: alarm in {np.mean(null):.1%} of {len(null)} "
                f"runs (worst deployment {worst:.0%}); test streams of {TEST_ROWS}: alarm within {TEST_ROWS} rows "
                f"in {np.mean(hit):.1%} of {len(hit)} orders, median row "
                f"{np.median(at) if at else float('nan'):.0f}",
                flush=True,
            )
            if s15:
                scores[c][seed] = score_s15(res["streams"], c, level, cfg.stream_alpha)
                print(line_s15(f"t{seed} {c}", scores[c][seed]), flush=True)
                # which in-distribution streams reached the evidence that withholds estimates, and when
                ev: dict[int, list[int]] = {}
                for st in res["streams"]:
                    e = alarm_row([tuple(x) for x in st["looks"][c]], cfg.stream_alpha)
                    if st["kind"] == "null" and e is not None:
                        ev.setdefault(st["d"], []).append(e)
                print(
                    f"   in-distribution streams whose evidence reached p_k <= {cfg.stream_alpha:g}/(k(k+1)): "
                    f"{sum(map(len, ev.values()))} of {scores[c][seed]['n_null']}; deployment: rows {ev}",
                    flush=True,
                )
    if s15:
        summary_s15(args, scores)
        return
    print("\nsummary over trainings:")
    eligible = {}
    for c in CANDIDATES:
        fa = [table[c][s][0] for s in args.train_seeds]
        det = [table[c][s][1] for s in args.train_seeds]
        ok = max(fa) <= 0.05
        print(
            f"[{c}] in-distribution alarm per training {', '.join(f'{x:.1%}' for x in fa)} (max {max(fa):.1%}; "
            f"eligible: {ok}); detection within {TEST_ROWS} per training {', '.join(f'{x:.1%}' for x in det)} "
            f"(worst {min(det):.1%}, spread {max(det) - min(det):.1%})"
        )
        if ok:
            eligible[c] = min(det)
    if args.half == "report":
        print(
            "report half: measured once; the choice was made on the development half (no rule applied here)"
        )
    elif eligible:
        best = max(eligible.values())
        chosen = CANDIDATES[0] if eligible.get(CANDIDATES[0]) == best else max(eligible, key=eligible.get)
        print(f"chosen by the declared rule: stream_look_test {chosen} (worst-training detection {best:.1%})")
    else:
        print(f"no candidate eligible: the shipped default ({CANDIDATES[0]}) stays")


if __name__ == "__main__":
    main()
