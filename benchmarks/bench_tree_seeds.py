"""Tree seed ensembles (issue #25): ``train: {family: lgbm, final_seeds: N}`` on real tables.

The N members are fitted with different seeds (LightGBM's bagging and column sampling) on the same
rows with the tuned parameters, and shipped as one booster of all their trees at 1/N (its raw score is
the members' mean). LightGBM's seed only drives row and column sampling: when the tuned
``bagging_fraction`` and ``feature_fraction`` are both 1.0 the stage fits one member and says so. So
two settings per table: the default search (the fractions tuned), and the fractions fixed at 0.7 (not
tuned), where members differ. Per table and setting, in one script: the same pipeline (task, train,
export) with ``final_seeds: 1`` and ``final_seeds: 3`` (the selection phases are the same),
the test ROC AUC of each with a bootstrap 95% interval and the paired difference (3 - 1), the final
phase's wall time of each (ratio in the same run), the booster's leaves, and the ONNX parity of the
3-member booster on the test rows (served predictor vs the in-process model; bar 1e-5).
Tables and splits as benchmarks/bench_tables.py (development 80% / untouched test 20%).

Run: .venv/bin/python benchmarks/bench_tree_seeds.py [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from bench_tables import TABLES, TRAIN, auc_ci, boot_idx, bundle, fmt_diff, paired_diff  # noqa: E402


def run(data: Any, seeds: int, runs: Path, fraction: float | None) -> Any:
    from closedloop.core.checks import GivenArtifacts
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.registry import STAGES
    from closedloop.stages.train import TrainModel

    given = GivenArtifacts.of({"data": data}, runs / f"given_{seeds}")
    fixed: dict[str, Any] = {}
    if fraction is not None:
        knobs = ["learning_rate", "min_child_samples", "reg_lambda", "reg_alpha", "epochs"]
        fixed = {
            "tune_knobs": knobs,
            "model_params": {"feature_fraction": fraction, "bagging_fraction": fraction},
        }
    stages = [
        STAGES.resolve("task")(),
        TrainModel(**TRAIN, family="lgbm", final_seeds=seeds, **fixed),
        STAGES.resolve("export")(),
    ]
    result = Pipeline([given, *stages], name=f"{data.meta.name}_seeds{seeds}", runs_dir=runs).run(
        progress=False
    )
    failed = {k: v.get("error") for k, v in result.summary["stages"].items() if v["status"] != "ok"}
    if failed:
        raise SystemExit(f"{data.meta.name} final_seeds {seeds}: failed {failed}")
    return result


def table(name: str, runs: Path, fraction: float | None) -> None:
    from closedloop.stages.export.bundle import ExportBundle

    X, y, cats = TABLES[name]()
    data, _, _ = bundle(X, y, cats, name)
    Xt, yt = data.splits["test"].X, np.asarray(data.splits["test"].y)
    boots = boot_idx(yt)
    p, t_final, leaves, members = {}, {}, {}, 0
    for seeds in (1, 3):
        res = run(data, seeds, runs / f"{name}_{seeds}_{fraction}", fraction)
        s = res.summary["stages"]
        model = res.artifact("model")
        p[seeds] = model.predict_proba(Xt)[:, 1]
        timings = json.loads((res.run_dir / s["train"]["dir"] / "stage.json").read_text())["timings"]
        t_final[seeds] = timings.get("phase final", float("nan"))
        leaves[seeds] = model.network.n_leaves()
        if seeds == 3:
            said = [d for d in s["train"]["decisions"] if "tree members is one booster" in d["decision"]]
            members = said[0]["evidence"]["members"] if said else 1
            frac = {k: round(model.network.params[k], 3) for k in ("feature_fraction", "bagging_fraction")}
            exp = ExportBundle.load(res.run_dir / s["export"]["artifacts"]["exported"])
            served = exp.predictor().predict_proba(data.splits["test"].features())[:, 1]
            parity = float(np.abs(served - p[3]).max())
            kib = s["export"]["fp32"]["size_bytes"] / 1024
    how = "fractions tuned" if fraction is None else f"fractions fixed at {fraction}"
    print(
        f"{name} ({how}; chosen {frac}): members fitted for final_seeds 3: {members}; test AUC final_seeds 1 {auc_ci(yt, p[1], boots)}; final_seeds 3 {auc_ci(yt, p[3], boots)}; "
        f"3 - 1 {fmt_diff(paired_diff(yt, p[3], p[1], boots))}; final phase {t_final[1]:.1f} s vs {t_final[3]:.1f} s "
        f"(x{t_final[3] / max(t_final[1], 1e-9):.1f}); leaves {leaves[1]} vs {leaves[3]}; ONNX parity of the "
        f"final_seeds 3 model on {len(yt)} test rows {parity:.2e} (bar 1e-5), {kib:.0f} KiB",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    names = [args.only] if args.only else ["breast_cancer", "nwtco", "medexp"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for fraction in (None, 0.7):
                table(name, Path(tmp), fraction)


if __name__ == "__main__":
    main()
