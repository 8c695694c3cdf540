"""Issue 19: the stream alarm of ONE deployment. Per reference draw, how often does an unseen
in-distribution stream of 2,000 images raise it, and how soon does the test distribution?

The model and the draws are benchmarks/bench_monitor_guarantee.py's (``--workdir`` keeps the trained
run: PneumoniaMNIST with 2,500 random train images removed before training; draw ``d`` takes the same
262 of them as its held-out rows). Each draw builds its profile (monitor stage defaults) and runs the
profile's stream test (``stream_test: reference``) on

1. ``--null-streams`` in-distribution streams per draw: 2,000 rows drawn from the draw's other unseen
   images (a random subset, in a random order), read every 200 rows. One draw's alarm rate is its
   share of streams that alarm; the target is <= 5% of runs **per deployment** (in >= 90% of draws).
   The streams of one draw share most of their rows (2,000 of 2,238), so a draw's rate measures mostly
   how lucky its reference is (the part the guarantee is about), not the luck of fresh streams.
2. the test distribution streamed as production (``--half``: development half to look at, report half
   measured once): streams of 600 rows (three windows of 200 from the 312 rows of the half, each
   without repeats) and the whole half in a random order, read live (looks at row 200) and as a file
   (a last look at row 312). Target: alarm within 600 rows in >= 90% of orders.

Every look's p-value is kept, so both alarm rules are scored on the same streams: the stream alarm
spending ``stream_alpha`` over runs (``stream_delta: null``, sessions 8-9) and the per-deployment one
spending ``stream_alpha * stream_delta`` (the default since session 10). A stream alarms at level
``L`` iff some look ``k`` has ``p_k <= L / (k (k + 1))``; the printed ``need`` is the smallest such
``L`` of a stream (the level at which it would have alarmed).

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_monitor_stream_deployment.py --workdir /tmp/mon19/r2500 --half dev
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

STREAM_ROWS = 2000
TEST_STREAM_ROWS = 600


def spread(rates: list[float], target: float) -> str:
    r = np.asarray(rates)
    return (
        f"mean {r.mean():.1%}, median {np.median(r):.1%}, 90th pct {np.quantile(r, 0.9):.1%}, max {r.max():.1%}; "
        f"draws <= {target:.0%}: {np.mean(r <= target + 1e-12):.0%} of {len(r)}"
    )


def run_stream(test, rows, chunk: int = 200, last: bool = False) -> list[tuple[int, float]]:
    """(rows so far, p-value) at each look of a fixed-reference stream test fed ``chunk`` rows at a time."""
    looks = []
    for start in range(0, len(rows), chunk):
        before = test.looks
        test.update(rows.take(np.arange(start, min(len(rows), start + chunk))))
        if test.looks > before:
            looks.append((test.n, float(test.p_value)))
    if last:
        before = test.looks
        test.finish()
        if test.looks > before:
            looks.append((test.n, float(test.p_value)))
    return looks


def need(looks: list[tuple[int, float]]) -> float:
    """The smallest level at which these looks raise the alarm: min over looks of p_k / w_k."""
    from closedloop.monitoring.stream_reference import spend

    return min((p / spend(k) for k, (_, p) in enumerate(looks, start=1)), default=float("inf"))


def alarm_row(looks: list[tuple[int, float]], level: float) -> int | None:
    from closedloop.monitoring.stream_reference import spend

    for k, (n, p) in enumerate(looks, start=1):
        if p <= level * spend(k):
            return n
    return None


def main() -> None:
    from bench_monitor_guarantee import SPLIT_SEED, deployment, deployment_parser, test_halves

    ap = deployment_parser()
    ap.add_argument("--orders", type=int, default=5, help="test-distribution streams per draw")
    args = ap.parse_args()

    from closedloop.data.bundle import Split
    from closedloop.monitoring.drift import Sample
    from closedloop.monitoring.profile import forward_all, model_input, summary_features
    from closedloop.monitoring.stream_reference import ReferenceStreamTest, new_stream_test
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig, build_profile

    t0 = time.time()
    run, data, task, model, Xu, yu = deployment(Path(args.workdir), args.remove, args.train_seed)
    cfg = BuildMonitorProfileConfig(window_sizes=[200])
    alpha, delta = cfg.stream_alpha, cfg.stream_delta
    assert delta is not None
    rules = {"over runs (stream_delta null)": alpha, "per deployment (stream_delta 0.1)": alpha * delta}
    print(
        f"== PneumoniaMNIST, {args.remove} train images removed before training (unseen, in-distribution); model "
        f"{run.name}; {args.draws} deployments (bench_monitor_guarantee.py's draws), each with {args.pool} unseen "
        f"images as its held-out rows; stream test '{cfg.stream_test}', a look every {cfg.stream_look} rows; "
        f"stream_alpha {alpha}, stream_delta {delta}; test distribution: {args.half} half (seed {SPLIT_SEED}) =="
    )
    Xt, yt = test_halves()[args.half]
    info0 = None
    null_need: list[list[float]] = []  # per draw, per stream
    t600: list[list[tuple[int, float]]] = []
    whole_live: list[list[tuple[int, float]]] = []
    whole_file: list[list[tuple[int, float]]] = []
    configured_agrees = True
    for d in range(args.draws):
        rng = np.random.default_rng([19, d])
        perm = rng.permutation(len(yu))
        pool, rest = np.sort(perm[: args.pool]), perm[args.pool :]
        bundle = dataclasses.replace(data, splits={**data.splits, "val": Split(X=Xu[pool], y=yu[pool])})
        profile = build_profile(cfg, bundle, task, model, np.random.default_rng([7, d]))
        info = profile.info
        if info0 is None:
            info0 = info
            feats_u, (emb_u, proba_u) = summary_features(info, Xu), forward_all(model, model_input(info, Xu))
            feats_t, (emb_t, proba_t) = summary_features(info, Xt), forward_all(model, model_input(info, Xt))
        full = Sample(features=feats_u, embeddings=profile.reduce(emb_u), proba=proba_u)
        tsample = Sample(features=feats_t, embeddings=profile.reduce(emb_t), proba=proba_t)
        srng = np.random.default_rng([19, d, 2])
        needs = []
        for o in range(args.null_streams):
            test = new_stream_test(profile, seed=[d, 1, o])
            assert isinstance(test, ReferenceStreamTest)
            looks = run_stream(test, full.take(srng.choice(rest, STREAM_ROWS, replace=False)))
            needs.append(need(looks))
            # the profile's own test (per-deployment level) raised its alarm exactly where the looks say
            configured_agrees &= test.alarm_at == alarm_row(looks, alpha * delta)
        null_need.append(needs)
        for o in range(args.orders):
            idx = np.concatenate([srng.choice(len(yt), 200, replace=False) for _ in range(3)])
            t600.append(run_stream(new_stream_test(profile, seed=[d, 2, o]), tsample.take(idx)))
            order = srng.permutation(len(yt))
            whole_live.append(run_stream(new_stream_test(profile, seed=[d, 3, o]), tsample.take(order)))
            whole_file.append(
                run_stream(new_stream_test(profile, seed=[d, 3, o]), tsample.take(order), last=True)
            )
        print(
            f"  draw {d:>2}: in-distribution streams alarm: over runs {sum(n <= alpha for n in needs)}/{len(needs)}, "
            f"per deployment {sum(n <= alpha * delta for n in needs)}/{len(needs)}; level needed to alarm "
            f"(min over looks of p_k/w_k) median {np.median(needs):.3g}, min {min(needs):.3g}; {time.time() - t0:.0f} s",
            flush=True,
        )
    assert info0 is not None
    print(f"\nguarantee (profile sentence): {info0.guarantee}")
    print(
        f"the profile's stream test raised its alarm where the recorded looks say at level alpha*delta: {configured_agrees}"
    )
    print(
        f"\n1. Unseen in-distribution streams of {STREAM_ROWS} rows, {args.null_streams} per draw, {args.draws} draws"
    )
    for label, level in rules.items():
        rates = [float(np.mean([n <= level for n in needs])) for needs in null_need]
        pooled = np.mean([n <= level for needs in null_need for n in needs])
        print(
            f"   [{label}] stream alarm in {pooled:.1%} of {sum(map(len, null_need))} runs; per draw: "
            f"{spread(rates, alpha)} (target <= 5% of runs per deployment)"
        )
    draw_need = np.array([min(n) for n in null_need])
    print(
        f"   smallest level needed to alarm, per draw (min over its streams): median {np.median(draw_need):.3g}, "
        f"10th pct {np.quantile(draw_need, 0.1):.3g}, min {draw_need.min():.3g}"
    )
    print(f"\n2. Test distribution ({args.half} half, {len(yt)} rows), {len(t600)} orders")
    for label, level in rules.items():
        rows600 = [alarm_row(lk, level) for lk in t600]
        hit = np.mean([r is not None and r <= TEST_STREAM_ROWS for r in rows600])
        at = [r for r in rows600 if r is not None]
        live = np.mean([alarm_row(lk, level) is not None for lk in whole_live])
        end = np.mean([alarm_row(lk, level) is not None for lk in whole_file])
        print(
            f"   [{label}] streams of {TEST_STREAM_ROWS}: alarm within {TEST_STREAM_ROWS} rows in {hit:.0%} "
            f"(target >= 90%), median row {np.median(at) if at else float('nan'):.0f}; all {len(yt)} rows live "
            f"(one look, row 200) {live:.0%}; as a file (a last look at row {len(yt)}) {end:.0%}"
        )
    within = np.array([need([lk for lk in looks if lk[0] <= TEST_STREAM_ROWS]) for looks in t600])
    print(
        f"   level needed to alarm within {TEST_STREAM_ROWS} rows: median {np.median(within):.2g}, 90th pct "
        f"{np.quantile(within, 0.9):.2g}, max {within.max():.2g} (alarms at the per-deployment level "
        f"{alpha * delta:g} when below it)"
    )
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
