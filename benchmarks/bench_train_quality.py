"""Quality and time of the train stage on MedMNIST-28 with the recommended parameters, no test-set
tuning: each run opens its test split once. Reports each seed and the mean and spread over seeds.

Run: .venv/bin/python benchmarks/bench_train_quality.py --dataset pneumoniamnist --seeds 0 1 2 [--preset default]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = (ROOT / ".." / "shared" / "data" / "medmnist").resolve()

# What configs/<dataset>.yaml declares for the task (the lead's configs), repeated here so the
# benchmark runs the stages directly.
TASKS: dict[str, dict[str, Any]] = {
    "pneumoniamnist": {
        "acceptance": {"auc": 0.962, "acc": 0.884},
        "business": {
            "cases_per_day": 200,
            "cost_false_positive": 1,
            "cost_false_negative": 5,
            "positive_name": "pneumonia",
        },
    },
    "breastmnist": {"acceptance": {"auc": 0.901, "acc": 0.863}, "business": {}},
}
# The recommended train parameters (see docs/training.md).
TRAIN: dict[str, dict[str, Any]] = {
    "pneumoniamnist": {"class_weight": "balanced", "final_seeds": 3},
    "breastmnist": {"class_weight": "balanced", "final_seeds": 3},
}
TARGETS = {"pneumoniamnist": {"auc": 0.962, "acc": 0.884}, "breastmnist": {"auc": 0.901, "acc": 0.863}}


def one_run(dataset: str, seed: int, preset: str, extra: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from closedloop.core.ledger import TestLedger, ValidationLedger
    from closedloop.core.registry import SOURCES
    from closedloop.core.stage import RunContext
    from closedloop.stages.baseline import FitBaselines
    from closedloop.stages.task import DefineTaskConfig, build_task_spec
    from closedloop.stages.train import TrainModel

    src = SOURCES.resolve("medmnist")(flag=dataset, size=28, root=str(DATA_ROOT), download=False)
    data = src.load(seed)
    task = build_task_spec(DefineTaskConfig(**TASKS[dataset]), data)
    run = workdir / f"{dataset}-{preset}-seed{seed}"
    vled = ValidationLedger(run / "validation.jsonl")
    tled = TestLedger(run / "test_ledger.jsonl", run / "run_test_ledger.jsonl", run_id=f"seed{seed}")

    def ctx(name: str) -> RunContext:
        return RunContext(
            stage_name=name,
            stage_dir=run / name,
            seed=seed,
            fingerprint=f"bench-{dataset}-{seed}",
            test_ledger=tled,
            validation_ledger=vled,
        )

    t0 = time.time()
    base = FitBaselines().execute({"data": data, "task": task}, ctx("baseline")).baseline
    t1 = time.time()
    stage = TrainModel(preset=preset, **{**TRAIN[dataset], **extra})
    train_ctx = ctx("train")
    out = stage.execute({"data": data, "task": task, "baseline": base}, train_ctx)
    t2 = time.time()
    s = stage.summarize(out)
    return {
        "seed": seed,
        "test": {k: v["value"] for k, v in s["test"].items()},
        "test_ci": {k: v["ci95"] for k, v in s["test"].items()},
        "val": {k: v["value"] for k, v in s["val"].items()},
        "heldout": {k: v["value"] for k, v in (s.get("heldout") or {}).items()},
        "evaluated_on": s.get("evaluated_on", {}),
        "n_configs": s["n_configs"],
        "beats_baseline": s["beats_baseline"]["sentence"] if s["beats_baseline"] else None,
        "model": s["model"],
        "threshold": s["threshold"],
        "temperature": s["temperature"],
        "train_minutes": (t2 - t1) / 60,
        "baseline_minutes": (t1 - t0) / 60,
        # wall times live in the stage's timings, not in its artifacts
        "phase_seconds": {
            k.removeprefix("phase "): v for k, v in train_ctx.timings.items() if k.startswith("phase ")
        },
        "test_openings": len(tled.entries()),
        "decisions": [d["decision"] for d in s["decisions"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="pneumoniamnist", choices=sorted(TASKS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", default="{}", help="extra train params as JSON")
    ap.add_argument("--json", default=None, help="also write the per-seed results here")
    args = ap.parse_args()
    extra = json.loads(args.set)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = one_run(args.dataset, seed, args.preset, extra, Path(tmp))
            rows.append(r)
            print(
                f"[{args.dataset} seed {seed}] test "
                + ", ".join(f"{k} {v:.4f}" for k, v in r["test"].items())
                + f" | val auc {r['val'].get('auc', float('nan')):.4f}"
                + f" | held-out auc {r['heldout'].get('auc', float('nan')):.4f}"
                + f" | evaluated_on {r['evaluated_on']} | {r['n_configs']} configs | "
                f"train stage {r['train_minutes']:.1f} min (phases s: {r['phase_seconds']}) | "
                f"model {r['model']['family']} {r['model']['params']} ({r['model']['n_parameters']:,} params, "
                f"{r['model']['epochs']} epochs) | test openings {r['test_openings']}",
                flush=True,
            )
            print("    " + (r["beats_baseline"] or "no baseline"), flush=True)
    print(
        f"\n{args.dataset}-28, preset {args.preset}, train params {json.dumps({**TRAIN[args.dataset], **extra})}, "
        f"seeds {args.seeds}"
    )
    for k in rows[0]["test"]:
        vals = [r["test"][k] for r in rows]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        tgt = TARGETS[args.dataset].get(k)
        ok = (
            ""
            if tgt is None
            else f"  (target >= {tgt}: {'met' if statistics.mean(vals) >= tgt else 'NOT met'} by the mean)"
        )
        print(
            f"  test {k:<18} mean {statistics.mean(vals):.4f}  sd {sd:.4f}  min {min(vals):.4f}  max {max(vals):.4f}{ok}"
        )
    mins = [r["train_minutes"] for r in rows]
    print(
        f"  train stage minutes: mean {statistics.mean(mins):.1f}, max {max(mins):.1f} "
        "(2 shared cores; other developers' jobs were running)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
