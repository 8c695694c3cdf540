"""Issue 19, tuning the domain check on the DEVELOPMENT half of the test split (never the report half).

For a few deployments (draws of 262 unseen held-out rows, as in bench_monitor_guarantee.py), windows of
200 from unseen in-distribution rows and from the dev half of PneumoniaMNIST's test split: the domain
classifier's AUC, p-value, ESS fraction and largest weight share, and the max(|AUC err|, |ACC err|) of
three estimates against the realized metrics: plain CBPE, CBPE after the importance-weighted Platt
calibration, and after an unweighted Platt refit. Then a grid of (domain p-value level, min ESS
fraction): the share of windows flagged, and of the unflagged, the share within 0.03. The defaults
(domain_alpha 0.01, min_ess_fraction 0.5) were read off this table; bench_monitor_guarantee.py
--half report measures them. Output: docs/results/monitor_domain_dev.txt.

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_domain.py dev 4  (needs the workdir of
bench_monitor_guarantee.py, /tmp/mon19/r2500, trained once by it)
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from bench_monitor_guarantee import test_halves, trained_run

    from closedloop.data.bundle import DatasetBundle, Split
    from closedloop.models.trained import TrainedModel
    from closedloop.monitoring.domain import domain_check, weighted_platt
    from closedloop.monitoring.drift import Sample
    from closedloop.monitoring.estimate import estimate, realized
    from closedloop.monitoring.profile import forward_all, model_input
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig, build_profile
    from closedloop.stages.task import TaskSpec
    from closedloop.stages.train.heldout import INFO_KEY

    half, draws = sys.argv[1], int(sys.argv[2])
    if half != "dev":
        raise SystemExit("tune on the development half only: tune_monitor_domain.py dev DRAWS")
    run, Xu, yu = trained_run(Path("/tmp/mon19/r2500"), 2500)
    data = DatasetBundle.load(next(run.glob("stages/*_data/artifacts/data")))
    task = TaskSpec.load(next(run.glob("stages/*_task/artifacts/task")))
    model = TrainedModel.load(next(run.glob("stages/*_train/artifacts/model")))
    model.info = {k: v for k, v in model.info.items() if k != INFO_KEY} | {"trained_on": "train"}
    cfg = BuildMonitorProfileConfig(window_sizes=[200])
    Xt, yt = test_halves()[half]
    rows = []
    for d in range(draws):
        rng = np.random.default_rng([19, d])
        perm = rng.permutation(len(yu))
        pool, rest = np.sort(perm[:262]), perm[262:]
        bundle = dataclasses.replace(data, splits={**data.splits, "val": Split(X=Xu[pool], y=yu[pool])})
        profile = build_profile(cfg, bundle, task, model, np.random.default_rng([7, d]))
        info = profile.info
        if d == 0:
            emb_u, pu = forward_all(model, model_input(info, Xu))
            emb_t, pt = forward_all(model, model_input(info, Xt))
        ref = profile.reference
        for kind, emb, p, y, n in (("in", emb_u, pu, yu, 15), ("test", emb_t, pt, yt, 8)):
            for _ in range(n):
                idx = rng.choice(rest if kind == "in" else len(y), 200, replace=False)
                win = Sample(features=np.zeros((200, 1)), embeddings=profile.reduce(emb[idx]), proba=p[idx])
                chk, wts = domain_check(ref, win, "binary", rng)
                real = realized(["auc", "acc"], y[idx], p[idx], "binary", info.threshold)
                errs = []
                for weights in (None, wts, np.ones(len(wts))):
                    q = p[idx] if weights is None else weighted_platt(ref.proba, ref.labels, weights, p[idx])
                    e = estimate(q, "binary", info.threshold, ["auc", "acc"])
                    errs.append(max(abs(e[m]["value"] - real[m]) for m in ("auc", "acc")))
                rows.append((kind, chk.auc, chk.p_value, chk.ess_fraction, chk.max_weight_share, *errs))
        print("draw", d, flush=True)
    df = pd.DataFrame(
        rows, columns=["kind", "auc", "p", "essf", "maxw", "err_cbpe", "err_wplatt", "err_platt"]
    )
    pd.set_option("display.width", 200)
    print(df.groupby("kind").describe().T.to_string())
    for kind in ("in", "test"):
        s = df[df.kind == kind]
        for pl in (0.001, 0.01, 0.05):
            for ef in (0.2, 0.3, 0.5):
                flag = (s.p <= pl) | (s.essf < ef)
                ok = [(s[c][~flag] <= 0.03).mean() for c in ("err_cbpe", "err_wplatt", "err_platt")]
                print(
                    f"{kind} {pl} {ef} flagged {flag.mean():.2f} unflagged ok cbpe {ok[0]:.2f} "
                    f"wplatt {ok[1]:.2f} platt {ok[2]:.2f}"
                )


if __name__ == "__main__":
    main()
