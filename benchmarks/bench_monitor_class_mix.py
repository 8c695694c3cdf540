"""The monitor's class-mix estimate on diamonds: does it find production's class mix from the model's
decisions alone, does its interval cover the truth, does it stay quiet in distribution, and is its
accuracy-at-the-mix closer to the realized accuracy than the label-free (CBPE) estimate?

The champions and the production pool are those of ``bench_adapt_multiclass.py`` (12,000 rows at the
table's mix, trees and an MLP, each with the monitor stage's defaults; 41,940 production rows no model
saw), and so are the scenarios: in distribution, a class-mix change (Fair 25%, Good 30%, Very Good 25%,
Premium 12%, Ideal 8%), and the dearest quarter (a covariate change, which the estimate does not
assume). Per draw: one window of N production rows through ``Monitor.check``, as ``closedloop monitor``
runs it. Printed per (champion, scenario, N): the largest error of the estimated shares against the
window's true shares, how often every class's 95% interval covers its true share, how often the estimate
is shown in the window's evidence (the monitor's predicted-class test at the level that withholds the
label-free estimate), and the error of the accuracy at the estimated mix and of the CBPE estimate
(withheld or not) against the window's realized accuracy. Nothing was tuned here.

    python benchmarks/bench_monitor_class_mix.py [--draws 30] [--sizes 200,500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_adapt_multiclass import N_CHAMPION, ORDER, champion, sampler  # noqa: E402
from bench_tables import diamonds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=30)
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument("--sizes", default="200,500")
    ap.add_argument("--families", default="lgbm,mlp")
    args = ap.parse_args()

    from closedloop.monitoring.monitor import Monitor

    X, y, _ = diamonds()
    perm = np.random.default_rng(0).permutation(len(y))
    n_ch = sum(N_CHAMPION)
    table = X.iloc[perm[:n_ch]].reset_index(drop=True).copy()
    table["label"] = np.asarray(ORDER)[y[perm[:n_ch]]]
    table["split"] = np.repeat(["train", "val", "test"], N_CHAMPION)
    Xp, yp = X.iloc[perm[n_ch:]].reset_index(drop=True), y[perm[n_ch:]]
    print(
        f"bench_monitor_class_mix ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): diamonds, champions on "
        f"{n_ch} rows, production pool {len(yp)} rows; draws {args.first_draw}-{args.first_draw + args.draws - 1}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_mix_") as tmp:
        work = Path(tmp)
        for family in args.families.split(","):
            run = champion(family, table, work, ({"kind": "monitor"},))
            mon = Monitor.load(run)
            names = list(mon.profile.info.label_names)
            to_model = np.array([names.index(c) for c in ORDER])  # table class -> the model's index
            k = len(names)
            print(
                f"\n== {family} champion {run.name}; {len(mon.profile.domain.proba)} held-out rows in its monitor reference"
            )
            for scenario in ("in_distribution", "label_shift", "covariate_shift"):
                draw = sampler(scenario, Xp, yp)
                for n in (int(v) for v in args.sizes.split(",")):
                    err, cover, moved, acc_err, cbpe_err, withheld, none = [], [], [], [], [], [], 0
                    for i in range(args.first_draw, args.first_draw + args.draws):
                        idx = draw(np.random.default_rng([13, i, n]), n, np.array([], int))
                        yw = to_model[yp[idx]]
                        truth = np.bincount(yw, minlength=k) / n
                        out = mon.check(Xp.iloc[idx].reset_index(drop=True))
                        mix = out["class_mix"]
                        pred = mon.model.predict_proba(Xp.iloc[idx].reset_index(drop=True)).argmax(1)
                        acc = float(np.mean(pred == yw))
                        cb = (out["estimated"] or out["estimate_withheld"]).get("acc")
                        if cb is not None:
                            cbpe_err.append(abs(cb - acc))
                        withheld.append(not out["estimate_reliable"])
                        if mix is None:
                            none += 1
                            continue
                        est, lo, hi = (np.array(mix[key]) for key in ("estimated", "low", "high"))
                        err.append(float(np.max(np.abs(est - truth))))
                        cover.append(bool(np.all((lo <= truth) & (truth <= hi))))
                        moved.append(any(e.startswith("class mix") for e in out["evidence"]))
                        acc_err.append(abs(mix["acc_at_mix"] - acc))
                    q = lambda v: f"median {np.median(v):.3f}, 90th pct {np.quantile(v, 0.9):.3f}"  # noqa: E731
                    print(
                        f"[{family} {scenario} N={n}] {len(err)} estimates ({none} none): largest share error "
                        f"{q(err)}; every class covered in {int(np.sum(cover))} of {len(cover)}; shown (the decisions' "
                        f"shares moved: predicted_class at the withholding level) in {int(np.sum(moved))} of {len(moved)}; |accuracy at the mix - realized| {q(acc_err)}; "
                        f"|CBPE accuracy - realized| {q(cbpe_err)} (withheld in {int(np.sum(withheld))} of "
                        f"{len(withheld)})",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
