"""Where the multi-label trees' boosting rounds go, and the learning-rate floor that cuts them (issue #25,
session 14; the rule is declared in docs/trees_decisions.md "Session 14: where the multi-label trees' rounds go").

On ``medexp_multilabel`` (``bench_tables.py``: MedExp, three labels) the tree family alone runs its train
stage (``bench_tables.TRAIN``: quick preset, 10 trials, one thread) once per split seed and candidate
``train.tree_learning_rate_min``. Every tree fit is recorded (phase, learning rate, rounds per epoch, the
rounds LightGBM grew, how it stopped), so the run prints where the rounds go: by phase, and trial by
trial for the first seed's current floor (0.01). Rounds are counts (``Booster.update`` calls), not
timings; the selection seconds are printed with the load, for information only.

``--phase dev`` (development: validation only) prints, per seed and candidate, the chosen configuration's
validation macro ROC AUC (its saved validation logits, every validation row) with the paired bootstrap
95% interval of candidate minus 0.01, and the trees grown (rounds x labels); then applies the declared
rule and names the floor it chooses. ``--phase report`` (once, after the choice is committed) prints the
test macro ROC AUC of the final models of 0.01 and ``--chosen``, and their paired difference.

Run: .venv/bin/python benchmarks/tune_multilabel_tree_lr.py --phase dev [--seeds 0 1 2]
     [--candidates 0.01 0.03 0.1] [--out docs/results/multilabel_tree_lr_dev.txt]
     .venv/bin/python benchmarks/tune_multilabel_tree_lr.py --phase report --chosen X [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
import bench_tables as B  # noqa: E402

TABLE = "medexp_multilabel"
CURRENT = 0.01
RULE = (
    "rule (declared in docs/trees_decisions.md before this run): a candidate floor is admissible when, at every "
    "split seed, the upper end of the paired bootstrap 95% interval of its chosen configuration's "
    "validation macro ROC AUC minus the 0.01 floor's is >= 0, and the mean of the point differences over "
    "the seeds is >= -0.005; among the admissible candidates (0.01 always is) the one whose tree stages "
    "grew the fewest trees (rounds x labels, all phases and seeds) is chosen; ties go to the lower floor"
)
DRAWS = 1000


def macro_auc(y: np.ndarray, p: np.ndarray, rows: Any = slice(None)) -> float:
    return float(np.mean([roc_auc_score(y[rows, k], p[rows, k]) for k in range(y.shape[1])]))


def paired(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """``a`` minus ``b`` macro AUC on all rows, and its paired bootstrap 95% interval (draws where every
    label has both classes)."""
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(y), len(y)) for _ in range(DRAWS)]
    boots = [i for i in boots if all(len(np.unique(y[i, k])) == 2 for k in range(y.shape[1]))]
    d = [macro_auc(y, a, i) - macro_auc(y, b, i) for i in boots]
    lo, hi = np.quantile(d, [0.025, 0.975])
    return macro_auc(y, a) - macro_auc(y, b), float(lo), float(hi)


class Recorder:
    """Every tree fit of a stage: its phase, learning rate, rounds per epoch, rounds grown, end."""

    def __init__(self) -> None:
        import lightgbm

        from closedloop.stages.train.tree_engine import TreeEngine

        self.fits: list[dict[str, Any]] = []
        self.rounds = 0
        engine_fit, update = TreeEngine.fit, lightgbm.Booster.update
        rec = self

        def fit(eng: Any, net: Any, train: Any, val: Any, hp: Any, **kw: Any) -> Any:
            f = {
                "label": kw.get("label") or "?",
                "lr": net.params["learning_rate"],
                "rpe": net.rounds_per_epoch,
            }
            f |= {"epochs": hp.epochs, "stopped": "pruned", "rounds": 0}
            rec.fits.append(f)
            r0 = rec.rounds
            try:
                res = engine_fit(eng, net, train, val, hp, **kw)
                f["stopped"] = res.stopped
                return res
            finally:
                f["rounds"] = rec.rounds - r0

        def counted(booster: Any, *a: Any, **k: Any) -> Any:
            rec.rounds += 1
            return update(booster, *a, **k)

        TreeEngine.fit, lightgbm.Booster.update = fit, counted  # type: ignore[method-assign]

    def by_phase(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for f in self.fits:
            out[f["label"].split("/")[1] if "/" in f["label"] else f["label"]] += f["rounds"]
        return out


def tree_stage(data: Any, floor: float, runs: Path, rec: Recorder) -> dict[str, Any]:
    """The tree family alone at ``floor``: the chosen configuration's validation logits, the final model's
    test probabilities, rounds by phase, the selection seconds."""
    from closedloop.core.checks import GivenArtifacts
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.registry import STAGES
    from closedloop.stages.train import TrainModel

    rec.fits.clear()
    given = GivenArtifacts.of({"data": data}, runs / "given")
    train = TrainModel(**B.TRAIN, family="lgbm", tree_learning_rate_min=floor)
    res = Pipeline([given, STAGES.resolve("task")(), train], name="ml", runs_dir=runs).run(progress=False)
    if res.summary["stages"]["train"]["status"] != "ok":
        raise SystemExit(f"train failed: {res.summary['stages']['train'].get('error')}")
    s = res.summary["stages"]["train"]
    work = res.run_dir / s["dir"] / "work"
    timings = json.loads((res.run_dir / s["dir"] / "stage.json").read_text())["timings"]
    outcomes = json.loads((work / "phase_cross_validate.json").read_text())["outcomes"]
    cv = outcomes.get("cross_validate") or {}
    tuned = cv.get("tuned") or outcomes["tune"]
    val_logits = np.load(work / tuned["val_logits_file"])
    selection = sum(
        timings.get(f"phase {p}", 0.0)
        for p in ("sanity", "beat_baseline", "scale_up", "tune", "cross_validate")
    )
    return {
        "val_logits": val_logits,
        "test_proba": res.artifact("model").predict_proba(data.splits["test"].X),
        "phases": rec.by_phase(),
        "fits": [dict(f) for f in rec.fits],
        "selection_s": selection,
        # a ladder rung (no tuned learning rate) trains at the builder's 0.1
        "lr": tuned["model_params"].get("learning_rate", 0.1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=["dev", "report"], required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--candidates", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    ap.add_argument("--chosen", type=float, default=None, help="report: the floor the dev rule chose")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.phase == "report" and args.chosen is None:
        raise SystemExit("--phase report needs --chosen (the floor the development rule chose)")
    cands = args.candidates if args.phase == "dev" else sorted({CURRENT, args.chosen})
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    say(
        f"tune_multilabel_tree_lr ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): python "
        f"benchmarks/tune_multilabel_tree_lr.py {' '.join(sys.argv[1:])}; table {TABLE}; tree family alone, "
        f"train params {B.TRAIN}; candidates tree_learning_rate_min {cands}; split seeds {args.seeds}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    if args.phase == "dev":
        say(RULE)
    rec = Recorder()
    X, y, cats = B.TABLES[TABLE]()
    k = y.shape[1]
    got: dict[tuple[int, float], dict[str, Any]] = {}
    ys: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="mltreelr-") as tmp:
        for seed in args.seeds:
            data, _, _ = B.bundle(X, y, cats, TABLE, seed)
            ys[seed] = (np.asarray(data.val.y), np.asarray(data.splits["test"].y))
            order = cands if seed % 2 == 0 else cands[::-1]  # the load hits every candidate alike
            for c in order:
                got[seed, c] = r = tree_stage(data, c, Path(tmp) / f"s{seed}_{c}", rec)
                assert len(r["val_logits"]) == len(ys[seed][0])
                say(
                    f"seed {seed} floor {c:g}: trees grown {k * sum(r['phases'].values()):,} (rounds by phase "
                    f"{dict(r['phases'])}); chosen learning_rate {r['lr']:.4g}; selection {r['selection_s']:.2f} s "
                    f"(load {os.getloadavg()[0]:.1f})"
                )
    first = got[args.seeds[0], CURRENT]
    say(f"where the rounds go, split seed {args.seeds[0]}, floor {CURRENT:g}, fit by fit:")
    for f in first["fits"]:
        say(
            f"   {f['label']:<32} learning_rate {f['lr']:.4f}, {f['rpe']:>3} rounds an epoch, epochs asked "
            f"{f['epochs']}, rounds grown {f['rounds']:>4} ({k * f['rounds']:>5} trees), {f['stopped']}"
        )
    split = 0 if args.phase == "dev" else 1
    what = "validation (the chosen configuration's saved logits)" if split == 0 else "test (the final model)"
    summary: dict[float, dict[str, Any]] = {}
    for c in cands:
        trees = sum(k * sum(got[s, c]["phases"].values()) for s in args.seeds)
        diffs = []
        for s in args.seeds:
            yy = ys[s][split]
            pc = got[s, c]["val_logits"] if split == 0 else got[s, c]["test_proba"]
            p0 = got[s, CURRENT]["val_logits"] if split == 0 else got[s, CURRENT]["test_proba"]
            d = paired(yy, pc, p0) if c != CURRENT else (0.0, 0.0, 0.0)
            diffs.append(d)
            say(
                f"{what}, seed {s}, floor {c:g}: macro ROC AUC {macro_auc(yy, pc):.4f}"
                + (
                    f"; minus floor {CURRENT:g}: {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]"
                    if c != CURRENT
                    else ""
                )
            )
        mean = float(np.mean([d[0] for d in diffs]))
        admissible = all(d[2] >= 0 for d in diffs) and mean >= -0.005
        summary[c] = {"trees": trees, "mean": mean, "admissible": admissible}
        say(
            f"floor {c:g}: trees grown over {len(args.seeds)} seeds {trees:,} ({trees / summary[CURRENT]['trees'] if CURRENT in summary else 1:.2f} "
            f"of floor {CURRENT:g}'s); mean difference {mean:+.4f}; "
            + ("admissible" if admissible else "NOT admissible")
            + (
                ""
                if split == 0
                else " (test: the interval's upper end >= 0 at every seed and mean >= -0.005)"
            )
        )
    if args.phase == "dev":
        chosen = min((c for c in cands if summary[c]["admissible"]), key=lambda c: (summary[c]["trees"], c))
        say(f"the rule chooses tree_learning_rate_min {chosen:g} for multi-label tasks")
    say(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
