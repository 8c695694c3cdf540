"""The pipeline the table benchmarks run as a user would: task, baseline, train (``preset: quick``, families
``[lgbm, mlp]``, one thread), from a ``data:`` section; a failed stage ends the benchmark with its error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run_quick(
    data: dict[str, Any],
    name: str,
    seed: int,
    work: Path,
    *,
    n_bootstrap: int = 500,
    task: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``summary.json``'s ``stages`` of one run (task, baseline and train)."""
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.registry import STAGES
    from closedloop.stages.train import TrainModel

    stages = [
        STAGES.resolve("task")(**(task or {})),
        STAGES.resolve("baseline")(**(baseline or {})),
        TrainModel(preset="quick", family=["lgbm", "mlp"], threads=1, n_bootstrap=n_bootstrap),
    ]
    result = Pipeline(stages, data=data, name=name, runs_dir=work, seed=seed).run(progress=False)
    if result.summary["status"] != "ok":
        failed = {k: v.get("error") for k, v in result.summary["stages"].items() if v.get("status") != "ok"}
        raise SystemExit(f"{name}: failed {json.dumps(failed, default=str)[:500]}")
    return result.summary["stages"]
