"""Development-half experiment behind the fine-tune recipe of ``closedloop adapt`` (FINETUNE_GRID).

On the development half of PneumoniaMNIST's test images (never the report half), per draw: 100
random production labels, 50 of them adapt; each fine-tune recipe alone is cross-validated and
refitted by ``choose_challenger`` (``--challengers finetune`` with that one recipe) and compared with
the torch-free choice (recalibration + head) on the dev-half images not among the 100: ranking (AUC)
and the operating point at each model's own threshold. ``CHAMP=RUN_DIR`` picks the champion run
(default: bench_shift_recovery's cached one).

Run: PYTHONPATH=src .venv/bin/python benchmarks/shift_recovery_finetune_dev.py SCENARIO RECIPES DRAWS
     e.g. test lb,all 3    (recipes: lb, all, all_lr3, all_e15, all_rep03)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_shift_recovery as B  # noqa: E402
from shift_recovery_run import NPZ, champion_run  # noqa: E402

RECIPES = {
    "lb": {"scope": "last_block", "pull": 1e-2, "replay_weight": 1.0},
    "all": {"scope": "all", "pull": 1e-2, "replay_weight": 1.0},
    "all_lr3": {"scope": "all", "pull": 1e-2, "replay_weight": 1.0, "lr": 3e-3},
    "all_e15": {"scope": "all", "pull": 1e-3, "replay_weight": 1.0, "epochs": 15, "lr": 2e-3},
    "all_rep03": {"scope": "all", "pull": 1e-2, "replay_weight": 0.3},
}


def main() -> None:
    import torch
    from sklearn.metrics import roc_auc_score

    import closedloop.adapt.challengers as C
    import closedloop.adapt.finetune as F
    from closedloop.adapt.run import operating_point
    from closedloop.stages.monitor.retrain import _load_run, champion_training_splits

    torch.set_num_threads(1)
    scen, use, n_draws = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    run_dir = Path(os.environ["CHAMP"]) if "CHAMP" in os.environ else champion_run()[0]
    model, _ = _load_run(run_dir)
    costs = (1.0, 5.0)
    with np.load(NPZ) as z:
        X_test, y_test = z["test_images"][..., None], z["test_labels"].reshape(-1).astype(int)
    half = np.sort(np.random.default_rng(0).permutation(len(y_test))[: len(y_test) // 2])  # the dev half
    X, y = X_test[half], y_test[half]
    if scen == "gaussian_noise":
        X = B.gaussian_noise(X, np.random.default_rng(1))
    if scen == "contrast":
        X = B.contrast(X, np.random.default_rng(2))
    train = champion_training_splits(run_dir, 0, with_val=False)[0]
    replay = (np.asarray(train.X), np.asarray(train.y).reshape(-1))
    z_all = model.predict_logits(X).reshape(-1) / model.temperature
    phi = model.embed(X).astype(np.float64)
    p_champ = 1 / (1 + np.exp(-z_all))
    res: dict[str, list] = {k: [] for k in ["champion", "torch-free", *use]}
    for i in range(n_draws):
        idx = np.sort(np.random.default_rng([7, i]).choice(len(y), 100, replace=False))
        unseen = np.setdiff1d(np.arange(len(y)), idx)
        ad = np.sort(np.random.default_rng(i).choice(idx, 50, replace=False))
        res["champion"].append(
            (
                roc_auc_score(y[unseen], p_champ[unseen]),
                operating_point(y[unseen], p_champ[unseen] >= model.threshold, costs),
                0.0,
            )
        )
        ch = C.choose_challenger(y[ad], z_all[ad], phi[ad], costs=costs, seed=i).chosen
        p = ch.proba(z_all, phi)
        res["torch-free"].append(
            (
                roc_auc_score(y[unseen], p[unseen]),
                operating_point(y[unseen], p[unseen] >= ch.threshold, costs),
                0.0,
            )
        )
        for k in use:
            C.FINETUNE_GRID = (F.FinetuneSpec(**RECIPES[k]),)  # type: ignore[misc]
            t0 = time.perf_counter()
            data = C.FinetuneData(model, X[ad], replay)
            c = C.choose_challenger(
                y[ad], z_all[ad], phi[ad], costs=costs, seed=i, families=("finetune",), finetune=data
            ).chosen
            dt = time.perf_counter() - t0
            p = c.proba(None, None, X)
            res[k].append(
                (
                    roc_auc_score(y[unseen], p[unseen]),
                    operating_point(y[unseen], p[unseen] >= c.threshold, costs),
                    dt,
                )
            )
    base = [o["expected_cost"] for _, o, _ in res["champion"]]
    print(f"== {scen}, dev half, champion {run_dir.name}, {n_draws} draws of 100 labels (50 adapt) ==")
    for k, rows in res.items():
        med = {
            m: np.median([o[m] for _, o, _ in rows])
            for m in ("acc", "specificity", "sensitivity", "expected_cost")
        }
        red = np.median([1 - o["expected_cost"] / b for (_, o, _), b in zip(rows, base, strict=True)])
        print(
            f"{k:10s} AUC {np.median([a for a, _, _ in rows]):.4f} ACC {med['acc']:.3f} spec {med['specificity']:.3f} "
            f"sens {med['sensitivity']:.3f} cost {med['expected_cost']:.4f} cost reduction {red:+.1%} "
            f"fit {np.median([t for _, _, t in rows]):.1f} s"
        )


if __name__ == "__main__":
    main()
