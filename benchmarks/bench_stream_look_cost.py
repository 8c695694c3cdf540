"""Issue 19: what one look of the reference stream test costs, ``stream_look_test`` classifier vs mean_shift.

A look runs every 200 rows (``stream_look``) on every row since the reference (a reservoir of at most
2,000). A ``mean_shift`` look runs the permutation test with up to ``look_permutations(k)`` relabellings
(1,999 at look 1, 43,999 at look 10), stopped once 10 reach the observed statistic; after the alarm, 1,999.
So its cost depends on the stream: an in-distribution stream stops after a few dozen relabellings, a
strong shift alarms at the first look, and the dearest case is a mild shift that keeps the p-value small
without reaching the alarm (every look runs most of its relabellings).

One deployment of a trained PneumoniaMNIST network (``--workdir``, its training seed; 262 unseen images
as held-out rows, the monitor stage's defaults), three streams of ``--rows`` rows: in-distribution (unseen
images), a mild mix (``--mix`` of its rows from the test split's development half, the rest unseen), the
test distribution (development half, drawn with repeats: timing only). Two inputs: what the live monitor
feeds when the request log has no inputs (the served outputs: ``LiveMonitor`` updates its stream test with
``Sample(features=<none>, proba=rows)``), and the full inputs (summary features, embeddings, outputs: the
offline ``closedloop monitor`` and a log with inputs). Each look's wall time is printed (niced: a time,
not a test; the machine's load is printed beside it).

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_stream_look_cost.py --workdir /tmp/nets/t0 --train-seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from bench_monitor_guarantee import deployment, draw_deployment, test_halves

    from closedloop.monitoring.drift import Sample
    from closedloop.monitoring.profile import forward_all, model_input, summary_features
    from closedloop.monitoring.stream_reference import LOOK_TESTS, ReferenceStreamTest
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, help="a trained network's workdir (outside the repo)")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--remove", type=int, default=2500)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument(
        "--mix", type=float, default=0.1, help="share of test-distribution rows in the mild stream"
    )
    ap.add_argument("--draw", type=int, default=0, help="the deployment (held-out rows' draw)")
    args = ap.parse_args()

    print(
        f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 shared cores)", flush=True
    )
    run, data, task, model, Xu, yu = deployment(Path(args.workdir), args.remove, args.train_seed)
    cfg = BuildMonitorProfileConfig(window_sizes=[200])
    rng = np.random.default_rng([19, args.draw])
    _, rest, profile, _ = draw_deployment(
        data, task, model, cfg, (Xu, yu), np.arange(len(yu)), rng, 262, args.draw
    )
    info = profile.info
    Xt, _ = test_halves()["dev"]
    emb_u, p_u = forward_all(model, model_input(info, Xu))
    emb_t, p_t = forward_all(model, model_input(info, Xt))
    full_u = Sample(features=summary_features(info, Xu), embeddings=profile.reduce(emb_u), proba=p_u)
    full_t = Sample(features=summary_features(info, Xt), embeddings=profile.reduce(emb_t), proba=p_t)
    n_mix = int(round(args.mix * args.rows))
    srng = np.random.default_rng([19, args.draw, 3])
    streams = {
        "in-distribution": (full_u, srng.choice(rest, args.rows, replace=False)),
        f"mild mix ({args.mix:.0%} test rows)": None,
        "test distribution": (full_t, srng.choice(len(Xt), args.rows, replace=True)),
    }
    mix_u = srng.choice(rest, args.rows - n_mix, replace=False)
    mix_t = srng.choice(len(Xt), n_mix, replace=False)
    order = srng.permutation(args.rows)
    both = Sample(
        features=np.concatenate([full_u.features[mix_u], full_t.features[mix_t]])[order],
        embeddings=np.concatenate([full_u.embeddings[mix_u], full_t.embeddings[mix_t]])[order],
        proba=np.concatenate([full_u.proba[mix_u], full_t.proba[mix_t]])[order],
    )
    streams[f"mild mix ({args.mix:.0%} test rows)"] = (both, np.arange(args.rows))
    print(
        f"model {run.name} (training seed {args.train_seed}); deployment {args.draw}: {len(profile.domain)} held-out rows; "
        f"streams of {args.rows} rows, a look every {info.stream_look}; alarm at p_k <= "
        f"{info.stream_alpha * info.stream_delta:g}/(k(k+1))",
        flush=True,
    )
    for inputs in (
        "outputs only (live monitor, log without inputs)",
        "full inputs (offline, or a log with inputs)",
    ):
        print(f"\n== {inputs} ==")
        for name, (sample, idx) in streams.items():
            rows = sample.take(idx)
            if inputs.startswith("outputs"):
                rows = Sample(features=np.zeros((len(idx), 0)), proba=rows.proba)
            ref = profile.domain  # as new_stream_test(profile) builds it, live or offline
            for look_test in LOOK_TESTS:
                test = ReferenceStreamTest(
                    ref,
                    info.problem_type,
                    info.stream_alpha,
                    seed=[args.draw, 9],
                    look_rows=info.stream_look,
                    delta=info.stream_delta,
                    look_test=look_test,
                )
                secs = []
                for start in range(0, len(rows), info.stream_look):
                    t = time.perf_counter()
                    test.update(rows.take(np.arange(start, min(len(rows), start + info.stream_look))))
                    secs.append(time.perf_counter() - t)
                s = np.array(secs)
                print(
                    f"[{look_test:>10}] {name}: {len(s)} looks, per look median {np.median(s):.2f} s, max "
                    f"{s.max():.2f} s (look {int(s.argmax()) + 1}), all looks {s.sum():.1f} s; alarm at "
                    f"{test.alarm_at}; per look: {' '.join(f'{x:.2f}' for x in s)}",
                    flush=True,
                )
    print(f"\nload average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
