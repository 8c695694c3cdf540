"""Issue 19, tuning the domain check on the DEVELOPMENT half of the test split (never the report half).

For a few deployments (draws of 262 unseen held-out rows, as in bench_monitor_guarantee.py), windows of
200 from unseen in-distribution rows and from the dev half of PneumoniaMNIST's test split: the domain
classifier's p-value and ESS fraction under four settings, measured on the same windows in one run:

* ``before``: reference half only (131 rows), inputs = model outputs + 8 embedding components (the
  previous default);
* ``pool``: every held-out row (262) on the reference side, same inputs;
* ``features``: reference half, inputs + the monitored summary features (intensity statistics, grid);
* ``pool+features``: both (the new default).

Then, per setting and domain p-value level, the share of windows flagged (in distribution: the false
flags; test distribution: the power), and how far plain CBPE is from the realized metrics on them.
The defaults were read off this table; bench_monitor_guarantee.py --half report measures them.

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_domain.py dev 6  (needs the workdir of
bench_monitor_guarantee.py, /tmp/mon19/r2500, trained once by it)
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = {
    "before": (False, False),
    "pool": (True, False),
    "features": (False, True),
    "pool+features": (True, True),
}
"""name -> (every held-out row on the reference side, summary features as inputs)."""


def main() -> None:
    from bench_monitor_guarantee import test_halves, trained_run

    from closedloop.data.bundle import DatasetBundle, Split
    from closedloop.models.trained import TrainedModel
    from closedloop.monitoring.domain import domain_check
    from closedloop.monitoring.drift import Sample
    from closedloop.monitoring.estimate import estimate, realized
    from closedloop.monitoring.profile import forward_all, model_input, summary_features
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig, build_profile
    from closedloop.stages.task import TaskSpec
    from closedloop.stages.train.heldout import INFO_KEY

    half, draws = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:  # variants of the classifier's settings: C=0.1,WINSORIZE=4
        import closedloop.monitoring.domain as dom

        for kv in sys.argv[3].split(","):
            k, v = kv.split("=")
            setattr(dom, k, float(v))
        print("settings:", sys.argv[3])
    if half != "dev":
        raise SystemExit("tune on the development half only: tune_monitor_domain.py dev DRAWS")
    run, Xu, yu = trained_run(Path("/tmp/mon19/r2500"), 2500)
    data = DatasetBundle.load(next(run.glob("stages/*_data/artifacts/data")))
    task = TaskSpec.load(next(run.glob("stages/*_task/artifacts/task")))
    model = TrainedModel.load(next(run.glob("stages/*_train/artifacts/model")))
    model.info = {k: v for k, v in model.info.items() if k != INFO_KEY} | {"trained_on": "train"}
    # the domain check needs no calibrated thresholds: few calibration windows keep this fast
    cfg = BuildMonitorProfileConfig(window_sizes=[200], calibration_windows=20)
    Xt, yt = test_halves()[half]
    rows = []
    for d in range(draws):
        # other draws than the report run's ([19, d]): its in-distribution windows are not tuned on either
        rng = np.random.default_rng([190, d])
        perm = rng.permutation(len(yu))
        pool, rest = np.sort(perm[:262]), perm[262:]
        bundle = dataclasses.replace(data, splits={**data.splits, "val": Split(X=Xu[pool], y=yu[pool])})
        profile = build_profile(cfg, bundle, task, model, np.random.default_rng([7, d]))
        info = profile.info
        if d == 0:
            f_u, f_t = summary_features(info, Xu), summary_features(info, Xt)
            emb_u, pu = forward_all(model, model_input(info, Xu))
            emb_t, pt = forward_all(model, model_input(info, Xt))
        for kind, f, emb, p, y, n in (("in", f_u, emb_u, pu, yu, 15), ("test", f_t, emb_t, pt, yt, 8)):
            for _ in range(n):
                idx = rng.choice(rest if kind == "in" else len(y), 200, replace=False)
                win = Sample(features=f[idx], embeddings=profile.reduce(emb[idx]), proba=p[idx])
                real = realized(["auc", "acc"], y[idx], p[idx], "binary", info.threshold)
                e = estimate(p[idx], "binary", info.threshold, ["auc", "acc"])
                row = {
                    "draw": d,
                    "kind": kind,
                    "err": max(abs(e[m]["value"] - real[m]) for m in ("auc", "acc")),
                }
                for name, (use_pool, feats) in SETTINGS.items():
                    ref = profile.domain if use_pool else profile.reference
                    chk, _ = domain_check(ref, win, "binary", rng, features=feats)
                    row[f"p {name}"], row[f"essf {name}"] = chk.p_value, chk.ess_fraction
                    row[f"auc {name}"] = chk.auc
                rows.append(row)
        print(f"draw {d}: reference side {len(profile.reference)} / {len(profile.domain)} rows", flush=True)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    n_in, n_test = int((df.kind == "in").sum()), int((df.kind == "test").sum())
    print(f"\n{n_in} in-distribution and {n_test} dev-half test windows of 200, {draws} draws")
    print(
        "test windows where plain CBPE is off by more than 0.03:",
        f"{(df[df.kind == 'test'].err > 0.03).mean():.0%}",
    )
    for name in SETTINGS:
        s_in, s_te = df[df.kind == "in"], df[df.kind == "test"]
        print(
            f"{name:<14} domain AUC median in {s_in[f'auc {name}'].median():.3f} / test {s_te[f'auc {name}'].median():.3f}; "
            f"test p median {s_te[f'p {name}'].median():.2g}; ESS fraction min in {s_in[f'essf {name}'].min():.2f} "
            f"/ test {s_te[f'essf {name}'].min():.2f}"
        )
        for level in (0.001, 0.01, 0.05):
            fin = (s_in[f"p {name}"] <= level).mean()
            fte = (s_te[f"p {name}"] <= level).mean()
            per_draw = s_te.groupby("draw")[f"p {name}"].apply(lambda v, lv=level: (v <= lv).mean())
            print(
                f"    p <= {level:<5}: in-distribution flagged {fin:.1%}, test flagged {fte:.1%} "
                f"(per draw min {per_draw.min():.0%})"
            )


if __name__ == "__main__":
    main()
