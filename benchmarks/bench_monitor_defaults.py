"""Issue 19: main's shipped monitor defaults together, on fresh trainings (session 20, a declared measurement).

Declared in docs/monitor_decisions.md ("The shipped defaults on fresh trainings (session 20)") before any run on trainings
21-24. Nothing is tuned and no default changes. Session 19 changed two defaults separately (``stream_spending:
first3_late``, rule S19; ``stream_look_flag: over_runs``, rules F19/F19b); this scores them together.

The windows and looks are F19's report protocol (``tune_monitor_flag_f19.py --nets ... --save DIR``: per
deployment 2 unseen in-distribution streams of 2,000 rows and 10 test-distribution streams of 600, every look's
p-value from the monitor's own stream test, every window evaluated by the monitor). From those saved numbers
each window's estimate flag is replayed under the shipped defaults (``SHIPPED``): W17's flags (drift tests at
their marginal level, domain p <= 0.005, the first window's 0.05, the sticky evidence budget), the non-sticky
look flag over runs, and the sticky stream ALARM at ``stream_alpha * stream_delta * w_k`` with the shipped
spending's shares ``w_k`` (F19's scoring leaves the alarm out; under ``first3_late`` its third look is laxer
than the budget's). The stream alarm's own numbers come from the same looks. ``--verify`` runs the monitor
itself on the first saved deployment and compares its withholding with this replay.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_monitor_defaults.py /tmp/combined20/sets/t21_report_1400.json ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

DECLARATION = (
    "declared in docs/monitor_decisions.md before any run on trainings 21-24 (session 20, combined20): a measurement, "
    "nothing tuned, no default changed; main's shipped monitor defaults scored together on fresh trainings "
    "21-24, report half of the test split: (b) unseen in-distribution streams of 2,000 alarm in <= 5% of runs, "
    "and test-distribution streams alarm within 600 rows in >= 90% of orders; (c) every test-distribution "
    "window within 0.03 of realized AUC and ACC or flagged, in-distribution windows flagged <= 10% and the "
    "unflagged within 0.03; per training and as a spread over trainings (min, median, max), pooled too"
)
DECLARATION_S21 = (
    "declared in docs/monitor_decisions.md before any run on trainings 31, 32 (session 21, combined21): a measurement, "
    "nothing tuned, no default changed; main's shipped monitor defaults, with rule T21's train_reference_rows "
    "2000 (share 0.5: the domain flag is the union of the held-out and the training-rows test), scored together "
    "on fresh trainings 31, 32, report half of the test split, F19's report protocol (deployments 1800-1807): "
    "(b) unseen in-distribution streams of 2,000 alarm in <= 5% of runs, and test-distribution streams alarm "
    "within 600 rows in >= 90% of orders; (c) every test-distribution window within 0.03 of realized AUC and ACC "
    "or flagged, in-distribution windows flagged <= 10% and the unflagged within 0.03; per training and as a "
    "spread over trainings (min, median, max), pooled too"
)
TARGETS = {"null_alarm": 0.05, "within_600": 0.90, "in_flagged": 0.10}


def before_t21(**kw: Any) -> Any:
    """The monitor defaults the replay models: main's with the training-rows test off, as before rule T21 (the
    union is replayed by ``tune_monitor_train_ref_t20.margins_t20`` on sets that saved its p-values)."""
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    return BuildMonitorProfileConfig(**{"train_reference_rows": 0, **kw})


def shipped(cfg: Any) -> dict[str, Any]:
    """The replayed flag settings of main's defaults (``cfg``: ``BuildMonitorProfileConfig()``); refuses
    defaults the replay does not model."""
    from tune_monitor_flag_f19 import W17

    assert cfg.stream_test == "reference" and cfg.stream_look == 200 and cfg.stream_look_test == "mean_shift"
    assert cfg.stream_evidence == "budget" and cfg.stream_evidence_delta == W17["evidence"]
    assert cfg.first_window_alpha == W17["first"] and np.isclose(
        cfg.domain_alpha * cfg.domain_delta, W17["domain"]
    )
    assert cfg.stream_look_flag == "over_runs"
    cand = {**W17, "look": "runs", "alarm": cfg.stream_spending}
    # rule T21 (session 21): with the training-rows test on, the domain flag is the union at its share
    return cand | ({"train": cfg.train_reference_share} if cfg.train_reference_rows else {})


def alarm_margin(st: dict[str, Any], i: int, spending: str, alpha: float, delta: float) -> float:
    """The sticky stream alarm at window ``i``: the smallest ``p_k / (alpha * delta * w_k)`` of the looks
    taken by the end of the window (<= 1: alarmed, the estimate withheld)."""
    from closedloop.monitoring.stream_reference import spend

    end = st["windows"][i]["end"]
    return min(
        (
            p / (alpha * delta * spend(k, spending))
            for k, (n, p) in enumerate(st["looks"], start=1)
            if n <= end
        ),
        default=float("inf"),
    )


def margins_shipped(
    st: dict[str, Any], i: int, cand: dict[str, Any], alpha: float, delta: float
) -> dict[str, float]:
    """Every evidence of window ``i`` over its level under the shipped defaults: F19's (W17 and the look flag)
    and the alarm; ``stream_any`` is the monitor's ``stream`` flag (evidence budget or alarm)."""
    from tune_monitor_flag_f19 import margins_f19

    m = margins_f19(st, i, cand, alpha, delta)
    m["alarm"] = alarm_margin(st, i, cand["alarm"], alpha, delta)
    m["stream_any"] = min(m["stream"], m["alarm"])
    return m


def margins_now(
    st: dict[str, Any], i: int, cand: dict[str, Any], alpha: float, delta: float
) -> dict[str, float]:
    """``margins_shipped``, with the domain flag as the union of the held-out and the training-rows test when
    ``cand`` has the training rows' share (``tune_monitor_train_ref_t20.margins_t20``, the replay rules T20 and
    T21 scored; session 21)."""
    if cand.get("train") is None:
        return margins_shipped(st, i, cand, alpha, delta)
    from tune_monitor_train_ref_t20 import margins_t20

    return margins_t20(st, i, cand, alpha, delta)


def alarm_row(looks: list[list[float]], spending: str, alpha: float, delta: float) -> int | None:
    """The row of the stream alarm (None: none)."""
    from closedloop.monitoring.stream_reference import spend

    for k, (n, p) in enumerate(looks, start=1):
        if p <= alpha * delta * spend(k, spending):
            return int(n)
    return None


def training(
    streams: list[dict[str, Any]], cand: dict[str, Any], alpha: float, delta: float
) -> dict[str, Any]:
    """One training's numbers under ``cand`` (the shipped defaults)."""
    from tune_monitor_test_windows import TOLERANCE

    n: dict[str, Any] = {"null_runs": 0, "null_alarms": 0, "orders": 0, "w600": 0, "w200": 0}
    dep_alarm: dict[int, bool] = {}
    dep_flags: dict[int, list[bool]] = {}
    in_kept = in_ok = test_n = test_flagged = test_off = by_alarm_only = 0
    for st in streams:
        row = alarm_row(st["looks"], cand["alarm"], alpha, delta)
        if st["kind"] == "null":
            n["null_runs"] += 1
            n["null_alarms"] += row is not None
            dep_alarm[st["d"]] = dep_alarm.get(st["d"], False) or row is not None
        else:
            n["orders"] += 1
            n["w600"] += row is not None and row <= 600
            n["w200"] += row is not None and row <= 200
        for i, w in enumerate(st["windows"]):
            m = margins_now(st, i, cand, alpha, delta)
            flagged = min(m.values()) <= 1.0
            others = min(v for k, v in m.items() if k not in ("alarm", "stream_any"))
            by_alarm_only += flagged and others > 1.0
            if st["kind"] == "null":
                dep_flags.setdefault(st["d"], []).append(flagged)
                if not flagged:
                    in_kept += 1
                    in_ok += w["err"] <= TOLERANCE
            else:
                test_n += 1
                test_flagged += flagged
                test_off += (not flagged) and w["err"] > TOLERANCE
    rates = [float(np.mean(v)) for v in dep_flags.values()]
    flags = [f for v in dep_flags.values() for f in v]
    return n | {
        "deployments": len(dep_flags),
        "deps_no_alarm": sum(not a for a in dep_alarm.values()),
        "in_n": len(flags),
        "in_flagged": float(np.mean(flags)) if flags else float("nan"),
        "dep_max": max(rates, default=float("nan")),
        "over": sum(r > TARGETS["in_flagged"] for r in rates),
        "in_kept": in_kept,
        "in_ok": in_ok,
        "test_n": test_n,
        "test_flagged": test_flagged,
        "test_off": test_off,
        "by_alarm_only": by_alarm_only,
    }


def diagnose(
    name: str, streams: list[dict[str, Any]], cand: dict[str, Any], alpha: float, delta: float
) -> None:
    """The in-distribution streams of deployments above 10% flagged: which evidence flags each window."""
    per: dict[int, list[bool]] = {}
    for st in streams:
        if st["kind"] == "null":
            per.setdefault(st["d"], []).extend(
                min(margins_now(st, i, cand, alpha, delta).values()) <= 1 for i in range(len(st["windows"]))
            )
    for st in streams:
        if st["kind"] != "null" or np.mean(per[st["d"]]) <= TARGETS["in_flagged"]:
            continue
        why = []
        for i in range(len(st["windows"])):
            m = margins_now(st, i, cand, alpha, delta)
            hit = [k for k, v in m.items() if v <= 1.0 and k != "stream_any"]
            if hit:
                why.append(f"{i + 1}:{'+'.join(hit)}")
        k = int(np.argmin([p for _, p in st["looks"]]))
        print(
            f"  [{name} diagnosis] in-distribution d{st['d']} stream {st['o']}: deployment flagged "
            f"{np.mean(per[st['d']]):.0%}; windows flagged {', '.join(why) or 'none'}; smallest look p "
            f"{st['looks'][k][1]:.2g} at look {k + 1} (budget level there {alpha * cand['evidence'] / ((k + 1) * (k + 2)):.2g})"
        )


def spread(values: list[float], fmt: str = "{:.1%}") -> str:
    v = np.asarray(values, dtype=float)
    return f"min {fmt.format(v.min())}, median {fmt.format(np.median(v))}, max {fmt.format(v.max())}"


def report(
    sets: list[tuple[str, list[dict[str, Any]]]],
    cand: dict[str, Any],
    alpha: float,
    delta: float,
    explain: bool = False,
) -> None:
    """Per training and over trainings: each number, met or not."""
    from tune_monitor_test_windows import TOLERANCE

    rows = []
    for name, streams in sets:
        if explain:
            diagnose(name, streams, cand, alpha, delta)
        r = training(streams, cand, alpha, delta)
        rows.append(r)
        print(
            f"[{name}] {r['deployments']} deployments; (b) in-distribution streams of 2,000 alarmed {r['null_alarms']} "
            f"of {r['null_runs']} ({r['null_alarms'] / r['null_runs']:.1%}; deployments with none "
            f"{r['deps_no_alarm']} of {r['deployments']}); test-distribution streams alarmed within 600 rows "
            f"{r['w600'] / r['orders']:.1%} of {r['orders']} orders (within 200 {r['w200'] / r['orders']:.1%}); "
            f"(c) test windows flagged {r['test_flagged'] / r['test_n']:.1%}, unflagged and off by > {TOLERANCE}: "
            f"{r['test_off']} of {r['test_n']}; in-distribution windows flagged {r['in_flagged']:.1%} of {r['in_n']} "
            f"(per deployment max {r['dep_max']:.1%}, above 10%: {r['over']}), unflagged within {TOLERANCE} "
            f"{r['in_ok'] / max(r['in_kept'], 1):.1%} ({r['in_kept'] - r['in_ok']} of {r['in_kept']} off); windows "
            f"withheld by the alarm alone {r['by_alarm_only']}",
            flush=True,
        )
    k = len(rows)
    null = [r["null_alarms"] / r["null_runs"] for r in rows]
    w600 = [r["w600"] / r["orders"] for r in rows]
    inf = [r["in_flagged"] for r in rows]
    inok = [r["in_ok"] / max(r["in_kept"], 1) for r in rows]

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    tot = {key: sum(r[key] for r in rows) for key in rows[0] if isinstance(rows[0][key], int)}
    print(f"\nover {k} trainings ({', '.join(n for n, _ in sets)}):")
    print(
        f"(b) in-distribution streams of 2,000 alarmed: per training {spread(null)}; pooled {tot['null_alarms']} of "
        f"{tot['null_runs']} ({tot['null_alarms'] / tot['null_runs']:.1%}) -> "
        f"{met(tot['null_alarms'] / tot['null_runs'] <= TARGETS['null_alarm'])} (target <= 5%); "
        f"<= 5% in {sum(x <= TARGETS['null_alarm'] for x in null)} of {k} trainings"
    )
    print(
        f"(b) test-distribution streams alarmed within 600 rows: per training {spread(w600)}; pooled "
        f"{tot['w600'] / tot['orders']:.1%} of {tot['orders']}; >= 90% in {sum(x >= TARGETS['within_600'] for x in w600)} "
        f"of {k} trainings -> {met(min(w600) >= TARGETS['within_600'])} (target >= 90% of orders)"
    )
    print(
        f"(c) test windows unflagged and off by > {TOLERANCE}: per training "
        f"{', '.join(str(r['test_off']) for r in rows)} (total {tot['test_off']} of {tot['test_n']}); test windows "
        f"flagged {spread([r['test_flagged'] / r['test_n'] for r in rows])} -> {met(tot['test_off'] == 0)} (target none)"
    )
    print(
        f"(c) in-distribution windows flagged: per training {spread(inf)}; pooled {tot['in_n'] and sum(r['in_flagged'] * r['in_n'] for r in rows) / tot['in_n']:.1%} "
        f"of {tot['in_n']}; deployments above 10% {tot['over']} of {tot['deployments']} -> "
        f"{met(max(inf) <= TARGETS['in_flagged'])} (target <= 10% per training)"
    )
    print(
        f"(c) unflagged in-distribution windows within {TOLERANCE}: per training {spread(inok)}; pooled "
        f"{tot['in_ok'] / max(tot['in_kept'], 1):.2%} ({tot['in_kept'] - tot['in_ok']} of {tot['in_kept']} off) -> "
        f"{met(tot['in_ok'] == tot['in_kept'])} (target: all)"
    )


def report_s19(files: list[str], spending: str, level: float) -> None:
    """(b) by S19's protocol: its saved looks (``tune_monitor_stream_spending.py --save``) scored with the
    shipped spending, per training and over trainings."""
    import json

    from tune_monitor_stream_spending import score

    rows = []
    for f in files:
        z = json.loads(Path(f).read_text())
        s = score(z["results"], spending, level)
        n_null, n_ord = s["n_null"], s["orders"]
        s |= {"name": Path(f).name.split("_")[0], "alarms": round(s["null_alarm"] * n_null)}
        s |= {"w600": round(s["within600"] * n_ord)}
        rows.append(s)
        print(
            f"[{s['name']} S19 protocol, {spending}] {s['deployments']} deployments; in-distribution streams of "
            f"2,000 alarmed {s['alarms']} of {n_null} ({s['null_alarm']:.1%}; deployments with none "
            f"{s['deps_clean']:.0%}); test-distribution streams within 600 rows {s['within600']:.1%} of {n_ord} "
            f"orders (within 200 {s['within200']:.1%}, median row {s['median_row']:.0f})"
        )
    null, runs = sum(r["alarms"] for r in rows), sum(r["n_null"] for r in rows)
    w600 = [r["within600"] for r in rows]
    print(
        f"over {len(rows)} trainings (S19 protocol): in-distribution streams alarmed per training "
        f"{spread([r['null_alarm'] for r in rows])}; pooled {null} of {runs} ({null / runs:.1%}) -> "
        f"{'met' if null / runs <= TARGETS['null_alarm'] else 'NOT met'} (target <= 5%); within 600 rows per "
        f"training {spread(w600)}; pooled {sum(r['w600'] for r in rows)} of {sum(r['orders'] for r in rows)}; "
        f">= 90% in {sum(x >= TARGETS['within_600'] for x in w600)} of {len(rows)} trainings -> "
        f"{'met' if min(w600) >= TARGETS['within_600'] else 'NOT met'}"
    )


def diagnose_e19(files: list[str]) -> None:
    """E19's protocol (``tune_monitor_val_map.py --report --save``; the real monitor's flags): every test window
    unflagged and off by > 0.03 with its evidence, and each training's deployments with the most unflagged
    in-distribution windows off (the shipped ``heldout_platt`` estimate; signed ACC error: estimate - realized)."""
    import json

    for f in files:
        z = json.loads(Path(f).read_text())
        for w in z:
            err = w["heldout_platt"]
            if w["kind"] != "test" or w["saved_flag"] or max(err.values()) <= 0.03:
                continue
            e = w["evidence"]
            print(
                f"  [t{w['t']} E19 protocol] test d{w['d']} order {w['order']} window {w['pos'] + 1}: unflagged, off "
                f"AUC {err['auc']:.3f} ACC {err['acc']:.3f} (signed {w['acc_signed']:+.3f}); drift min p "
                f"{e['min_p']:.3g} (level {e['drift_level']:.3g}), domain p {e['domain_p']:.3g}, ESS "
                f"{e['ess_fraction']:.2f}, stream p {w['stream_p']:.3g} at look {w['stream_looks']}"
            )
        per: dict[int, list[tuple[bool, float]]] = {}
        for w in z:
            if w["kind"] == "in" and not w["saved_flag"]:
                per.setdefault(w["d"], []).append((max(w["heldout_platt"].values()) > 0.03, w["acc_signed"]))
        worst = sorted(per.items(), key=lambda kv: -sum(o for o, _ in kv[1]))[:3]
        off = sum(o for v in per.values() for o, _ in v)
        print(
            f"  [{Path(f).name.split('_')[0]} E19 protocol] unflagged in-distribution windows off by > 0.03: {off} of "
            f"{sum(map(len, per.values()))}; mean signed ACC error {np.mean([x for v in per.values() for _, x in v]):+.4f}; "
            "most off: "
            + ", ".join(
                f"d{d} {sum(o for o, _ in v)} of {len(v)} (mean signed {np.mean([x for _, x in v]):+.4f})"
                for d, v in worst
            )
        )


def check_union(
    files: list[str],
    sets: list[tuple[str, list[dict[str, Any]]]],
    cand: dict[str, Any],
    rows: int,
    alpha: float,
    delta: float,
) -> None:
    """Session 21: the sets must carry the training-rows test of ``rows`` rows, and the replayed union is rule
    T20's; prints, per set, how often it equals the run's own monitor's ``domain`` flag (a check of the replay)."""
    import json

    from tune_monitor_train_ref_t20 import CANDIDATES, SHIPPED, TRAIN_ROWS, agreement

    assert rows == TRAIN_ROWS and cand == CANDIDATES[f"{SHIPPED}+train_reference_{TRAIN_ROWS}"]
    for f, (name, streams) in zip(files, sets, strict=True):
        saved = json.loads(Path(f).read_text())["settings"].get("train_reference_rows", 0)
        if saved != rows:
            raise SystemExit(
                f"{f}: saved with train_reference_rows {saved}, the defaults keep {rows}: measure the set with "
                f"--train-reference-rows {rows}"
            )
        equal, n = agreement(streams, alpha, delta)
        print(
            f"[{name}] replay check: the replayed union's domain flag equals the run's own monitor's in {equal} of "
            f"{n} windows after a stream's first"
        )
        moved = union_moves(streams, cand, shipped(before_t21()), alpha, delta)
        print(
            f"[{name}] the union against the held-out domain test alone (the defaults before rule T21) on the same "
            + "; ".join(
                f"{kind} windows: flagged by the union only {a}, by the held-out test alone only {b}"
                for kind, (a, b) in moved.items()
            )
        )


def union_moves(
    streams: list[dict[str, Any]], cand: dict[str, Any], before: dict[str, Any], alpha: float, delta: float
) -> dict[str, tuple[int, int]]:
    """Per kind of window ("test", "in-distribution"): (windows flagged under ``cand`` only, under ``before``
    only), each window's whole flag (every evidence) replayed both ways."""
    out = {"test": [0, 0], "in-distribution": [0, 0]}
    for st in streams:
        kind = "test" if st["kind"] == "test" else "in-distribution"
        for i in range(len(st["windows"])):
            now = min(margins_now(st, i, cand, alpha, delta).values()) <= 1
            was = min(margins_now(st, i, before, alpha, delta).values()) <= 1
            out[kind][0] += now and not was
            out[kind][1] += was and not now
    return {k: (a, b) for k, (a, b) in out.items()}


def main() -> None:
    from tune_monitor_test_windows import protocol_arguments, saved_sets

    ap = argparse.ArgumentParser()
    ap.add_argument(
        "saved", nargs="*", help="saved sets of tune_monitor_flag_f19.py --save (one per training)"
    )
    ap.add_argument("--nets", default=None, help="--verify: folder of the trainings' workdirs t<seed>")
    protocol_arguments(ap, [20], "report", 1000, 1)
    ap.add_argument(
        "--s19",
        nargs="+",
        default=None,
        help="(b) by S19's protocol: tune_monitor_stream_spending.py --save files",
    )
    ap.add_argument(
        "--e19",
        nargs="+",
        default=None,
        help="diagnosis of E19's protocol: tune_monitor_val_map.py --save files",
    )
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="which evidence flags the deployments above 10% in distribution",
    )
    ap.add_argument(
        "--verify", action="store_true", help="the monitor itself on the first deployment of --save"
    )
    args = ap.parse_args()
    # session 21: --train-reference-rows replays main's defaults with their training-rows union (the sets must be
    # saved with the same rows); without it the defaults before rule T21, as session 20 scored them
    union = bool(args.train_reference_rows)
    cfg = before_t21()
    if union:
        from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

        cfg = BuildMonitorProfileConfig()
        if args.train_reference_rows != cfg.train_reference_rows or args.verify:
            ap.error(
                f"--train-reference-rows {args.train_reference_rows}: the replay models main's defaults only "
                f"(train_reference_rows {cfg.train_reference_rows}), and not with --verify"
            )
    cand = shipped(cfg)
    alpha, delta = cfg.stream_alpha, cfg.stream_delta
    print(DECLARATION_S21 if union else DECLARATION)
    print(
        f"== main's shipped monitor defaults: stream_spending {cfg.stream_spending}, stream_look_flag "
        f"{cfg.stream_look_flag}, stream_evidence {cfg.stream_evidence} {cfg.stream_evidence_delta}, "
        f"first_window_alpha {cfg.first_window_alpha}, domain level {cfg.domain_alpha * cfg.domain_delta:g}, "
        f"stream_alpha {alpha}, stream_delta {delta}, estimate_calibration {cfg.estimate_calibration}, "
        f"stream_look_test {cfg.stream_look_test}"
        + (
            f", train_reference_rows {cfg.train_reference_rows}, train_reference_share {cfg.train_reference_share}"
            if union
            else ""
        )
        + " =="
    )
    if args.verify:
        if args.nets is None or args.save is None:
            ap.error("--verify needs --nets, --save and the protocol arguments of the saved run")
        from tune_monitor_evidence_budget import verify

        args.alpha, args.delta = alpha, delta
        verify(args, "shipped", cand, margins_shipped, ("stream", "stream_any"))
        return
    if args.s19:
        report_s19(args.s19, cand["alarm"], alpha * delta)
    if args.e19:
        diagnose_e19(args.e19)
    if (args.s19 or args.e19) and not args.saved:
        return
    if not args.saved:
        ap.error("give the saved sets (tune_monitor_flag_f19.py --save files)")
    sets = saved_sets(args.saved)
    if union:
        check_union(args.saved, sets, cand, cfg.train_reference_rows, alpha, delta)
    report(sets, cand, alpha, delta, args.diagnose)


if __name__ == "__main__":
    main()
