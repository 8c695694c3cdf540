"""Issue 19, measurement P22 (session 22): what 498 held-out rows buy one deployment against 262.

Declared in docs/monitor_decisions.md ("What a larger held-out reference buys one deployment") before any run on trainings 33
and 34. Nothing is tuned and no default changes. Both arms are the same deployments of the same fresh networks:
a deployment's 498 held-out rows are its 262 plus the next 236 of the same draw, so each number is paired.

Reads the two arms' saved runs and prints, per arm, per training and pooled, the issue's numbers:
- F19's report protocol (``tune_monitor_flag_f19.py --save``, each window's flag replayed under main's shipped
  defaults with the training-rows union, as ``bench_monitor_defaults.py --train-reference-rows 2000``): (b) the
  in-distribution stream alarm and the test stream within 600 rows, (c) test windows unflagged and off,
  in-distribution windows flagged (deployments above 10 %) and the unflagged within 0.03; and each deployment's
  in-distribution flag rate in both arms side by side;
- the guarantee protocol (``bench_monitor_guarantee.py --save``, the monitor itself): (a) draws with a window-alarm
  rate <= 5 %, (d) detection at window 200, (c) in-distribution windows flagged and the unflagged within 0.03;
  each draw's alarm rate and flag rate in both arms side by side;
then the declared consequence: clauses (i)-(iii).

Run: PYTHONPATH=src .venv/bin/python benchmarks/compare_monitor_pool_p22.py --f19 /tmp/p22/f19_262/*.json
     --f19-large /tmp/p22/f19_498/*.json --guarantee /tmp/p22/guarantee_262/*.json
     --guarantee-large /tmp/p22/guarantee_498/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

DECLARATION = (
    "declared in docs/monitor_decisions.md before any run on trainings 33 and 34 (session 22, measurement P22): nothing "
    "tuned, no default changed; main's shipped monitor defaults with a deployment's held-out reference of 262 rows "
    "(holdout_fraction 0.5) and of 498 (holdout_fraction 0.95), the same deployments, fresh trainings 33 and 34, "
    "report half of the test split. If over both trainings the 498 arm (i) flags fewer in-distribution windows on "
    "F19's protocol and on the guarantee's windows, with no more deployments above 10%, (ii) leaves no more test "
    "windows unflagged and off, and (iii) keeps (a), (b) and (d) met, the docs recommend holdout_fraction 0.95 for "
    "a model that will be monitored; otherwise they say what the larger reference did not buy. Amendment P22a "
    "(declared before any comparison was read): the same on fresh trainings 35-38, the consequence decided on "
    "33-38 pooled (run this script on every training's files), the verdict on 33 and 34 alone printed beside it "
    "(run it on theirs)"
)
SMALL, LARGE = 262, 498


def f19_arm(files: list[str], pool: int) -> dict[str, Any]:
    """One arm of F19's protocol: per training the replayed numbers (``bench_monitor_defaults.training``) and
    each deployment's in-distribution flag rate."""
    from bench_monitor_defaults import margins_now, shipped, training
    from tune_monitor_test_windows import saved_sets

    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    cfg = BuildMonitorProfileConfig()
    cand, alpha, delta = shipped(cfg), cfg.stream_alpha, cfg.stream_delta
    out: dict[str, Any] = {}
    for f, (name, streams) in zip(files, saved_sets(files), strict=True):
        saved = json.loads(Path(f).read_text())["settings"]["pool"]
        if saved != pool:
            raise SystemExit(f"{f}: saved with {saved} held-out rows, this arm is {pool}")
        per: dict[int, list[bool]] = {}
        for st in streams:
            if st["kind"] == "null":
                per.setdefault(st["d"], []).extend(
                    min(margins_now(st, i, cand, alpha, delta).values()) <= 1
                    for i in range(len(st["windows"]))
                )
        out[name.split()[0]] = training(streams, cand, alpha, delta) | {
            "per_dep": {d: float(np.mean(v)) for d, v in sorted(per.items())}
        }
    return out


def guarantee_arm(files: list[str], pool: int) -> dict[str, Any]:
    """One arm of the guarantee protocol (``--production other``): per training its saved numbers (files saved
    before session 22's change do not record their held-out rows: the run's log prints them)."""
    out: dict[str, Any] = {}
    for f in files:
        r = json.loads(Path(f).read_text())
        if r.get("pool", pool) != pool:
            raise SystemExit(f"{f}: saved with {r['pool']} held-out rows, this arm is {pool}")
        r |= r["other_half"]
        out[f"t{r['train_seed']}"] = r
    return out


def paired(arms: dict[int, dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(training, its numbers with 262 rows, with 498) for every training measured in both arms."""
    return [(t, r, arms[LARGE][t]) for t, r in arms[SMALL].items() if t in arms[LARGE]]


def print_f19(arms: dict[int, dict[str, Any]]) -> dict[int, dict[str, float]]:
    """F19's numbers per arm and training, and each deployment's flag rate in both arms; returns pooled sums."""
    from tune_monitor_test_windows import TOLERANCE

    pooled: dict[int, dict[str, float]] = {}
    for pool, per_t in arms.items():
        for t, r in per_t.items():
            print(
                f"[F19, {pool} rows, {t}] {r['deployments']} deployments; (b) in-distribution streams alarmed "
                f"{r['null_alarms']} of {r['null_runs']}; test streams within 600 rows {r['w600'] / r['orders']:.1%} "
                f"of {r['orders']} (within 200 {r['w200'] / r['orders']:.1%}); (c) test windows unflagged and off by > {TOLERANCE}: {r['test_off']} of "
                f"{r['test_n']}; in-distribution windows flagged {r['in_flagged']:.1%} of {r['in_n']} (deployments "
                f"above 10%: {r['over']}, max {r['dep_max']:.0%}); unflagged within {TOLERANCE} "
                f"{r['in_ok'] / max(r['in_kept'], 1):.1%} ({r['in_kept'] - r['in_ok']} of {r['in_kept']} off)"
            )
        rows = list(per_t.values())
        n_in = sum(r["in_n"] for r in rows)
        pooled[pool] = {
            "in_flagged": sum(r["in_flagged"] * r["in_n"] for r in rows) / n_in,
            "in_n": n_in,
            "over": sum(r["over"] for r in rows),
            "deployments": sum(r["deployments"] for r in rows),
            "test_off": sum(r["test_off"] for r in rows),
            "test_n": sum(r["test_n"] for r in rows),
            "null_alarms": sum(r["null_alarms"] for r in rows),
            "null_runs": sum(r["null_runs"] for r in rows),
            "w600_min": min(r["w600"] / r["orders"] for r in rows),
            "w200": sum(r["w200"] for r in rows) / sum(r["orders"] for r in rows),
            "in_ok": sum(r["in_ok"] for r in rows),
            "in_kept": sum(r["in_kept"] for r in rows),
            "trainings": len(rows),
        }
        p = pooled[pool]
        print(
            f"[F19, {pool} rows, pooled over {p['trainings']} trainings] in-distribution windows flagged "
            f"{p['in_flagged']:.1%} of {p['in_n']}; deployments above 10% {p['over']} of {p['deployments']}; test "
            f"windows unflagged and off {p['test_off']} of {p['test_n']}; in-distribution streams alarmed "
            f"{p['null_alarms']} of {p['null_runs']}; test streams within 600 rows, lowest training "
            f"{p['w600_min']:.1%} (pooled within 200 rows {p['w200']:.1%}); unflagged within {TOLERANCE} "
            f"{p['in_ok'] / max(p['in_kept'], 1):.2%}"
        )
    for t, a, b in paired(arms):
        pairs = [
            f"d{d} {a['per_dep'][d]:.0%}->{b['per_dep'][d]:.0%}" for d in a["per_dep"] if d in b["per_dep"]
        ]
        print(
            f"[F19, {t}] each deployment's in-distribution windows flagged, {SMALL} -> {LARGE} rows: {', '.join(pairs)}"
        )
    return pooled


def print_guarantee(arms: dict[int, dict[str, Any]]) -> dict[int, dict[str, float]]:
    """The guarantee's numbers per arm and training, each draw side by side; returns pooled figures."""
    pooled: dict[int, dict[str, float]] = {}
    for pool, per_t in arms.items():
        for t, r in per_t.items():
            rates = np.asarray(r["alarm_rates"])
            det = min(r["detection"].values()) if r["detection"] else float("nan")
            print(
                f"[guarantee, {pool} rows, {t}] {len(rates)} draws: (a) window-alarm rate <= 5% in "
                f"{np.mean(rates <= 0.05):.0%} (90th pct {np.quantile(rates, 0.9):.1%}, max {rates.max():.1%}); (d) "
                f"detection at window 200, lowest kind {det:.0%}; (c) in-distribution windows flagged "
                f"{r['in_flagged']:.1%} of {r['in_windows']} (per draw max {max(r['in_flagged_per_draw']):.0%}); "
                f"unflagged within 0.03 {r['noise']['estimate_within']:.1%} ({r['in_unflagged_off']} off; ACC's noise "
                f"floor {r['noise']['acc_floor']:.1%})"
            )
        rows = list(per_t.values())
        rates = np.concatenate([r["alarm_rates"] for r in rows])
        n_in = sum(r["in_windows"] for r in rows)
        pooled[pool] = {
            "a_min": min(float(np.mean(np.asarray(r["alarm_rates"]) <= 0.05)) for r in rows),
            "d_min": min(min(r["detection"].values()) for r in rows if r["detection"]),
            "in_flagged": sum(r["in_flagged"] * r["in_windows"] for r in rows) / n_in,
            "in_n": n_in,
            "draws_over": sum(int(np.sum(np.asarray(r["in_flagged_per_draw"]) > 0.10)) for r in rows),
            "draws": len(rates),
            "off": sum(r["in_unflagged_off"] for r in rows),
        }
        p = pooled[pool]
        print(
            f"[guarantee, {pool} rows, pooled over {len(rows)} trainings] (a) draws <= 5% {np.mean(rates <= 0.05):.1%} "
            f"of {len(rates)} (lowest training {p['a_min']:.0%}); (d) lowest {p['d_min']:.0%}; in-distribution windows "
            f"flagged {p['in_flagged']:.1%} of {p['in_n']}; draws above 10% flagged {p['draws_over']} of {p['draws']}; "
            f"unflagged off by > 0.03: {p['off']}"
        )
    for t, a, b in paired(arms):
        common = [d for d in a["draws"] if d in b["draws"]]
        ia, ib = {d: i for i, d in enumerate(a["draws"])}, {d: i for i, d in enumerate(b["draws"])}
        print(
            f"[guarantee, {t}] each draw's window-alarm rate and in-distribution windows flagged, {SMALL} -> {LARGE} "
            "rows: "
            + ", ".join(
                f"d{d} {a['alarm_rates'][ia[d]]:.0%}->{b['alarm_rates'][ib[d]]:.0%} / "
                f"{a['in_flagged_per_draw'][ia[d]]:.0%}->{b['in_flagged_per_draw'][ib[d]]:.0%}"
                for d in common
            )
        )
    return pooled


def verdict(f19: dict[int, dict[str, float]], g: dict[int, dict[str, float]]) -> None:
    """The declared consequence, clause by clause."""
    s, lg = f19[SMALL], f19[LARGE]
    c1 = (
        lg["in_flagged"] < s["in_flagged"]
        and g[LARGE]["in_flagged"] < g[SMALL]["in_flagged"]
        and lg["over"] <= s["over"]
    )
    c2 = lg["test_off"] <= s["test_off"]
    c3 = (
        g[LARGE]["a_min"] >= 0.9
        and g[LARGE]["d_min"] >= 0.9
        and lg["null_alarms"] / lg["null_runs"] <= 0.05
        and lg["w600_min"] >= 0.9
    )
    print(
        f"(i) in-distribution windows flagged, F19's {s['in_flagged']:.1%} -> {lg['in_flagged']:.1%}, the guarantee's "
        f"{g[SMALL]['in_flagged']:.1%} -> {g[LARGE]['in_flagged']:.1%}, deployments above 10% {s['over']} -> "
        f"{lg['over']}: {c1}"
    )
    print(f"(ii) test windows unflagged and off {s['test_off']} -> {lg['test_off']}: {c2}")
    print(
        f"(iii) with {LARGE} rows (a) lowest training {g[LARGE]['a_min']:.0%}, (d) lowest {g[LARGE]['d_min']:.0%}, "
        f"(b) in-distribution streams {lg['null_alarms']} of {lg['null_runs']}, test streams within 600 lowest "
        f"{lg['w600_min']:.0%}: {c3}"
    )
    print(
        "what follows (declared): "
        + (
            "the docs recommend holdout_fraction 0.95 for a model that will be monitored"
            if c1 and c2 and c3
            else "no recommendation; the docs say what the larger reference did not buy"
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--f19", nargs="+", required=True, help=f"F19's saved sets, {SMALL} held-out rows")
    ap.add_argument("--f19-large", nargs="+", required=True, help=f"F19's saved sets, {LARGE} held-out rows")
    ap.add_argument("--guarantee", nargs="+", required=True, help=f"guarantee --save files, {SMALL} rows")
    ap.add_argument(
        "--guarantee-large", nargs="+", required=True, help=f"guarantee --save files, {LARGE} rows"
    )
    args = ap.parse_args()
    print(DECLARATION)
    f19 = print_f19({SMALL: f19_arm(args.f19, SMALL), LARGE: f19_arm(args.f19_large, LARGE)})
    g = print_guarantee(
        {SMALL: guarantee_arm(args.guarantee, SMALL), LARGE: guarantee_arm(args.guarantee_large, LARGE)}
    )
    verdict(f19, g)


if __name__ == "__main__":
    main()
