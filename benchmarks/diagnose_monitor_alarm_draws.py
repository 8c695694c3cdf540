"""Issue 19: why does one deployment's window alarm exceed 5%? Its reference, or its production?

Reproduces deployments of ``bench_monitor_guarantee.py --pool-half report`` exactly (the same held-out rows,
profile and 50 windows from its production, the 988 other rows of the pool's report half) and scores the same
reference on windows from the pool's **other** half: unseen in-distribution rows that are not the complement
of its held-out rows. If the alarm rate falls there, the deployment's production (a finite complement of the
held-out rows) carries the excess; if it stays, the reference does. A diagnosis only: nothing is chosen from it.

Run: PYTHONPATH=src .venv/bin/python benchmarks/diagnose_monitor_alarm_draws.py --workdir /tmp/nets/t0
--train-seed 0 --draws 304 308
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--remove", type=int, default=2500)
    ap.add_argument("--pool", type=int, default=262)
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--draws", type=int, nargs="+", required=True)
    args = ap.parse_args()

    from bench_monitor_guarantee import deployment, draw_deployment
    from tune_monitor_last_window import pool_halves

    from closedloop.monitoring.drift import Sample
    from closedloop.monitoring.profile import forward_all, model_input, summary_features
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    t0 = time.time()
    run, data, task, model, Xu, yu = deployment(Path(args.workdir), args.remove, args.train_seed)
    cfg = BuildMonitorProfileConfig(window_sizes=[200])
    halves = pool_halves(len(yu))
    print(
        f"== training seed {args.train_seed} ({run.name}); deployments {args.draws} of the pool's report half; "
        f"{args.windows} windows of 200 from its production (as the run) and from the pool's development half =="
    )
    full = None
    for d in args.draws:
        rng = np.random.default_rng([19, d])
        pool, rest, profile, mon = draw_deployment(
            data, task, model, cfg, (Xu, yu), halves["report"], rng, args.pool, d
        )
        if full is None:
            emb, proba = forward_all(model, model_input(profile.info, Xu))
            feats = summary_features(profile.info, Xu)
        full = Sample(features=feats, embeddings=profile.reduce(emb), proba=proba)
        thr = profile.threshold_for(200)["alarm"]
        other = np.random.default_rng([19, d, 1])
        rates = {}
        for name, source, g in (("its production", rest, rng), ("the other half", halves["dev"], other)):
            alarms, tests = [], {}
            for w in range(args.windows):
                idx = g.choice(source, 200, replace=False)
                r = mon.evaluate(full.take(idx), seed=[d, w] if name == "its production" else [d, 10_000 + w])
                alarms.append(r["min_p"] <= thr)
                if alarms[-1]:
                    top = min(r["p_values"], key=lambda k: r["p_values"][k])
                    tests[top] = tests.get(top, 0) + 1
            rates[name] = (float(np.mean(alarms)), tests)
        print(
            f"  draw {d}: threshold {thr:.4f}; alarm rate on windows from "
            + "; ".join(
                f"{k} {v:.0%} ({', '.join(f'{t} {n}' for t, n in sorted(ts.items())) or 'none'})"
                for k, (v, ts) in rates.items()
            )
            + f"; {time.time() - t0:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
