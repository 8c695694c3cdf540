"""Extend closedloop with your own stage, name it by import path, and check it like a built-in.

Run from the project root:  python examples/custom_stage.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from closedloop import JsonArtifact, Pipeline, RunContext, Stage, StageConfig, StageIO
from closedloop.core.checks import check_stage
from closedloop.data.bundle import DatasetBundle
from closedloop.stages.task import DefineTask, TaskSpec


class BrightnessReport(JsonArtifact):
    """Mean pixel value per split. Layout: ``artifact.json``."""

    mean_by_split: dict[str, float]


class MeasureBrightnessConfig(StageConfig):
    warn_above: float = 0.1
    """Warn when train and val mean brightness differ by more than this (0..1 scale)."""


class MeasureBrightness(Stage):
    """Compare mean brightness of train and val images (a tiny custom audit)."""

    Config = MeasureBrightnessConfig

    class Inputs(StageIO):
        data: DatasetBundle
        task: TaskSpec

    class Outputs(StageIO):
        brightness: BrightnessReport

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        means = {s: float(np.mean(getattr(inputs.data, s).X) / 255) for s in ("train", "val")}
        return self.Outputs(brightness=BrightnessReport(mean_by_split=means))

    def summarize(self, outputs: Outputs) -> dict:
        m = outputs.brightness.mean_by_split
        return {"mean_by_split": m, "warning": abs(m["train"] - m["val"]) > self.config.warn_above}


if __name__ == "__main__":
    pipe = Pipeline(
        [DefineTask(), MeasureBrightness()], data={"source": "sklearn", "name": "digits"}, name="custom"
    )
    result = pipe.run()
    print(result.summary["stages"]["measure_brightness"])
    # the same contract battery the built-in stages pass
    with tempfile.TemporaryDirectory() as tmp:
        check_stage(
            MeasureBrightness(), {"data": result.artifact("data"), "task": result.artifact("task")}, Path(tmp)
        )
    print("check_stage: ok")
    # in YAML:  - kind: examples.custom_stage:MeasureBrightness  (with the project root on PYTHONPATH)
