"""A run directory with the three artifacts ``closedloop human-baseline`` reads (task, data, model),
written by hand from a small digits CNN so the tests need no pipeline run (imports torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitor"))
from monitor_helpers import digits_setup  # noqa: E402

from closedloop.stages.task import DefineTaskConfig, build_task_spec  # noqa: E402


def make_model_run(root: Path, name: str = "demo", problem_type: str | None = None) -> Path:
    """``root/<name>/20260101-000000-abcdef12`` holding task, data (digits, 400 val) and model;
    ``problem_type="ordinal"`` reads the digits 0-9 as ranks."""
    data, model = digits_setup(n_train=600, steps=60)
    task = build_task_spec(DefineTaskConfig(problem_type=problem_type), data)
    run = root / name / "20260101-000000-abcdef12"
    stages = []
    for i, (stage, port, art, typ) in enumerate(
        [
            ("data", "data", data, "closedloop.data.bundle:DatasetBundle"),
            ("task", "task", task, "closedloop.stages.task:TaskSpec"),
            ("train", "model", model, "closedloop.models.trained:TrainedModel"),
        ],
        start=1,
    ):
        path = f"stages/{i:02d}_{stage}/artifacts/{port}"
        (run / path).mkdir(parents=True)
        art.save(run / path)
        stages.append({"name": stage, "status": "ok", "artifacts": {port: {"path": path, "type": typ}}})
    (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name, "runs_dir": str(root)}))
    return run
