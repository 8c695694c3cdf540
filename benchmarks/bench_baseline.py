"""Baseline stage on PneumoniaMNIST-28 (target: <= 20 s) and the baselines' test figures on
PneumoniaMNIST and BreastMNIST (majority-class accuracy should be 0.625 and 0.731).

The test split is read through RunContext.open_test with a throw-away ledger: a benchmark, not the
pipeline. Run: .venv/bin/python benchmarks/bench_baseline.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.core.stage import RunContext
from closedloop.data.sources.medmnist_npz import MedMNISTSource
from closedloop.stages.baseline import FitBaselines
from closedloop.stages.task import DefineTaskConfig, build_task_spec
from closedloop.stats.bootstrap import metrics_with_ci

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist"


def run(flag: str, tmp: Path) -> None:
    bundle = MedMNISTSource(flag=flag, root=str(ROOT), download=False).load(0)
    task = build_task_spec(DefineTaskConfig(), bundle)
    ctx = RunContext(
        stage_name="baseline",
        stage_dir=tmp / flag / "baseline",
        seed=0,
        fingerprint=f"bench-{flag}",
        test_ledger=TestLedger(tmp / "test_ledger.jsonl", tmp / flag / "test_ledger.jsonl", run_id=flag),
        validation_ledger=ValidationLedger(tmp / flag / "validation_ledger.jsonl"),
    )
    t = time.perf_counter()
    report = FitBaselines().execute({"data": bundle, "task": task}, ctx).baseline
    elapsed = time.perf_counter() - t
    sizes = bundle.sizes()
    print(
        f"\n{flag}-28 (train {sizes['train']}, val {sizes['val']}, test {sizes['test']}; metrics {task.metrics}, "
        f"{task.metric_convention} convention)"
    )
    print(
        f"  baseline stage: {elapsed:.1f} s for {len(report.results)} baselines with 95% CIs "
        f"(fit times: {', '.join(f'{k} {v:.1f}s' for k, v in ctx.timings.items())})"
    )
    print(f"  {ctx.validation_ledger.selected_among()}; best on validation: {report.best}")
    test = ctx.open_test(bundle, reason="benchmark: baseline figures on test")
    print(f"  {'baseline':<14}" + "".join(f"{m:>26}" for m in task.metrics) + "   (test, 95% CI)")
    for r in report.results:
        model = report.fit(r.name, bundle, task)
        res = metrics_with_ci(
            task.metrics,
            test.y,
            model.predict_proba(test.X),
            task.problem_type,
            convention=task.metric_convention,
            seed=0,
        )
        cells = "".join(f"{v['value']:>10.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" for v in res.values())
        print(f"  {r.name:<14}{cells}")


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        for flag in ("pneumoniamnist", "breastmnist"):
            run(flag, Path(d))
    print("\nreference: majority-class test accuracy 0.625 (PneumoniaMNIST), 0.731 (BreastMNIST)")
    print("(2-core machine shared with other developers: absolute timings are inflated)")


if __name__ == "__main__":
    main()
