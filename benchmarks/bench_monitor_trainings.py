"""Issue 19: the per-deployment numbers over several trainings, from bench_monitor_guarantee.py's ``--save`` files.

One JSON file per training (``bench_monitor_guarantee.py --workdir /tmp/nets/tN --train-seed N --save tN.json``),
or several per training (blocks of draws, ``--first-draw``): files of the same training are merged, their draws
concatenated and their rates weighted by their window counts.
Prints, per training and as a spread over trainings, the issue's numbers (docs/monitor_decisions.md, session 15):
(1) each deployment's false-alarm rate on in-distribution windows of 200 (target <= 5% in >= 90% of draws),
which deployments fail and which test gave their alarms the smallest p-value; (2) detection of
bench_monitor.py's shifts at window 200 (target >= 90%, every kind); (3) in-distribution windows flagged
(target <= 10%) and the unflagged within 0.03 of realized AUC and ACC, beside the realized metrics' own
noise; (4) test-distribution windows unflagged and off by more than 0.03 (target none).

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_monitor_trainings.py t0.json t1.json t2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def spread(values: list[float], fmt: str = "{:.1%}") -> str:
    """min / median / max over trainings."""
    v = np.asarray(values, dtype=float)
    return f"min {fmt.format(v.min())}, median {fmt.format(np.median(v))}, max {fmt.format(v.max())}"


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One training's blocks of draws (``--save`` files of the same training seed) as one run."""
    parts = sorted(parts, key=lambda r: r["draws"][0])
    if len(parts) == 1:
        return parts[0]
    for key in ("half", "pool_half", "stream_look_test", "windows", "production"):
        if len({str(r.get(key)) for r in parts}) > 1:
            raise SystemExit(
                f"training {parts[0]['train_seed']}: its files differ in {key} "
                f"({', '.join(str(r.get(key)) for r in parts)}); merge only blocks of the same run"
            )
    draws = [d for r in parts for d in r["draws"]]
    if len(set(draws)) < len(draws):
        raise SystemExit(f"training {parts[0]['train_seed']}: a draw appears in two files ({draws})")

    def weighted(key: str, weight: str, rows: list[dict[str, Any]] | None = None) -> float:
        rows = parts if rows is None else rows
        w = np.array([r[weight] for r in rows], dtype=float)
        return float(np.sum(w * np.nan_to_num([r[key] for r in rows])) / w.sum()) if w.sum() else float("nan")

    kept = [
        r["in_windows"] * (1 - r["in_flagged"]) for r in parts
    ]  # unflagged windows: the noise figures' count
    noised = [(r["noise"], k) for r, k in zip(parts, kept, strict=True) if r["noise"]]
    kinds = list(dict.fromkeys(k for r in parts for k in r["detection"]))
    return (
        parts[0]
        | {
            "draws": draws,
            **{
                k: [x for r in parts for x in r[k]]
                for k in ("alarm_rates", "alarm_rates_marginal", "alarm_tests")
            },
            "in_flagged_per_draw": [x for r in parts for x in r["in_flagged_per_draw"]],
            "in_windows": sum(r["in_windows"] for r in parts),
            "in_flagged": weighted("in_flagged", "in_windows"),
            "in_unflagged_off": sum(r["in_unflagged_off"] for r in parts),
            "noise": {
                k: float(sum(n[k] * w for n, w in noised) / sum(w for _, w in noised)) for k in noised[0][0]
            }
            if noised
            else {},
            "detection": {
                k: float(
                    sum(r["detection"][k] * r["detection_windows"][k] for r in parts if k in r["detection"])
                    / sum(r["detection_windows"][k] for r in parts if k in r["detection"])
                )
                for k in kinds
            },
            "detection_windows": {k: sum(r["detection_windows"].get(k, 0) for r in parts) for k in kinds},
            "test_windows": sum(r["test_windows"] for r in parts),
            "test_flagged": weighted("test_flagged", "test_windows"),
            "test_off": [o for r in parts for o in r["test_off"]],
            "stream_null_alarms": sum(r["stream_null_alarms"] for r in parts),
            "stream_null_runs": sum(r["stream_null_runs"] for r in parts),
            "stream_600": weighted("stream_600", "stream_600_orders"),
            "stream_600_orders": sum(r["stream_600_orders"] for r in parts),
        }
        | (
            {
                "stream_windows": sum(r["stream_windows"] for r in parts),
                "stream_windows_flagged": weighted("stream_windows_flagged", "stream_windows"),
            }
            if all("stream_windows" in r for r in parts)
            else {}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "files", nargs="+", type=Path, help="bench_monitor_guarantee.py --save files, one per training"
    )
    ap.add_argument(
        "--production",
        choices=["same", "other"],
        default="same",
        help="sections 1 and 3 from the windows of the same pool half (before) or of the pool's other half "
        "(bench_monitor_guarantee.py --production other / both)",
    )
    args = ap.parse_args()
    by_training: dict[int, list[dict[str, Any]]] = {}
    # (training, draw, same-half rate, other-half rate, same-half tests, other-half tests, the marginal rule's
    # same-half and other-half rates): both protocols' windows
    paired: list[tuple[int, int, float, float, dict[str, int], dict[str, int], float, float]] = []
    for f in args.files:
        r = json.loads(f.read_text())
        if "alarm_rates" in r and "other_half" in r:
            o = r["other_half"]
            paired += list(
                zip(
                    [r["train_seed"]] * len(r["draws"]),
                    r["draws"],
                    r["alarm_rates"],
                    o["alarm_rates"],
                    r["alarm_tests"],
                    o["alarm_tests"],
                    r["alarm_rates_marginal"],
                    o["alarm_rates_marginal"],
                    strict=True,
                )
            )
        if args.production == "other":
            if "other_half" not in r:
                raise SystemExit(
                    f"{f}: no other-half windows (run bench_monitor_guarantee.py with --production other or both)"
                )
            r |= r["other_half"]
        elif "alarm_rates" not in r:
            raise SystemExit(
                f"{f}: no same-half windows (it was run with --production other): use --production other"
            )
        by_training.setdefault(r["train_seed"], []).append(r)
    runs = [merge(by_training[t]) for t in sorted(by_training)]
    looks = sorted({r["stream_look_test"] for r in runs})
    print(
        f"== {len(runs)} trainings (seeds {', '.join(str(r['train_seed']) for r in runs)}); test split {runs[0]['half']} "
        f"half, in-distribution pool {runs[0]['pool_half']}; stream_look_test {', '.join(looks)} =="
    )
    print(
        "deployment windows (sections 1, 3): "
        + (
            "the pool's other half (an independent sample, not the complement of the held-out rows)"
            if args.production == "other"
            else "the rest of the held-out rows' pool half"
        )
    )

    print(
        "\n1. Per-deployment false alarms (window alarm, threshold alpha*delta), target <= 5% in >= 90% of draws"
    )
    shares = []
    for r in runs:
        rates = np.asarray(r["alarm_rates"])
        share = float(np.mean(rates <= 0.05))
        shares.append(share)
        fail = [
            f"draw {d} {rate:.0%} ({', '.join(f'{k} {v}' for k, v in sorted(t.items()))})"
            for d, rate, t in zip(r["draws"], rates, r["alarm_tests"], strict=True)
            if rate > 0.05
        ]
        print(
            f"   [training {r['train_seed']}] {len(rates)} draws x {r['windows']} windows: mean {rates.mean():.1%}, "
            f"median {np.median(rates):.1%}, 90th pct {np.quantile(rates, 0.9):.1%}, max {rates.max():.1%}; draws <= 5%: "
            f"{share:.0%} -> {'met' if share >= 0.9 else 'NOT met'}"
            + (f"; above 5%: {'; '.join(fail)}" if fail else "")
        )
    pooled = np.concatenate([r["alarm_rates"] for r in runs])
    print(
        f"   over trainings: draws <= 5% {spread(shares, '{:.0%}')}; pooled {np.mean(pooled <= 0.05):.1%} of "
        f"{len(pooled)} draws (90th pct {np.quantile(pooled, 0.9):.1%}, max {pooled.max():.1%}); met in "
        f"{sum(s >= 0.9 for s in shares)} of {len(runs)} trainings"
    )
    old = np.concatenate([r["alarm_rates_marginal"] for r in runs])
    print(
        f"   the marginal rule (threshold alpha) on the same windows, pooled: draws <= 5% {np.mean(old <= 0.05):.1%}"
    )

    print("\n2. Detection of bench_monitor.py's shifts at window 200 (target >= 90%, every kind)")
    kinds = list(dict.fromkeys(k for r in runs for k in r["detection"]))
    worst = []
    for k in kinds:
        measured = [r for r in runs if k in r["detection"]]
        rates = [r["detection"][k] for r in measured]
        worst.append(min(rates))
        print(
            f"   {k:<24} per training {', '.join(f'{x:.0%}' for x in rates)} "
            f"({', '.join(str(r['detection_windows'][k]) for r in measured)} windows); {spread(rates, '{:.0%}')}"
        )
    print(
        f"   lowest over kinds and trainings: {min(worst):.0%} -> {'met' if min(worst) >= 0.9 else 'NOT met'}"
        if worst
        else "   not measured (--shift-draws 0)"
    )

    print(
        "\n3. Label-free estimate on unseen in-distribution windows (target <= 10% flagged; the unflagged within 0.03)"
    )
    for r in runs:
        n = r["noise"]
        per = r["in_flagged_per_draw"]
        print(
            f"   [training {r['train_seed']}] {r['in_windows']} windows: flagged {r['in_flagged']:.1%} (per draw max "
            f"{max(per):.0%}) -> {'met' if r['in_flagged'] <= 0.1 else 'NOT met'}; unflagged within 0.03 of realized "
            f"AUC and ACC {n['estimate_within']:.1%} ({r['in_unflagged_off']} off by more; ACC alone "
            f"{n['acc_within']:.1%}); realized ACC's own s.d. given the probabilities {n['acc_sd']:.3f}, a perfectly "
            f"calibrated estimate's ACC within 0.03 {n['acc_floor']:.1%}"
        )
    print(
        f"   over trainings: flagged {spread([r['in_flagged'] for r in runs])}; unflagged within 0.03 "
        f"{spread([r['noise']['estimate_within'] for r in runs])}; ACC's noise floor "
        f"{spread([r['noise']['acc_floor'] for r in runs])}"
    )

    print("\n4. Test-distribution windows unflagged and off by more than 0.03 (target none)")
    for r in runs:
        off = r["test_off"]
        if not r["test_windows"]:
            print(
                f"   [training {r['train_seed']}] not measured (no test-distribution streams: --stream-orders 0)"
            )
            continue
        where = ", ".join(
            f"draw {o['draw']} order {o['order']} window {o['pos'] + 1} (ACC off {o['err_acc']:.3f})"
            for o in off
        )
        print(
            f"   [training {r['train_seed']}] {len(off)} of {r['test_windows']} (flagged {r['test_flagged']:.1%})"
            + (f": {where}" if off else "")
        )
    counts = [len(r["test_off"]) for r in runs if r["test_windows"]]
    print(
        f"   over trainings: {sum(counts)} of {sum(r['test_windows'] for r in runs)}; per training "
        f"{', '.join(map(str, counts))} -> {'met' if sum(counts) == 0 else 'NOT met'}"
    )

    print(
        f"\n5. The stream ({', '.join(looks)}): in-distribution streams of 2,000 alarm in <= 5% of runs; the "
        "test-distribution stream alarms within 600 rows in >= 90% of orders"
    )
    streamed = [r for r in runs if r["stream_null_runs"] or r["stream_600_orders"]]
    for r in streamed:
        null = r["stream_null_alarms"] / r["stream_null_runs"] if r["stream_null_runs"] else float("nan")
        print(
            f"   [training {r['train_seed']}] in-distribution streams of 2,000: {r['stream_null_alarms']} of "
            f"{r['stream_null_runs']} alarmed ({null:.1%}); test distribution within 600 rows {r['stream_600']:.1%} "
            f"of {r['stream_600_orders']} orders -> {'met' if r['stream_600'] >= 0.9 else 'NOT met'}"
            + (
                f"; the stream's first 10 windows flagged {r['stream_windows_flagged']:.1%} of {r['stream_windows']}"
                if "stream_windows" in r
                else ""
            )
        )
    if streamed:
        runs_null = sum(r["stream_null_runs"] for r in streamed)
        alarms = sum(r["stream_null_alarms"] for r in streamed)
        orders = [r for r in streamed if r["stream_600_orders"]]
        print(
            f"   over trainings: in-distribution stream alarms {alarms} of {runs_null}"
            + (
                f" ({alarms / runs_null:.1%}) -> {'met' if alarms <= 0.05 * runs_null else 'NOT met'}"
                if runs_null
                else ""
            )
            + (
                f"; within 600 rows {spread([r['stream_600'] for r in orders])}, met in "
                f"{sum(r['stream_600'] >= 0.9 for r in orders)} of {len(orders)} trainings"
                if orders
                else ""
            )
        )

    if paired:
        same = np.array([p[2] for p in paired])
        other = np.array([p[3] for p in paired])
        print(
            f"\n6. The two production protocols on the same {len(paired)} references (window alarm, threshold "
            "alpha*delta): the rest of the held-out rows' pool half (same) against the pool's other half (other)"
        )
        print(
            f"   draws <= 5%: same {np.mean(same <= 0.05):.1%}, other {np.mean(other <= 0.05):.1%}; mean rate same "
            f"{same.mean():.2%}, other {other.mean():.2%}; rank correlation of a draw's two rates "
            f"{spearman(same, other):+.2f}"
        )
        ms, mo = np.array([p[6] for p in paired]), np.array([p[7] for p in paired])
        print(
            f"   the marginal rule (threshold alpha) on the same windows: draws <= 5% same {np.mean(ms <= 0.05):.1%}, "
            f"other {np.mean(mo <= 0.05):.1%}; mean rate same {ms.mean():.2%}, other {mo.mean():.2%}; "
            f"90th pct same {np.quantile(ms, 0.9):.1%}, other {np.quantile(mo, 0.9):.1%}"
        )
        for t, d, a, b, ta, tb, _, _ in paired:
            if a > 0.05 or b > 0.05:
                print(
                    f"   training {t} draw {d}: same {a:.0%} ({tests_text(ta)}), other {b:.0%} ({tests_text(tb)})"
                )


def tests_text(tests: dict[str, int]) -> str:
    """Which test gave a deployment's alarming windows their smallest p-value, and how often."""
    return ", ".join(f"{k} {v}" for k, v in sorted(tests.items())) or "none"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


if __name__ == "__main__":
    main()
