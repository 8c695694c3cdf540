"""Issue 19: the test windows the W17 defaults leave unflagged and off by > 0.03 (rule F19).

Declared in docs/monitor_decisions.md ("The test windows unflagged and off on fresh trainings (session 19, rule F19)")
before any run on the report trainings. Over four fresh report pairs the W17 defaults (first window's domain
level 0.05, the stream evidence withholding from ``stream_alpha * 0.25 / (k (k + 1))`` on, sticky) left 0, 1,
5 and 9 of 240 test windows unflagged and off: most are later windows whose stream look p-value was under the
level over runs but above the budget's at that look; the rest first windows with domain p just above 0.05.
Each candidate (``CANDIDATES``) keeps W17's flags and adds at most two:

* ``look``: a NON-sticky flag: the window that holds a stream look is flagged when that look's p-value is at
  or under ``look`` (``"runs"``: ``stream_alpha / (k (k + 1))``, the level over runs at look ``k``; a number
  ``c``: ``c`` at every look, a marginal level per window). It flags that window only; the sticky budget
  (``evidence``) still decides what withholds every later window.
* ``first``: the stream's first window's domain level (W17: 0.05).

Every candidate is scored by ``tune_monitor_test_windows.score``'s counts on the same saved windows and looks
(``--saved``: numbers of ``tune_monitor_test_windows.py --save``, read back, no monitor run). ``--nets`` with
``--train-seeds`` measures (or reads back from ``--save``) the report trainings once; clause 3 decides.
``--diagnose`` prints every test window the shipped default leaves unflagged and off, with each evidence's
p-value over its level under the shipped default and the candidates' extra flags.

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_flag_f19.py --saved /tmp/.../t0_dev_40.json ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

RULE_F19 = (
    "rule f19 (declared in docs/monitor_decisions.md before any run on the report trainings 17, 18): every candidate "
    "scores the same windows; 1. eligible when (a) in EVERY development set (one training's saved deployments) "
    "<= 10% of in-distribution windows are flagged and (b) summed over the sets, no more deployments have > 10% "
    "of their in-distribution windows flagged than under the shipped default (w17); 2. among eligible "
    "candidates, lexicographically: (a) fewest test windows unflagged and off by > 0.03 (summed), (b) fewest "
    "near misses, (c) fewest in-distribution windows flagged; a tie keeps w17; 3. the development choice is "
    "committed before the report run; it replaces the default only if on the report trainings (17, 18) it is "
    "eligible by 1(a) and 1(b) against w17 and leaves fewer test windows unflagged and off than w17 on the same "
    "windows; otherwise w17 stays"
)
AMENDMENT_F19A = (
    "amendment f19a (declared in docs/monitor_decisions.md after 12 of the 14 development sets were scored, before the report "
    "run): clause 1(a) as declared excludes every candidate, the shipped default included, because w17 itself "
    "flags 12.5% of training 14's in-distribution windows; amended, 1(a) reads: in every set <= 10% of "
    "in-distribution windows flagged OR no more than w17 flags in that set; clauses 1(b), 2 and 3 unchanged (3 "
    "with the amended 1(a)); both verdicts are printed"
)
AMENDMENT_F19B = (
    "extension f19b (declared in docs/monitor_decisions.md after the report on trainings 17, 18 tied, before any run on "
    "trainings 19, 20; the last one): nothing re-tuned, the development choice stays w17+look_runs, the only "
    "candidate it can adopt; clause 3 (with f19a's 1(a)) applied to the report trainings 17-20 pooled; otherwise "
    "w17 stays"
)
W17: dict[str, Any] = {"domain": 0.005, "first": 0.05, "evidence": 0.25}
"""The shipped default (rule W17): ``tune_monitor_test_windows.margins``' candidate form."""
CANDIDATES: dict[str, dict[str, Any]] = {
    "w17": {**W17},
    "w17+look_runs": {**W17, "look": "runs"},
    "w17+look_0.01": {**W17, "look": 0.01},
    "w17+first_0.1": {**W17, "first": 0.1},
    "w17+look_runs+first_0.1": {**W17, "look": "runs", "first": 0.1},
    "w17+look_0.01+first_0.1": {**W17, "look": 0.01, "first": 0.1},
}
SHIPPED = "w17"


def look_margin(st: dict[str, Any], i: int, look: Any, alpha: float) -> float:
    """The non-sticky flag of window ``i``: its own look's p-value over the look's level (<= 1 flags)."""
    from closedloop.monitoring.stream_reference import spend

    if look is None:
        return float("inf")
    w = st["windows"][i]
    start = w["end"] - 200 if i else 0
    out = float("inf")
    for k, (n, p) in enumerate(st["looks"], start=1):
        if start < n <= w["end"]:  # the look taken on a row of this window
            level = alpha * spend(k) if look == "runs" else float(look)
            out = min(out, p / level)
    return out


def margins_f19(
    st: dict[str, Any], i: int, cand: dict[str, Any], alpha: float, delta: float
) -> dict[str, float]:
    """Every evidence of window ``i`` over its level under ``cand`` (W17's plus the non-sticky look)."""
    from tune_monitor_test_windows import margins

    m = margins(st, i, cand, alpha, delta)
    m["look"] = look_margin(st, i, cand.get("look"), alpha)
    return m


def score(streams: list[dict[str, Any]], cand: dict[str, Any], alpha: float, delta: float) -> dict[str, Any]:
    """``tune_monitor_test_windows.score``'s counts, with the non-sticky look among the flags."""
    from tune_monitor_test_windows import score as score_w16

    return score_w16(streams, cand, alpha, delta, margins_of=margins_f19)


def diagnose(name: str, streams: list[dict[str, Any]], alpha: float, delta: float) -> None:
    """Every test window the shipped default leaves unflagged and off: each evidence over its level."""
    from tune_monitor_test_windows import TOLERANCE

    for st in streams:
        if st["kind"] != "test":
            continue
        for i, w in enumerate(st["windows"]):
            m = margins_f19(st, i, {**W17, "look": "runs"}, alpha, delta)
            shipped = min(v for k, v in m.items() if k != "look")
            if w["err"] <= TOLERANCE or shipped <= 1.0:
                continue
            print(
                f"  [{name}] test d{st['d']} order {st['o']} window {i + 1}: off by {w['err']:.3f}; unflagged by "
                f"w17; p/level: drift {m['drift']:.2f}, domain {m['domain']:.2f} (p {w['domain_p']:.4f}), stream "
                f"budget {m['stream']:.2f}; own look at the over-runs level {m['look']:.2f}, at 0.01 "
                f"{look_margin(st, i, 0.01, alpha):.2f}"
            )
    for st in streams:
        if st["kind"] != "null":
            continue
        hits = [i + 1 for i in range(len(st["windows"])) if look_margin(st, i, 0.01, alpha) <= 1.0]
        if hits:
            runs = [i + 1 for i in range(len(st["windows"])) if look_margin(st, i, "runs", alpha) <= 1.0]
            print(
                f"  [{name}] in-distribution d{st['d']} stream {st['o']}: own look p <= 0.01 at windows {hits}; "
                f"at the over-runs level at {runs}"
            )


def load_sets(args: argparse.Namespace) -> list[tuple[str, list[dict[str, Any]]]]:
    """The saved development sets, or the report trainings (measured once, or read back from ``--save``)."""
    from tune_monitor_test_windows import protocol_key, saved_sets, saved_streams

    out = saved_sets(args.saved or [])
    if args.nets:
        for seed in args.train_seeds:
            key = protocol_key(args, seed)
            out.append(
                (f"t{seed} {args.half} {args.first_draw}", saved_streams(args, seed, key, ignore=("draws",)))
            )
    return out


def main() -> None:
    from tune_monitor_test_windows import (
        FLAG_TARGET,
        TOLERANCE,
        candidate_key,
        print_run_header,
        protocol_arguments,
        saved_set_arguments,
        score_sets,
    )

    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    ap = argparse.ArgumentParser()
    saved_set_arguments(ap)
    protocol_arguments(ap, [17, 18], "report", 1000, 8)
    ap.add_argument("--diagnose", action="store_true", help="the shipped default's unflagged and off windows")
    ap.add_argument(
        "--verify",
        default=None,
        choices=list(CANDIDATES),
        help="the monitor itself, built with this candidate's settings, on the first saved deployment",
    )
    args = ap.parse_args()
    if (args.saved is None) == (args.nets is None):
        ap.error("give either --saved FILE ... (development) or --nets DIR (report)")

    cfg = BuildMonitorProfileConfig()
    # the candidates are declared against main's default at the declaration: W17's
    assert (
        cfg.first_window_alpha == W17["first"]
        and cfg.stream_evidence == "budget"
        and cfg.stream_evidence_delta == W17["evidence"]
    ), "main's monitor defaults are no longer W17's: the rule was declared against W17"
    alpha, delta = cfg.stream_alpha, cfg.stream_delta
    if args.verify:
        if args.save is None or args.nets is None:
            ap.error("--verify needs --nets and --save (the saved numbers of a run)")
        from tune_monitor_evidence_budget import verify

        cand = CANDIDATES[args.verify]
        settings = {"stream_look_flag": "over_runs" if cand.get("look") == "runs" else cand.get("look")}
        settings["first_window_alpha"] = cand["first"]
        args.alpha, args.delta = alpha, delta
        verify(args, args.verify, cand, margins_f19, ("stream_look", "look"), settings)
        return
    print(RULE_F19)
    print(AMENDMENT_F19A)
    print(AMENDMENT_F19B)
    mode = (
        "development (saved sets)"
        if args.saved
        else f"report (trainings {args.train_seeds}, {args.half} half)"
    )
    print_run_header(mode, list(CANDIDATES), SHIPPED, args)
    sets = load_sets(args)
    scores = score_sets(sets, CANDIDATES, score, alpha, delta, diagnose if args.diagnose else None, True)
    names = [n for n, _ in sets]
    print(f"\nsummary over {len(sets)} sets ({', '.join(names)}):")
    base_over = sum(s["over"] for s in scores[SHIPPED])
    keys, ok, ok_a = {}, {}, {}
    for c in CANDIDATES:
        sc = scores[c]
        fewer_over = sum(s["over"] for s in sc) <= base_over
        ok[c] = all(s["in_flagged"] <= FLAG_TARGET for s in sc) and fewer_over
        # f19a: a set where the shipped default is itself above 10% allows up to the shipped default's rate
        ok_a[c] = (
            all(
                s["in_flagged"] <= max(FLAG_TARGET, b["in_flagged"])
                for s, b in zip(sc, scores[SHIPPED], strict=True)
            )
            and fewer_over
        )
        keys[c] = candidate_key(sc)
        rates = ", ".join(f"{s['in_flagged']:.1%}" for s in sc)
        print(
            f"[{c}] in-distribution windows flagged per set {rates}; deployments above {FLAG_TARGET:.0%} "
            f"{sum(s['over'] for s in sc)} ({SHIPPED} {base_over}); eligible as declared: {ok[c]}, as amended "
            f"(f19a): {ok_a[c]}; test windows unflagged and off by > {TOLERANCE}: "
            f"{', '.join(str(s['test_off']) for s in sc)} (total {keys[c][0]} of {sum(s['n_test'] for s in sc)}); "
            f"near misses {keys[c][1]}; in-distribution windows flagged {keys[c][2]} of {sum(s['n_in'] for s in sc)}"
        )
    if args.saved is None:
        base = keys[SHIPPED][0]
        for label, elig in (("as declared", ok), ("as amended (f19a)", ok_a)):
            print(
                f"report {label}: measured once; a development choice replaces {SHIPPED} only if here it is eligible "
                f"by 1(a) and 1(b) and leaves fewer test windows unflagged and off than {SHIPPED} ({base}): "
                + ", ".join(f"{c} {elig[c] and keys[c][0] < base}" for c in CANDIDATES if c != SHIPPED)
            )
        return
    for label, elig in (("as declared", ok), ("as amended (f19a)", ok_a)):
        eligible = [c for c in CANDIDATES if elig[c]]
        if not eligible:
            print(
                f"development choice by rule f19 {label}: no candidate eligible (not even {SHIPPED}): {SHIPPED} stays"
            )
            continue
        best = min(keys[c] for c in eligible)
        chosen = SHIPPED if keys[SHIPPED] == best else min(eligible, key=lambda c: keys[c])
        print(
            f"development choice by rule f19 {label}: {chosen} (test windows unflagged and off {best[0]}, near "
            f"misses {best[1]}, in-distribution windows flagged {best[2]})"
        )


if __name__ == "__main__":
    main()
