"""Issue 19 (session 19, rule S19): how the reference stream test should spend its alpha over the looks.

The stream alarm (``closedloop.monitoring.stream_reference``) raises at look ``k`` (``200 k`` rows) when the
look's exact mean-shift p-value ``p_k <= stream_alpha * stream_delta * w_k``; the shipped shares are
``w_k = 1 / (k (k + 1))`` (``harmonic``: 0.5, 0.167, 0.083 at rows 200, 400, 600). Any shares that sum to at
most 1 keep the stated guarantee (the union bound over runs, Markov's inequality per deployment), so the
candidates (``stream_reference.SPENDINGS``) only move alpha between looks.

Measurement (replayed from the model's outputs, as ``tune_monitor_stream_look.py``; the deployments are
drawn by its ``deployment_draws``): per training (``--train-seeds``, workdirs ``--nets``/t<seed>) and
deployment (``--first-draw ..``, 262 unseen images as held-out rows, the monitor stage's defaults),
``--null-streams`` unseen in-distribution streams of 2,000 rows and ``--orders`` test-distribution streams
of 600 (three windows of 200 from ``--half`` of the test split, each without repeats). Every look records
its mean-shift p-value (relabellings enough for a quarter of the shipped level, ``RESOLUTION``, so every
candidate's threshold is reachable; stopped early by Besag and Clifford's rule) and the classifier's.
Each candidate is then scored on the same looks of the same rows.

``--diagnose`` prints what the test streams' looks reach by 600 rows and how much of the stream alpha the
in-distribution streams spend (the level each needs to alarm). The rule (``RULE_S19``, printed first) is
declared in docs/monitor_decisions.md ("session 19, rule S19") before any run on the report trainings.

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_stream_spending.py --nets /tmp/nets \
  --train-seeds 15 --half dev --first-draw 1120 --draws 10 --save /tmp/stream19/dev
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

NULL_ROWS = 2000
LATE_SWITCH = 600
"""``--late``: the in-distribution rows before the test distribution starts (the issue's horizon)."""
TEST_ROWS = 600
RESOLUTION = 0.25
"""Each look gets relabellings enough for ``RESOLUTION`` times the shipped share (its smallest p-value half of
that threshold), so candidates with a smaller share at a look are still scored exactly."""
RULE_S19 = (
    "rule S19 (declared in docs/monitor_decisions.md before any run on trainings 17 and 18): candidates stream_spending "
    "harmonic (shipped), geometric, first3_even, first3_late; 1. eligible when in EVERY development training "
    "(a) its unseen in-distribution 2,000-row streams alarm in <= 5% of runs and (b) >= 90% of the deployments "
    "have none of their in-distribution streams alarmed (the per-deployment guarantee: a deployment with one "
    "alarm of 4 streams measures 25% > 5%); 2. among eligible candidates the highest LOWEST per-training share "
    "of test-distribution orders alarming within 600 rows wins; a tie goes to the higher lowest share within "
    "200 rows, then to harmonic; 3. the development choice (committed before the report run) replaces harmonic "
    "only if on the report trainings 17 and 18 it is eligible by 1(a) and 1(b) in both, its lowest per-training "
    "share within 600 rows is higher than harmonic's on the same orders, and it is lower than harmonic's in "
    "neither training; otherwise harmonic stays"
)


def resolution_permutations(level: float, k: int) -> int:
    """Relabellings of look ``k``: the smallest p-value is half of ``level * RESOLUTION / (k (k + 1))``."""
    from closedloop.monitoring.domain import PERMUTATIONS

    return max(PERMUTATIONS, int(np.ceil(2.0 * k * (k + 1) / (level * RESOLUTION))) - 1)


def replay_looks(
    profile: Any, rows: Any, seed: list[int], level: float, stop: Any = None
) -> list[tuple[int, float, float]]:
    """Feed ``rows`` 200 at a time to the profile's reference stream test; each look's (rows so far,
    mean-shift p-value, classifier p-value), the mean-shift test with ``resolution_permutations``;
    ``stop(looks)``: stop feeding once it is true."""
    from closedloop.monitoring.domain import domain_check
    from closedloop.monitoring.stream_reference import STOP_AFTER, new_stream_test

    test = new_stream_test(profile, seed=seed)
    out: list[tuple[int, float, float]] = []

    def look() -> None:  # the shipped look, with this script's relabellings and no stop after an alarm
        test.looks += 1
        test._looked_at = test.n
        b = resolution_permutations(level, test.looks)
        check, _ = domain_check(
            test.reference, test._kept, test.problem_type, test.rng, permutations=b, stop_after=STOP_AFTER
        )
        out.append((test.n, float(check.p_value), float(check.p_classifier)))

    test._look = look
    for start in range(0, len(rows), 200):
        test.update(rows.take(np.arange(start, min(len(rows), start + 200))))
        if stop is not None and stop(out):
            break
    return out


def late_training(args: argparse.Namespace, seed: int, level: float) -> list[dict[str, Any]]:
    """``--late N``: per deployment N streams of ``LATE_SWITCH`` unseen in-distribution rows, then
    test-distribution rows (windows of 200 from the half, each without repeats) up to ``NULL_ROWS``; every look's
    p-value until every candidate has alarmed (a shift that starts after the issue's 600-row horizon)."""
    from tune_monitor_stream_look import deployment_draws

    from closedloop.monitoring.drift import Sample
    from closedloop.monitoring.stream_reference import SPENDINGS, spend
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    cfg = BuildMonitorProfileConfig(window_sizes=[200])
    tr = deployment_draws(args, seed, cfg)
    shares = {c: [spend(k, c) for k in range(1, 11)] for c in SPENDINGS}

    def cat(a: Any, b: Any) -> Any:
        return None if a is None or b is None else np.concatenate([a, b])

    def every_alarm(looks: list) -> bool:
        return all(alarm_row(looks, level, shares[c]) is not None for c in SPENDINGS)

    out: list[dict[str, Any]] = []
    for dr in tr.draws:
        for o in range(args.late):
            rng = np.random.default_rng([19, dr.d, 4, o])
            head = dr.full.take(rng.choice(dr.rest, LATE_SWITCH, replace=False))
            n_tail = (NULL_ROWS - LATE_SWITCH) // 200
            pick = np.concatenate([rng.choice(len(tr.Xt), 200, replace=False) for _ in range(n_tail)])
            tail = dr.tsample.take(pick)
            rows = Sample(
                features=np.concatenate([head.features, tail.features]),
                embeddings=cat(head.embeddings, tail.embeddings),
                proba=cat(head.proba, tail.proba),
            )
            out.append({"d": dr.d, "looks": replay_looks(dr.profile, rows, [dr.d, 4, o], level, every_alarm)})
        print(f"  t{seed} draw {dr.d} (late): {time.time() - tr.t0:.0f} s", flush=True)
    return out


def late_lines(seed: int, late: list[dict[str, Any]], level: float) -> None:
    """Each candidate's alarm row on the streams whose shift starts after ``LATE_SWITCH`` rows."""
    from closedloop.monitoring.stream_reference import SPENDINGS, spend

    for c in SPENDINGS:
        shares = [spend(k, c) for k in range(1, 11)]
        rows = [alarm_row(st["looks"], level, shares) for st in late]
        before = sum(r is not None and r <= LATE_SWITCH for r in rows)
        after = [r - LATE_SWITCH for r in rows if r is not None and r > LATE_SWITCH]
        print(
            f"[t{seed} {c} late shift] {len(rows)} streams ({LATE_SWITCH} in-distribution rows, then the test "
            f"distribution): alarm before the switch {before}; within 600 rows after it {sum(a <= 600 for a in after)}, "
            f"by row {NULL_ROWS} {len(after)}; rows after the switch median "
            f"{np.median(after) if after else float('nan'):.0f}, each: {sorted(after)}"
        )


def alarm_row(looks: list, level: float, shares: list[float], column: int = 1) -> int | None:
    """The row of the first look with ``p_k <= level * shares[k-1]`` (None: no alarm)."""
    for k, look in enumerate(looks, start=1):
        if look[column] <= level * shares[k - 1]:
            return int(look[0])
    return None


def needed(looks: list, shares: list[float], upto: int | None = None) -> float:
    """The smallest stream level at which these looks alarm (min over looks of ``p_k / w_k``)."""
    return min(
        look[1] / shares[k - 1] for k, look in enumerate(looks, start=1) if upto is None or look[0] <= upto
    )


def one_training(args: argparse.Namespace, seed: int, level: float) -> dict[str, Any]:
    from tune_monitor_stream_look import deployment_draws

    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    cfg = BuildMonitorProfileConfig(window_sizes=[200])
    tr = deployment_draws(args, seed, cfg)
    res: dict[str, Any] = {"null": [], "test": []}
    for dr in tr.draws:
        for o in range(args.null_streams):
            idx = dr.srng.choice(dr.rest, NULL_ROWS, replace=False)
            res["null"].append(
                {"d": dr.d, "looks": replay_looks(dr.profile, dr.full.take(idx), [dr.d, 1, o], level)}
            )
        for o in range(args.orders):
            idx = np.concatenate([dr.srng.choice(len(tr.Xt), 200, replace=False) for _ in range(3)])
            res["test"].append(
                {"d": dr.d, "looks": replay_looks(dr.profile, dr.tsample.take(idx), [dr.d, 2, o], level)}
            )
        print(f"  t{seed} draw {dr.d}: {time.time() - tr.t0:.0f} s", flush=True)
    print(
        f"  t{seed}: model {tr.run.name}, {len(tr.yu)} unseen images; {time.time() - tr.t0:.0f} s", flush=True
    )
    return res


def score(res: dict[str, Any], name: str, level: float, looks_max: int = 10) -> dict[str, Any]:
    """One candidate in one training: in-distribution alarms (pooled, per deployment) and detection."""
    from closedloop.monitoring.stream_reference import spend

    shares = [spend(k, name) for k in range(1, looks_max + 1)]
    per_dep: dict[int, list[bool]] = {}
    for st in res["null"]:
        per_dep.setdefault(st["d"], []).append(alarm_row(st["looks"], level, shares) is not None)
    rows = [alarm_row(st["looks"], level, shares) for st in res["test"]]
    null = [a for v in per_dep.values() for a in v]
    at = [r for r in rows if r is not None]
    return {
        "null_alarm": float(np.mean(null)),
        "n_null": len(null),
        "deployments": len(per_dep),
        "deps_clean": float(np.mean([not any(v) for v in per_dep.values()])),
        "within600": float(np.mean([r is not None and r <= TEST_ROWS for r in rows])),
        "within200": float(np.mean([r is not None and r <= 200 for r in rows])),
        "orders": len(rows),
        "median_row": float(np.median(at)) if at else float("nan"),
    }


def diagnose(seed: int, res: dict[str, Any], level: float) -> None:
    """What the test streams' looks reach by 600 rows; how much alpha the in-distribution streams spend."""
    from closedloop.monitoring.stream_reference import spend

    shipped = [spend(k, "harmonic") for k in range(1, 11)]
    p = np.array([[lk[1] for lk in st["looks"][:3]] for st in res["test"]])
    pc = np.array([[lk[2] for lk in st["looks"][:3]] for st in res["test"]])
    need = np.array([needed(st["looks"], shipped, TEST_ROWS) for st in res["test"]])
    q = (0.1, 0.25, 0.5)
    print(
        f"[t{seed} diagnosis] test orders {len(p)}: mean-shift p at rows 200/400/600, quantiles {q}: "
        + "; ".join(
            f"row {200 * (k + 1)} " + ", ".join(f"{np.quantile(p[:, k], x):.2g}" for x in q) for k in range(3)
        )
        + f"; classifier p at 600 median {np.median(pc[:, 2]):.2g}"
    )
    print(
        f"[t{seed} diagnosis] level each test order needs to alarm by 600 rows under harmonic shares "
        f"(min_k p_k/w_k): share <= {level:g} {np.mean(need <= level):.1%}, <= {2 * level:g} {np.mean(need <= 2 * level):.1%}, "
        f"<= {4 * level:g} {np.mean(need <= 4 * level):.1%}; missed orders' p at 200/400/600: "
        + ", ".join("/".join(f"{x:.2g}" for x in row) for row, n in zip(p, need, strict=True) if n > level)
    )
    # per look, which look would have been the first to reach the shipped level with a share of 1
    best_k = np.argmin(p / np.array([shipped[:3]]), axis=1) + 1
    print(
        f"[t{seed} diagnosis] the look where p_k/w_k is smallest (harmonic): "
        + ", ".join(f"look {k} {np.mean(best_k == k):.0%}" for k in (1, 2, 3))
    )
    nn = np.array([needed(st["looks"], shipped) for st in res["null"]])
    pmin = np.array([min(lk[1] for lk in st["looks"]) for st in res["null"]])
    print(
        f"[t{seed} diagnosis] in-distribution streams {len(nn)}: level needed to alarm (min_k p_k/w_k over 10 looks) "
        f"quantiles 1/5/10/50%: {', '.join(f'{np.quantile(nn, x):.3g}' for x in (0.01, 0.05, 0.1, 0.5))}; "
        f"<= {level:g}: {int(np.sum(nn <= level))}, <= {10 * level:g}: {int(np.sum(nn <= 10 * level))}; "
        f"smallest look p min {pmin.min():.2g}, 5% {np.quantile(pmin, 0.05):.2g}; smallest p at looks 1-3: "
        f"{min(lk[1] for st in res['null'] for lk in st['looks'][:3]):.2g}"
    )


def choose(scores: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    """RULE_S19's 1 and 2 over ``seeds``: each candidate's eligibility and key, and the choice."""
    out: dict[str, Any] = {"eligible": {}, "key": {}}
    for c, per in scores.items():
        sc = [per[s] for s in seeds]
        out["eligible"][c] = all(s["null_alarm"] <= 0.05 and s["deps_clean"] >= 0.9 for s in sc)
        out["key"][c] = (min(s["within600"] for s in sc), min(s["within200"] for s in sc))
    ok = [c for c in scores if out["eligible"][c]]
    best = max((out["key"][c] for c in ok), default=None)
    # a tie on both keys goes to harmonic (the shipped default), else to the first candidate listed
    tied = [c for c in ok if out["key"][c] == best]
    out["chosen"] = "harmonic" if not ok or "harmonic" in tied else tied[0]
    return out


def adopted(scores: dict[str, dict[int, dict[str, Any]]], seeds: list[int], chosen: str) -> bool:
    """RULE_S19's 3 on the report trainings: eligible, better than harmonic at its lowest, lower in none."""
    if chosen == "harmonic":
        return False
    ch = choose({c: scores[c] for c in ("harmonic", chosen)}, seeds)
    mine, ship = scores[chosen], scores["harmonic"]
    return (
        ch["eligible"][chosen]
        and ch["key"][chosen][0] > ch["key"]["harmonic"][0]
        and all(mine[s]["within600"] >= ship[s]["within600"] for s in seeds)
    )


def main() -> None:
    from closedloop.monitoring.stream_reference import SPENDINGS
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--nets", required=True, help="folder of the trainings' workdirs t<seed> (outside the repo)"
    )
    ap.add_argument("--train-seeds", type=int, nargs="+", required=True)
    ap.add_argument("--remove", type=int, default=2500)
    ap.add_argument("--half", choices=["dev", "report"], default="dev")
    ap.add_argument("--first-draw", type=int, default=1120)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--pool", type=int, default=262)
    ap.add_argument("--null-streams", type=int, default=4)
    ap.add_argument("--orders", type=int, default=6)
    ap.add_argument("--stop-at", default=None, help="HH:MM UTC: start no deployment after this (declared)")
    ap.add_argument(
        "--save", default=None, help="folder (outside the repo) for each training's looks; read back"
    )
    ap.add_argument("--diagnose", action="store_true")
    ap.add_argument(
        "--late",
        type=int,
        default=0,
        help="diagnosis only: N streams per deployment whose shift starts after 600 rows",
    )
    ap.add_argument(
        "--rule", action="store_true", help="apply RULE_S19 over the trainings (development half)"
    )
    ap.add_argument(
        "--chosen", default=None, help="report trainings: the development choice, tested by clause 3"
    )
    args = ap.parse_args()

    cfg = BuildMonitorProfileConfig()
    assert cfg.stream_delta is not None
    level = cfg.stream_alpha * cfg.stream_delta
    print(RULE_S19)
    print(
        f"== spendings {', '.join(SPENDINGS)}; trainings {args.train_seeds}; deployments {args.first_draw}.."
        f"{args.first_draw + args.draws - 1} ({args.pool} held-out rows each); per deployment {args.null_streams} "
        f"in-distribution streams of {NULL_ROWS} and {args.orders} test-distribution streams of {TEST_ROWS} "
        f"({args.half} half); a look every {cfg.stream_look} rows ({cfg.stream_look_test}), alarm at "
        f"p_k <= {level:g} * w_k; stop at {args.stop_at or 'none'} UTC ==",
        flush=True,
    )
    scores: dict[str, dict[int, dict[str, Any]]] = {c: {} for c in SPENDINGS}
    for seed in args.train_seeds:
        key = {
            k: v
            for k, v in vars(args).items()
            if k not in ("train_seeds", "save", "stop_at", "diagnose", "rule", "chosen", "late")
        }
        saved = Path(args.save) / f"t{seed}_{args.half}_{args.first_draw}.json" if args.save else None
        old = json.loads(saved.read_text()) if saved is not None and saved.is_file() else None
        if old is not None and {k: v for k, v in old["settings"].items() if k != "draws"} == {
            k: v for k, v in key.items() if k != "draws"
        }:
            res = old["results"]
            print(f"  t{seed}: read back from {saved}")
        else:
            res = one_training(args, seed, level)
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps({"settings": key, "results": res}))
        if args.diagnose:
            diagnose(seed, res, level)
        if args.late:
            late_file = saved.with_name(saved.stem + "_late.json") if saved is not None else None
            if late_file is not None and late_file.is_file():
                late = json.loads(late_file.read_text())
            else:
                late = late_training(args, seed, level)
                if late_file is not None:
                    late_file.write_text(json.dumps(late))
            late_lines(seed, late, level)
        for c in SPENDINGS:
            s = scores[c][seed] = score(res, c, level)
            print(
                f"[t{seed} {c}] in-distribution streams of {NULL_ROWS}: alarm in {s['null_alarm']:.1%} of {s['n_null']}, "
                f"deployments with none {s['deps_clean']:.0%} of {s['deployments']}; test orders within 600 rows "
                f"{s['within600']:.1%}, within 200 {s['within200']:.1%} of {s['orders']}, median row {s['median_row']:.0f}",
                flush=True,
            )
    if args.rule or args.chosen:
        ch = choose(scores, args.train_seeds)
        for c in SPENDINGS:
            per = [scores[c][s] for s in args.train_seeds]

            def each(field: str, fmt: str = "{:.1%}", per: list = per) -> str:
                return ", ".join(fmt.format(s[field]) for s in per)

            print(
                f"[{c}] in-distribution alarm per training {each('null_alarm')}; deployments with none "
                f"{each('deps_clean', '{:.0%}')}; eligible: {ch['eligible'][c]}; within 600 per training "
                f"{each('within600')} (lowest {ch['key'][c][0]:.1%}); within 200 {each('within200')} "
                f"(lowest {ch['key'][c][1]:.1%})"
            )
        if args.rule:
            print(f"development choice by rule S19: {ch['chosen']}")
    if args.chosen:
        ok = adopted(scores, args.train_seeds, args.chosen)
        print(
            f"report (rule S19, clause 3): the development choice {args.chosen} "
            + ("replaces harmonic as the default" if ok else "does not replace harmonic; harmonic stays")
        )


if __name__ == "__main__":
    main()
