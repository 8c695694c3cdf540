"""Issue 19: the training-rows reference with more in-distribution windows per deployment (rule T21).

Declared in docs/monitor_decisions.md ("The training rows with more in-distribution windows per deployment (session 21,
rule T21)") before any run on the report trainings 27 and 28. Rule T20 (``tune_monitor_train_ref_t20.py``) found
the union of the held-out domain test and the training-rows test (``train_reference_rows: 2000``, share 0.5)
cut the development test windows unflagged and off from 45 to 3 of 1,200, and lost eligibility by one window of
20 in one deployment. This script scores T20's candidates on 60 in-distribution windows per deployment: T20's
protocol plus ``EXTRA`` in-distribution streams drawn after the test orders (``tune_monitor_test_windows``'s
``--extra-null-streams``), so every earlier stream is T20's. On development trainings T20's saved sets are
reused and only the extra streams are measured (``--extra-only``); the report trainings are measured whole.

Measure: ``--nets /tmp/nets --train-seeds 20 --first-draw 1000 --save /tmp/trainref21/dev --extra-only``;
score: ``--saved /tmp/trainref21/dev/*.json --base /tmp/trainref20/dev /tmp/trainref20/report`` (development
choice) or ``--saved ... --report`` (clause 3).

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_train_ref_t21.py --saved /tmp/trainref21/dev/*.json
--base /tmp/trainref20/dev /tmp/trainref20/report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

RULE_T21 = (
    "rule t21 (declared in docs/monitor_decisions.md before any run on the report trainings 27, 28): every candidate "
    "scores the same windows (monitor runs with train_reference_rows 2000; per deployment 6 in-distribution "
    "streams of 2000, 60 windows, and 10 test orders of 600); 1. eligible when (a) in every development set <= "
    "10% of in-distribution windows are flagged or no more than under the shipped defaults in that set, and (b) "
    "summed over the sets, no more deployments are above the line (> 10% of their 60 in-distribution windows "
    "flagged) than under the shipped defaults, where a candidate's deployment above the line with at most one "
    "window more than the shipped defaults there is counted as the shipped defaults count it; 2. among "
    "eligible candidates, lexicographically: (a) fewest test windows unflagged and off by > 0.03 (summed), "
    "(b) fewest near misses, (c) fewest in-distribution windows flagged; a tie keeps the shipped defaults; "
    "3. the development choice is committed before the report run; it replaces the default only if on the "
    "report trainings (27, 28; deployments 1600-1607; a training with fewer than 3 finished deployments left "
    "out) pooled it is eligible by 1(a) and 1(b) against the shipped defaults and leaves fewer test windows "
    "unflagged and off than they do on the same windows"
)
AMENDMENT_T21A = (
    "amendment t21a (declared after 2 of the development sets were scored, t20 1000-1007 and t22 1300-1307, before "
    "the others were read and before any run on trainings 27, 28): clause 1(a) reads: in every set <= 10% of "
    "in-distribution windows flagged, or no more than under the shipped defaults there plus one window per "
    "deployment of the set; clauses 1(b), 2, 3 unchanged (3 with the amended 1(a)); both verdicts are printed, "
    "the amended rule's choice is the development choice"
)
EXTRA = 4
"""In-distribution streams per deployment beyond T20's two (6 in all: 60 windows of 200)."""
BASE_NULL = 2
"""T20's in-distribution streams per deployment (``--null-streams``)."""


def per_deployment(streams: list[dict[str, Any]], cand: dict[str, Any], alpha: float, delta: float) -> dict:
    """In-distribution windows flagged per deployment under ``cand``: {d: (flagged, windows)}."""
    from tune_monitor_train_ref_t20 import margins_t20

    out: dict[int, list[int]] = {}
    for st in streams:
        if st["kind"] != "null":
            continue
        c = out.setdefault(st["d"], [0, 0])
        for i in range(len(st["windows"])):
            c[0] += min(margins_t20(st, i, cand, alpha, delta).values()) <= 1.0
            c[1] += 1
    return {d: (f, n) for d, (f, n) in out.items()}


def above_line(cand: dict[int, tuple[int, int]], ship: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """Deployments above the line (> 10 % flagged) under a candidate as rule T21's 1(b) counts them (a deployment
    above the line with at most one window more than shipped counts as shipped counts it), and as plain counts."""
    from tune_monitor_test_windows import FLAG_TARGET

    counted = plain = 0
    for d, (f, n) in cand.items():
        fs = ship[d][0]
        over = f > FLAG_TARGET * n
        plain += over
        counted += (fs > FLAG_TARGET * n) if over and f <= fs + 1 else over
    return counted, plain


def merge(extra_file: str, bases: list[str]) -> tuple[str, list[dict[str, Any]]] | None:
    """One development set: T20's saved streams of the deployments whose extra streams finished, with those
    extra streams; each deployment's first in-distribution window evaluated again must equal the saved one."""
    data = json.loads(Path(extra_file).read_text())
    s = data["settings"]
    name = f"t{s['seed']}_{s['half']}_{s['first_draw']}.json"
    found = [Path(b) / name for b in bases if (Path(b) / name).is_file()]
    if not found:
        raise SystemExit(f"{extra_file}: no T20 set {name} under --base {' '.join(bases)}")
    base = json.loads(found[0].read_text())
    keep = ("extra_null_streams", "extra_only")
    if {k: v for k, v in s.items() if k not in keep} != base["settings"]:
        raise SystemExit(f"{extra_file}: settings differ from {found[0]}'s: {s} against {base['settings']}")
    extra = [st for st in data["streams"] if st["kind"] == "null"]
    done = sorted({st["d"] for st in extra if sum(x["d"] == st["d"] for x in extra) == EXTRA})
    checks = {st["d"]: st["windows"][0] for st in data["streams"] if st["kind"] == "check"}
    first = {st["d"]: st["windows"][0] for st in base["streams"] if st["kind"] == "null" and st["o"] == 0}
    equal = sum(checks[d] == first[d] for d in done)
    label = f"t{s['seed']} {s['half']} {s['first_draw']}"
    print(
        f"  [{label}] {len(done)} deployments with their {EXTRA} extra in-distribution streams (of "
        f"{len({st['d'] for st in base['streams']})} in {found[0]}); first in-distribution window evaluated again "
        f"equals the saved one in {equal} of {len(done)}"
    )
    if equal != len(done):
        raise SystemExit(f"{extra_file}: the extra streams were not drawn after T20's (check windows differ)")
    if len(done) < 3:
        print(f"  [{label}]: fewer than 3 deployments finished: left out (declared)")
        return None
    streams = [st for st in base["streams"] if st["d"] in done] + [st for st in extra if st["d"] in done]
    return label, streams


def full_set(f: str) -> tuple[str, list[dict[str, Any]]] | None:
    """A report set measured whole (6 in-distribution streams per deployment)."""
    data = json.loads(Path(f).read_text())
    s = data["settings"]
    if s.get("extra_only") or s.get("extra_null_streams") != EXTRA or s.get("train_reference_rows") != 2000:
        raise SystemExit(
            f"{f}: not a whole set with {EXTRA} extra streams and train_reference_rows 2000: {s}"
        )
    nulls = [st for st in data["streams"] if st["kind"] == "null"]
    done = sorted({st["d"] for st in nulls if sum(x["d"] == st["d"] for x in nulls) == BASE_NULL + EXTRA})
    label = f"t{s['seed']} {s['half']} {s['first_draw']}"
    print(
        f"  [{label}] {len(done)} deployments finished with {BASE_NULL + EXTRA} in-distribution streams each"
    )
    if len(done) < 3:
        print(f"  [{label}]: fewer than 3 deployments finished: left out (declared)")
        return None
    return label, [st for st in data["streams"] if st["d"] in done]


def clause_1a(s: dict[str, Any], b: dict[str, Any], amended: bool) -> bool:
    """Clause 1(a) in one set for a candidate's score ``s`` against shipped's ``b``: at most 10 % of in-distribution
    windows flagged, or no more than shipped (amendment T21a: plus one window per deployment of the set)."""
    from tune_monitor_test_windows import FLAG_TARGET

    if s["in_flagged"] <= FLAG_TARGET:
        return True
    allowance = s["deployments"] if amended else 0
    return round(s["in_flagged"] * s["n_in"]) <= round(b["in_flagged"] * b["n_in"]) + allowance


def summarize(
    sets: list[tuple[str, list[dict[str, Any]]]],
    scores: dict[str, list[dict[str, Any]]],
    alpha: float,
    delta: float,
) -> tuple[dict[str, tuple[int, int, int]], dict[str, bool], dict[str, bool]]:
    """Each candidate's line over the sets, its clause-2 key and its clause-1 eligibility (amendment T21a's and
    rule T21's as declared)."""
    from tune_monitor_test_windows import FLAG_TARGET, TOLERANCE, candidate_key
    from tune_monitor_train_ref_t20 import CANDIDATES, SHIPPED

    per = {c: [per_deployment(st, CANDIDATES[c], alpha, delta) for _, st in sets] for c in CANDIDATES}
    base_over = sum(above_line(p, p)[0] for p in per[SHIPPED])
    keys, ok, declared = {}, {}, {}
    for c, sc in scores.items():
        counted = [above_line(p, b) for p, b in zip(per[c], per[SHIPPED], strict=True)]
        over = sum(x[0] for x in counted)
        pairs = list(zip(sc, scores[SHIPPED], strict=True))
        declared[c] = all(clause_1a(s, b, amended=False) for s, b in pairs) and over <= base_over
        ok[c] = all(clause_1a(s, b, amended=True) for s, b in pairs) and over <= base_over
        keys[c] = candidate_key(sc)
        rates = ", ".join(f"{s['in_flagged']:.1%}" for s in sc)
        print(
            f"[{c}] in-distribution windows flagged per set {rates}; "
            f"deployments above the line as 1(b) counts them {over} (plain {sum(x[1] for x in counted)}; "
            f"{SHIPPED} {base_over}); eligible: {ok[c]} (as declared, before T21a: {declared[c]}); test windows "
            f"unflagged and off by > {TOLERANCE}: "
            f"{', '.join(str(s['test_off']) for s in sc)} (total {keys[c][0]} of {sum(s['n_test'] for s in sc)}); "
            f"near misses {keys[c][1]}; in-distribution windows flagged {keys[c][2]} of "
            f"{sum(s['n_in'] for s in sc)}"
        )
    for (name, _), ps, pc in zip(sets, per[SHIPPED], per[f"{SHIPPED}+train_reference_2000"], strict=True):
        moved = [
            f"d{d} {ps[d][0]}->{pc[d][0]} of {ps[d][1]}"
            for d in sorted(ps)
            if ps[d] != pc[d] or ps[d][0] > FLAG_TARGET * ps[d][1]
        ]
        print(
            f"  [{name}] in-distribution windows flagged, {SHIPPED} -> union 0.5: {'; '.join(moved) or 'none'}"
        )
    return keys, ok, declared


def main() -> None:
    from tune_monitor_test_windows import (
        print_choice,
        print_report_clause,
        print_run_header,
        protocol_arguments,
        protocol_key,
        require_score_or_measure,
        saved_set_arguments,
        saved_streams,
        score_sets,
    )
    from tune_monitor_train_ref_t20 import CANDIDATES, SHIPPED, TRAIN_ROWS, agreement, score

    ap = argparse.ArgumentParser()
    saved_set_arguments(
        ap, "saved sets of this script's runs", "measure: folder of the trainings' workdirs t<seed>"
    )
    ap.add_argument("--base", nargs="+", default=None, help="folders of T20's saved sets (development)")
    ap.add_argument("--extra-only", action="store_true", help="measure only the extra streams (development)")
    ap.add_argument("--report", action="store_true", help="the --saved sets are the report, measured whole")
    protocol_arguments(ap, [27, 28], "report", 1600, 8)
    args = ap.parse_args()
    require_score_or_measure(ap, args)
    if args.saved and not args.report and not args.base:
        ap.error("development scoring needs --base (T20's saved sets)")
    if args.null_streams != BASE_NULL:
        ap.error(
            f"--null-streams must be {BASE_NULL} (T20's protocol; the extra streams come after the test orders)"
        )
    args.train_reference_rows = TRAIN_ROWS
    args.extra_null_streams = EXTRA

    from bench_monitor_defaults import before_t21, shipped

    cfg = before_t21()

    # the candidates are declared against main's defaults at the declaration
    assert CANDIDATES[SHIPPED] == shipped(cfg), "main's monitor defaults changed since rule T21 was declared"
    alpha, delta = cfg.stream_alpha, cfg.stream_delta
    print(RULE_T21)
    print(AMENDMENT_T21A)
    mode = "measure" if args.nets else "report" if args.report else "development"
    print_run_header(mode, list(CANDIDATES), SHIPPED)
    if args.nets:
        print(
            f"== trainings {args.train_seeds}, {args.half} half, deployments {args.first_draw}.."
            f"{args.first_draw + args.draws - 1} ({args.pool} held-out rows each, train_reference_rows "
            f"{TRAIN_ROWS}); per deployment {BASE_NULL} + {EXTRA} in-distribution streams of 2000 (the {EXTRA} "
            f"after the test orders) and {args.orders} test-distribution streams of 600; "
            f"{'only the extra streams measured; ' if args.extra_only else ''}stop at {args.stop_at or 'none'} UTC ==",
            flush=True,
        )
        for seed in args.train_seeds:
            saved_streams(args, seed, protocol_key(args, seed), ignore=("draws",))
        return
    sets = []
    for f in args.saved:
        one = full_set(f) if args.report else merge(f, args.base)
        if one is not None:
            sets.append(one)
    for name, streams in sets:
        eq, n = agreement(streams, alpha, delta)
        print(
            f"  [{name}] the replayed union (share 0.5) equals the run's own domain flag in {eq} of {n} windows"
        )
    scores = score_sets(sets, CANDIDATES, score, alpha, delta, None, True)
    print(f"\nsummary over {len(sets)} sets ({', '.join(n for n, _ in sets)}):")
    keys, ok, declared = summarize(sets, scores, alpha, delta)
    if args.report:
        print_report_clause("report (rule t21 with amendment t21a, clause 3)", keys, ok, SHIPPED)
        print_report_clause("report (rule t21 as declared, clause 3; read-out)", keys, declared, SHIPPED)
        return
    print_choice("by rule t21 as declared, before amendment t21a (read-out)", keys, declared, SHIPPED)
    print_choice("development choice by rule t21 with amendment t21a", keys, ok, SHIPPED)


if __name__ == "__main__":
    main()
