"""Issue 19, session 14: protocol v4, the training-rows union chosen over several trainings.

Protocol v3 (session 13) found that the reliability flag's training-rows union (``train_reference_rows``)
flags the leaning deployments' test windows but its domain part flagged more than 5 % of a random
deployment's in-distribution windows in 2 of 17 (1,000 rows) and 6 of 17 (2,000 rows) deployments.
``diagnose_monitor_union.py`` measures why (docs/monitor_decisions.md, "Why the training-rows union over-flags"):
the training-rows test is exact only over the draw of the training set, which every deployment of one
model shares, and v3 judged each deployment on 14 windows (one flagged window put it above 5 %).

Protocol v4 (declared in docs/monitor_decisions.md, "Protocol v4", and printed, ``RULE_V4``) scores the candidates
``CANDIDATES_V4`` (``train_reference_rows`` with ``train_reference_share``, the test's share of the domain
level) on **three trainings**, each with its own removed-image draw, from the records that
``tune_monitor_deployments.py --protocol v4 --save FILE`` writes (one file per training; v3's random and
leaning deployments, plus ``--domain-windows`` windows per random deployment scored by the domain part only).

Runs (session 14, estimate5; docs/results/monitor_union_v4_dev.txt, monitor_union_v4_fresh.txt):
  for t in 0 1 2: tune_monitor_deployments.py --protocol v4 --half dev --workdir /tmp/nets/t$t --train-seed $t
      --draws 8 --leaning 6 --orders 3 --null-streams 0 --domain-windows 36 --save v4_dev_t$t.pkl
  tune_monitor_union.py --half dev v4_dev_t0.pkl v4_dev_t1.pkl v4_dev_t2.pkl
  for t in 0 1 2: ... --half report --first-draw 200 --draws 6 --orders 3 --null-streams 0 --domain-windows 36
      --flag 0 --estimate heldout_platt --save v4_rep_t$t.pkl
  tune_monitor_union.py --half report --flag ROWS:SHARE v4_rep_t0.pkl v4_rep_t1.pkl v4_rep_t2.pkl
"""

from __future__ import annotations

import argparse
import pickle
from typing import Any

import numpy as np

LEVEL = 0.005
"""The per-deployment domain level (``domain_alpha * domain_delta``) every candidate spends in all."""
TOLERANCE = 0.03
ESTIMATE = "heldout_platt"
"""The shipped estimate (not tuned here)."""
CANDIDATES_V4 = ((0, 0.5), (1000, 0.5), (1000, 0.2), (2000, 0.5), (2000, 0.2))
"""(``train_reference_rows``, ``train_reference_share``); rows 0 is off (the shipped default)."""
RULE_V4 = """Declared rule, protocol v4 (session 14, docs/monitor_decisions.md "Protocol v4", committed before any v4 run):
  three trainings (each its own removed-image draw and pipeline seed); development halves only; per training
  random deployments (held-out rows drawn as before; 14 in-distribution windows the monitor evaluates and 36
  more scored by the domain part only: 50 per deployment) and leaning deployments (v3's stratum, scored on test
  windows only); estimate heldout_platt (the default, not tuned here).
  candidates (train_reference_rows, train_reference_share): (0: off), (1000, 0.5), (1000, 0.2), (2000, 0.5),
  (2000, 0.2); every candidate spends the domain level 0.005 in all.
  1. eligible when IN EVERY TRAINING the random deployments' 14 monitor-evaluated in-distribution windows are
     flagged <= 10% and the domain part flags <= 5% of a random deployment's 50 in-distribution windows in
     >= 90% of that training's random deployments;
  2. among those, lexicographically: (a) the weakest deployment over all trainings: fewest test windows
     unflagged and off by > 0.03 in any one deployment; (b) fewest summed over all trainings; (c) the weakest
     deployment's share of test windows flagged, higher first; (d) fewest in-distribution windows flagged
     (all trainings); (e) off first, then fewer rows, then the larger share. None eligible: off.
  3. report once on deployments no run has drawn (report half, draws 200-205, the same three trainings) with
     the development choice; it becomes the shipped default only if there, in every training, the
     in-distribution windows flagged stay <= 10%, the domain part <= 5% in >= 90% of deployments (50 windows
     each) and the per-window alarm <= 5% in >= 90% of deployments. Earlier rules (v2, v3) were measured on
     the report half (other draws); this run's report deployments are new."""

Row = dict[str, Any]


def domain_flag(rows: int, share: float):
    """The domain part for a candidate, at the levels the monitor computes (``Monitor._evaluate``)."""
    if rows == 0:
        return lambda r: r["p_ms"] <= LEVEL
    level_t = LEVEL * share
    level_h = LEVEL - level_t
    return lambda r: r["p_ms"] <= level_h or r["p_train"][rows] <= level_t


def score_training(rows: list[Row], rows_k: int, share: float) -> dict[str, Any]:
    """One training's figures for one candidate."""
    dom = domain_flag(rows_k, share)
    rand = [r for r in rows if r["stratum"] == "random"]
    inn = [r for r in rand if r["kind"] == "in"]
    domw = [r for r in rand if r["kind"] in ("in", "dom")]
    test = [r for r in rows if r["kind"] == "test"]
    draws_r = sorted({r["draw"] for r in rand})
    draws = sorted({r["draw"] for r in rows})

    def flagged(r: Row) -> bool:
        return r["other"] or dom(r)

    def off(r: Row) -> bool:
        return not flagged(r) and r["err"][ESTIMATE] > TOLERANCE

    def per_draw(rs: list[Row], f) -> np.ndarray:
        return np.array([np.mean([f(r) for r in rs if r["draw"] == d]) for d in draws_r])

    per_dom = per_draw(domw, dom)
    per_dom14 = per_draw(inn, dom)
    off_d = np.array([sum(off(r) for r in test if r["draw"] == d) for d in draws])
    flag_d = np.array([np.mean([flagged(r) for r in test if r["draw"] == d]) for d in draws])
    held = domain_flag(0, 0.5) if rows_k == 0 else (lambda r: r["p_ms"] <= LEVEL * (1 - share))
    return {
        "in_flagged": float(np.mean([flagged(r) for r in inn])),
        "n_in": len(inn),
        "dom_rate": float(np.mean([dom(r) for r in domw])),
        "held_rate": float(np.mean([held(r) for r in domw])),
        "train_rate": float(np.mean([r["p_train"][rows_k] <= LEVEL * share for r in domw]))
        if rows_k
        else 0.0,
        "n_dom": len(domw),
        "domain_ok": float(np.mean(per_dom <= 0.05)),
        "domain_ok14": float(np.mean(per_dom14 <= 0.05)),
        "alarm_ok": float(np.mean(per_draw(inn, lambda r: r["alarm"]) <= 0.05)),
        "n_random": len(draws_r),
        "test_flagged": float(np.mean([flagged(r) for r in test])),
        "off": int(off_d.sum()),
        "weakest_off": int(off_d.max()),
        "weakest_flagged": float(flag_d.min()),
        "n_test": len(test),
        "n_draws": len(draws),
    }


def line(name: str, s: dict[str, Any]) -> str:
    return (
        f"   [{name}] in-distribution flagged {s['in_flagged']:.1%} of {s['n_in']}; domain part per window "
        f"{s['dom_rate']:.2%} of {s['n_dom']} (held-out test {s['held_rate']:.2%}, training-rows test "
        f"{s['train_rate']:.2%}); random deployments with the domain part <= 5% of 50 windows {s['domain_ok']:.0%} "
        f"of {s['n_random']} (of their 14 monitor-evaluated windows, v3's measure: {s['domain_ok14']:.0%}); per-window "
        f"alarm <= 5% {s['alarm_ok']:.0%}; test windows flagged {s['test_flagged']:.1%} (the weakest deployment's "
        f"{s['weakest_flagged']:.1%}); unflagged and off by > {TOLERANCE}: {s['off']} of {s['n_test']} (the weakest "
        f"deployment {s['weakest_off']})"
    )


def name_of(c: tuple[int, float]) -> str:
    return "train_reference_rows 0" if c[0] == 0 else f"train_reference_rows {c[0]}, share {c[1]:g}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("records", nargs="+", help="tune_monitor_deployments.py --protocol v4 --save files")
    ap.add_argument("--half", choices=["dev", "report"], required=True)
    ap.add_argument("--flag", default=None, help="report half: the development choice, ROWS:SHARE")
    args = ap.parse_args()
    print(RULE_V4)
    runs = []
    for path in args.records:
        with open(path, "rb") as fh:
            runs.append(pickle.load(fh))
    halves = {r["half"] for r in runs}
    if halves != {args.half}:
        raise SystemExit(f"records of the {sorted(halves)} half; --half {args.half} expected them all")
    choice = None
    if args.half == "report":
        try:
            k, sh = args.flag.split(":")
            choice = (int(k), float(sh))
        except (AttributeError, ValueError):
            raise SystemExit(f"--half report needs --flag ROWS:SHARE, one of {CANDIDATES_V4}") from None
        if choice not in CANDIDATES_V4:
            raise SystemExit(f"--flag {args.flag}: expected one of {CANDIDATES_V4}")
    print(
        f"== {len(runs)} trainings ("
        + ", ".join(f"seed {r['train_seed']}: model {r['run']}" for r in runs)
        + f"); "
        f"{args.half} half =="
    )
    table: dict[tuple[int, float], list[dict[str, Any]]] = {}
    for c in CANDIDATES_V4:
        table[c] = [score_training(r["rows"], *c) for r in runs]
        print(f"\n {name_of(c)}")
        for r, s in zip(runs, table[c], strict=True):
            print(line(f"training seed {r['train_seed']}", s))
    ok = [c for c, ss in table.items() if all(s["in_flagged"] <= 0.10 and s["domain_ok"] >= 0.90 for s in ss)]

    def key(c: tuple[int, float]) -> tuple[float, ...]:
        ss = table[c]
        n_in = sum(s["n_in"] for s in ss)
        return (
            max(s["weakest_off"] for s in ss),
            sum(s["off"] for s in ss),
            -min(s["weakest_flagged"] for s in ss),
            sum(s["in_flagged"] * s["n_in"] for s in ss) / n_in,
            c[0],
            -c[1],
        )

    print(f"\n eligible (rule 1, every training): {[name_of(c) for c in ok] or 'none'}")
    for c in ok:
        k = key(c)
        print(
            f"   {name_of(c)}: weakest deployment {k[0]:.0f} unflagged and off, summed {k[1]:.0f}, weakest "
            f"deployment's test windows flagged {-k[2]:.1%}, in-distribution flagged {k[3]:.1%}"
        )
    if args.half == "dev":
        chosen = min(ok, key=key) if ok else (0, 0.5)
        print(f" chosen by the declared rule: {name_of(chosen)}")
        return
    assert choice is not None
    ss = table[choice]
    holds = all(s["in_flagged"] <= 0.10 and s["domain_ok"] >= 0.90 and s["alarm_ok"] >= 0.90 for s in ss)
    print(
        f" the development choice, measured once: {name_of(choice)}; rule 3's checks in every training "
        f"{'hold' if holds else 'FAIL'}: shipped default "
        + (f"{name_of(choice)}" if holds and choice[0] else "unchanged (train_reference_rows 0)")
    )


if __name__ == "__main__":
    main()
