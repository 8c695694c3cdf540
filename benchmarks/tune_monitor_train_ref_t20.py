"""Issue 19: the training-rows reference against unlucky held-out draws (rule T20).

Declared in docs/monitor_decisions.md ("The training rows against unlucky held-out draws (session 20, rule T20)") before
any run on the report trainings 25 and 26. Rule W20 found 42 of the 54 test windows the shipped defaults leave
unflagged and off in two deployments (training 20's d1005, training 22's d1306) whose 262 held-out rows leave
the domain check nearly blind; the existing, off-by-default training-rows test (``train_reference_rows``,
``closedloop.monitoring.train_reference``, session 11) caught 27/30 and 28/30 of their test windows one window
at a time. Each candidate (``CANDIDATES``) keeps the shipped flags (``bench_monitor_defaults.shipped``) and,
except ``shipped``, makes the domain flag the union of the held-out test and the training-rows test, the
latter at ``share`` of the domain level and the held-out test at the rest (the monitor's own union).

The windows come from monitor runs with ``train_reference_rows: 2000`` (``tune_monitor_test_windows``'s
protocol, ``--train-reference-rows``): the training-rows test draws from the monitor's generator after the
held-out test, so every other number of a window is the one a run without it gets; ``shipped`` is scored on
the same windows. ``--nets`` measures one training (saved under ``--save``); ``--saved`` scores saved sets:
the development choice, or with ``--report`` clause 3.

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_train_ref_t20.py --saved /tmp/trainref20/dev/*.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

RULE_T20 = (
    "rule t20 (declared in docs/monitor_decisions.md before any run on the report trainings 25, 26): every candidate "
    "scores the same windows (monitor runs with train_reference_rows 2000); 1. eligible when (a) in every "
    "development set <= 10% of in-distribution windows are flagged or no more than under the shipped defaults "
    "in that set, and (b) summed over the sets, no more deployments have > 10% of their in-distribution windows "
    "flagged than under the shipped defaults; 2. among eligible candidates, lexicographically: (a) fewest test "
    "windows unflagged and off by > 0.03 (summed), (b) fewest near misses, (c) fewest in-distribution windows "
    "flagged; a tie keeps the shipped defaults; 3. the development choice is committed before the report run; "
    "it replaces the default only if on the report trainings (25, 26; deployments 1500-1507; a training with "
    "fewer than 3 finished deployments left out) pooled it is eligible by 1(a) and 1(b) against the shipped "
    "defaults and leaves fewer test windows unflagged and off than they do on the same windows"
)
SHIPPED = "shipped"
TRAIN_ROWS = 2000
"""The training rows every run keeps (``train_reference_rows``); the candidates differ in the share."""


def candidates() -> dict[str, dict[str, Any]]:
    """The shipped defaults and the union with the training-rows test at two shares of the domain level."""
    from bench_monitor_defaults import before_t21, shipped

    base = shipped(before_t21())
    return {
        SHIPPED: base,
        f"{SHIPPED}+train_reference_{TRAIN_ROWS}": {**base, "train": 0.5},
        f"{SHIPPED}+train_reference_{TRAIN_ROWS}_share_0.25": {**base, "train": 0.25},
    }


CANDIDATES = candidates()


def margins_t20(
    st: dict[str, Any], i: int, cand: dict[str, Any], alpha: float, delta: float
) -> dict[str, float]:
    """Every evidence of window ``i`` over its level under ``cand``: the shipped defaults' and, with a share,
    the domain flag as the monitor's union (held-out test at ``1 - share`` of the level, or the first window's
    own level, whichever is larger; the training-rows test at ``share`` of it)."""
    from bench_monitor_defaults import margins_shipped

    m = margins_shipped(st, i, cand, alpha, delta)
    share = cand.get("train")
    if share is not None:
        w = st["windows"][i]
        if "train_p" not in w:
            raise ValueError("a saved set without the training-rows test: run with --train-reference-rows")
        level = cand["domain"]
        held = level * (1 - share)
        if i == 0 and cand["first"] is not None:
            held = max(held, cand["first"])
        m["domain"] = w["domain_p"] / held
        m["train"] = w["train_p"] / (level * share)
    return m


def score(streams: list[dict[str, Any]], cand: dict[str, Any], alpha: float, delta: float) -> dict[str, Any]:
    """``tune_monitor_test_windows.score``'s counts with the union domain flag."""
    from tune_monitor_test_windows import score as score_w16

    return score_w16(streams, cand, alpha, delta, margins_of=margins_t20)


def agreement(streams: list[dict[str, Any]], alpha: float, delta: float) -> tuple[int, int]:
    """Windows after a stream's first where the replayed union (share 0.5, the monitor's own setting in these
    runs) flags the domain exactly when the run's own monitor did: (equal, windows). The protocol evaluates each
    window on its own, without the stream, so the monitor's first-window level (0.05) never applies there; the
    replay applies it to each stream's first window, as the monitor does on a stream."""
    cand = CANDIDATES[f"{SHIPPED}+train_reference_{TRAIN_ROWS}"]
    equal = n = 0
    for st in streams:
        for i, w in enumerate(st["windows"]):
            if i == 0:
                continue
            m = margins_t20(st, i, cand, alpha, delta)
            equal += (min(m["domain"], m["train"]) <= 1.0) == ("domain" in w["flags"])
            n += 1
    return equal, n


def misses(name: str, streams: list[dict[str, Any]], alpha: float, delta: float) -> None:
    """Every test window the shipped defaults leave unflagged and off: its held-out and training-rows p-values
    and whether the union (share 0.5) flags it (diagnosis)."""
    from tune_monitor_test_windows import TOLERANCE

    ship, union = CANDIDATES[SHIPPED], CANDIDATES[f"{SHIPPED}+train_reference_{TRAIN_ROWS}"]
    for st in streams:
        for i, w in enumerate(st["windows"]):
            if st["kind"] != "test" or w["err"] <= TOLERANCE:
                continue
            if min(margins_t20(st, i, ship, alpha, delta).values()) <= 1.0:
                continue
            caught = min(margins_t20(st, i, union, alpha, delta).values()) <= 1.0
            print(
                f"  [{name}] d{st['d']} order {st['o']} window {i + 1}: off by {w['err']:.3f}, unflagged by "
                f"{SHIPPED}; held-out domain p {w['domain_p']:.4f}, training-rows p {w['train_p']:.4f}; the union "
                f"(share 0.5) {'flags' if caught else 'does not flag'} it"
            )


def saved_set(f: str) -> tuple[str, list[dict[str, Any]]] | None:
    """One saved set of monitor runs with ``TRAIN_ROWS`` training rows, named as the scores print it; None
    (and said) when fewer than 3 deployments finished (declared by rules T20 and I21)."""
    import json

    data = json.loads(Path(f).read_text())
    s = data["settings"]
    if s.get("train_reference_rows") != TRAIN_ROWS:
        raise SystemExit(
            f"{f}: settings.train_reference_rows is {s.get('train_reference_rows')}, expected {TRAIN_ROWS}"
        )
    if len({st["d"] for st in data["streams"]}) < 3:
        print(f"  t{s['seed']}: fewer than 3 deployments finished: left out (declared)")
        return None
    return f"t{s['seed']} {s['half']} {s['first_draw']}", data["streams"]


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
        summarize_candidates,
    )

    ap = argparse.ArgumentParser()
    saved_set_arguments(
        ap, "saved sets of this script's runs", "measure: folder of the trainings' workdirs t<seed>"
    )
    ap.add_argument("--report", action="store_true", help="the --saved sets are the report: clause 3")
    ap.add_argument("--misses", action="store_true", help="the shipped defaults' misses, each (diagnosis)")
    protocol_arguments(ap, [25, 26], "report", 1500, 8)
    args = ap.parse_args()
    require_score_or_measure(ap, args)
    args.train_reference_rows = TRAIN_ROWS

    from bench_monitor_defaults import before_t21, shipped

    cfg = before_t21()

    # the candidates are declared against main's defaults at the declaration
    assert CANDIDATES[SHIPPED] == shipped(cfg), "main's monitor defaults changed since rule T20 was declared"
    alpha, delta = cfg.stream_alpha, cfg.stream_delta
    print(RULE_T20)
    mode = "measure" if args.nets else "report" if args.report else "development"
    print_run_header(mode, list(CANDIDATES), SHIPPED)
    sets: list[tuple[str, list[dict[str, Any]]]] = []
    if args.nets:
        print(
            f"== trainings {args.train_seeds}, {args.half} half, deployments {args.first_draw}.."
            f"{args.first_draw + args.draws - 1} ({args.pool} held-out rows each, train_reference_rows "
            f"{TRAIN_ROWS}); per deployment {args.null_streams} in-distribution streams of 2000 and {args.orders} "
            f"test-distribution streams of 600; stop at {args.stop_at or 'none'} UTC ==",
            flush=True,
        )
        for seed in args.train_seeds:
            streams = saved_streams(args, seed, protocol_key(args, seed), ignore=("draws",))
            sets.append((f"t{seed} {args.half} {args.first_draw}", streams))
    sets += [one for f in args.saved or [] if (one := saved_set(f)) is not None]
    for name, streams in sets:
        eq, n = agreement(streams, alpha, delta)
        print(
            f"  [{name}] the replayed union (share 0.5) equals the run's own domain flag in {eq} of {n} windows"
        )
    if args.misses:
        for name, streams in sets:
            misses(name, streams, alpha, delta)
        return
    scores = score_sets(sets, CANDIDATES, score, alpha, delta, None, True)
    if args.nets:
        return
    print(f"\nsummary over {len(sets)} sets ({', '.join(n for n, _ in sets)}):")
    keys, ok = summarize_candidates(scores, SHIPPED, amended=True)
    if args.report:
        print_report_clause("report (rule t20, clause 3)", keys, ok, SHIPPED)
        return
    print_choice("development choice by rule t20", keys, ok, SHIPPED)


if __name__ == "__main__":
    main()
