"""Issue 19: the per-deployment numbers over several trainings, from bench_monitor_guarantee.py's ``--save`` files.

One JSON file per training (``bench_monitor_guarantee.py --workdir /tmp/nets/tN --train-seed N --save tN.json``).
Prints, per training and as a spread over trainings, the issue's numbers (docs/monitor.md, session 15):
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "files", nargs="+", type=Path, help="bench_monitor_guarantee.py --save files, one per training"
    )
    args = ap.parse_args()
    runs: list[dict[str, Any]] = [json.loads(f.read_text()) for f in args.files]
    runs.sort(key=lambda r: r["train_seed"])
    looks = sorted({r["stream_look_test"] for r in runs})
    print(
        f"== {len(runs)} trainings (seeds {', '.join(str(r['train_seed']) for r in runs)}); test split {runs[0]['half']} "
        f"half, in-distribution pool {runs[0]['pool_half']}; stream_look_test {', '.join(looks)} =="
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
    kinds = list(runs[0]["detection"])
    worst = []
    for k in kinds:
        rates = [r["detection"][k] for r in runs]
        worst.append(min(rates))
        print(
            f"   {k:<24} per training {', '.join(f'{x:.0%}' for x in rates)} "
            f"({runs[0]['detection_windows'][k]} windows each); {spread(rates, '{:.0%}')}"
        )
    print(
        f"   lowest over kinds and trainings: {min(worst):.0%} -> {'met' if min(worst) >= 0.9 else 'NOT met'}"
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
        where = ", ".join(f"draw {o['draw']} window {o['pos'] + 1} (ACC off {o['err_acc']:.3f})" for o in off)
        print(
            f"   [training {r['train_seed']}] {len(off)} of {r['test_windows']} (flagged {r['test_flagged']:.1%})"
            + (f": {where}" if off else "")
        )
    counts = [len(r["test_off"]) for r in runs if r["test_windows"]]
    print(
        f"   over trainings: {sum(counts)} of {sum(r['test_windows'] for r in runs)}; per training "
        f"{', '.join(map(str, counts))} -> {'met' if sum(counts) == 0 else 'NOT met'}"
    )

    print("\n(the stream, stream6's item, printed for completeness)")
    for r in runs:
        if not r["stream_null_runs"] and not r["stream_600_orders"]:
            continue
        print(
            f"   [training {r['train_seed']}] in-distribution streams of 2,000: {r['stream_null_alarms']} of "
            f"{r['stream_null_runs']} alarmed; test distribution within 600 rows {r['stream_600']:.0%} of "
            f"{r['stream_600_orders']} orders"
        )


if __name__ == "__main__":
    main()
