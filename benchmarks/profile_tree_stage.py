"""Where the train stage's time goes for the tree family and the MLP (issue #25: trees were only 1.4-1.8x
faster than the MLP in the train stage): the stage under cProfile on a table, its wall time split into
the model fits and the work around them (Optuna's study storage, figures, feature importance, the
baseline comparison, the selection bias). Cumulative times of parts of the call tree entered from outside
them; Optuna's storage reads during pruning run inside the fits and are counted in both, so the parts
can add up to a little more than the stage ("other", the rest, then goes negative). The tree family runs
three times, same trials: with the default study (the stage's own journal file, no fsync per record:
``phases/journal.py``), with Optuna's own journal file (an fsync per record; a ``storage:`` path ending
in ``.journal`` keeps it), and with the SQLite study of session 7 (``storage: sqlite:///...``).

Run: .venv/bin/python benchmarks/profile_tree_stage.py [--table breast_cancer] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_tables as B  # noqa: E402

from closedloop.core.checks import GivenArtifacts  # noqa: E402
from closedloop.core.pipeline import Pipeline  # noqa: E402
from closedloop.core.registry import STAGES  # noqa: E402
from closedloop.core.stage import RunContext  # noqa: E402
from closedloop.stages.train import TrainModel  # noqa: E402

PARTS: dict[str, list[tuple[str, str | None]]] = {
    # label -> (path fragment, function name or None for any function there): the part of the call tree
    # under these functions, entered from outside them (nested calls are not counted twice)
    "model fits (lightgbm.train / the torch training loop)": [
        ("lightgbm/engine.py", "train"),
        ("stages/train/engine.py", "fit"),
        ("stages/train/engine.py", "overfit_batch"),
    ],
    "Optuna study storage (journal file, or SQLite)": [("optuna/storages/", None)],
    "figures (matplotlib savefig)": [("matplotlib/figure.py", "savefig")],
    "feature importance (permutations, bootstrap)": [("stages/train/importance.py", "tree_importance")],
    "baseline refits + paired comparisons": [
        ("phases/beat_baseline.py", "refit_baseline"),
        ("stats/paired.py", "compare"),
    ],
    "selection bias": [("stages/train/selection.py", "selection_evidence")],
}


def _in(key: tuple[str, int, str], part: list[tuple[str, str | None]]) -> bool:
    return any(frag in key[0] and (fn is None or key[2] == fn) for frag, fn in part)


def part_seconds(stats: pstats.Stats) -> dict[str, float]:
    out = {}
    for label, part in PARTS.items():
        total = 0.0
        for key, (_cc, _nc, _tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
            if _in(key, part):
                total += sum(v[3] for c, v in callers.items() if not _in(c, part)) if callers else ct
        out[label] = total
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default="breast_cancer", choices=sorted(B.TABLES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    X, y, cats = B.TABLES[args.table]()
    data, _, _ = B.bundle(X, y, cats, args.table)
    lines = [
        f"profile_tree_stage ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): python "
        f"benchmarks/profile_tree_stage.py {' '.join(sys.argv[1:])}; table {args.table}; train params "
        f"{B.TRAIN}; shared 2-core machine, cProfile on (it slows Python-heavy parts more than native fits)"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        given = GivenArtifacts.of({"data": data}, runs / "given")
        first = Pipeline(
            [given, STAGES.resolve("task")(), STAGES.resolve("baseline")()], name="p", runs_dir=runs
        )
        res = first.run(progress=False)
        inputs = {k: res.artifact(k) for k in ("data", "task", "baseline")}
        TrainModel(**B.TRAIN, family="lgbm").execute(inputs, RunContext("train", runs / "warm", 0))  # imports
        variants = {  # the default study, Optuna's fsync'd journal, the SQLite study (same trials)
            "lgbm": {"family": "lgbm"},
            "lgbm, Optuna's journal (fsync per record)": {
                "family": "lgbm",
                "storage": str(runs / "s.journal"),
            },
            "lgbm, SQLite study": {"family": "lgbm", "storage": f"sqlite:///{runs / 'study.db'}"},
            "mlp": {"family": "mlp"},
        }
        for family, over in variants.items():
            ctx = RunContext(stage_name="train", stage_dir=runs / f"v{len(lines)}", seed=0)
            ctx.stage_dir.mkdir(parents=True)
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            TrainModel(**{**B.TRAIN, **over}).execute(inputs, ctx)
            prof.disable()
            total = time.perf_counter() - t0
            parts = part_seconds(pstats.Stats(prof))
            other = total - sum(parts.values())
            lines.append(f"{family}: train stage {total:.1f} s")
            phases = {k.removeprefix("phase "): v for k, v in ctx.timings.items() if k.startswith("phase ")}
            lines.append(
                "  by phase: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items() if "," not in k)
            )
            for label, sec in [*parts.items(), ("other", other)]:
                lines.append(f"  {label:<56} {sec:6.1f} s  {sec / total:5.1%}")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
