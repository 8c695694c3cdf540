"""Toy stages and a toy data source used by the core tests (named in YAML by import path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from closedloop import JsonArtifact, RunContext, Stage, StageConfig, StageIO
from closedloop.core.callbacks import Callback
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.data.sources.base import DataSource, SourceConfig
from closedloop.stages.baseline import Baseline


class ToySourceConfig(SourceConfig):
    n: int = 60
    """Samples per split."""
    classes: int = 2


class ToySource(DataSource):
    """Random 4x4 images with a learnable label."""

    Config = ToySourceConfig

    def load(self, seed: int) -> DatasetBundle:
        rng = np.random.default_rng(seed)
        splits = {}
        for s in ("train", "val", "test"):
            y = rng.integers(0, self.config.classes, self.config.n)
            X = (rng.integers(0, 100, (self.config.n, 4, 4, 1)) + 100 * (y[:, None, None, None] % 2)).astype(
                np.uint8
            )
            splits[s] = Split(X=X, y=y)
        meta = DatasetMeta(
            name="toy", source="toy", kind="images", label_names=[f"c{i}" for i in range(self.config.classes)]
        )
        return DatasetBundle(meta=meta, splits=splits)


class Total(JsonArtifact):
    value: float


class SumPixelsConfig(StageConfig):
    scale: float = 1.0
    """Multiplier."""


class SumPixels(Stage):
    """Sum of train pixels times scale."""

    Config = SumPixelsConfig

    class Inputs(StageIO):
        data: DatasetBundle

    class Outputs(StageIO):
        total: Total

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        return self.Outputs(total=Total(value=float(inputs.data.train.X.sum()) * self.config.scale))

    def summarize(self, outputs: Outputs) -> dict:
        return {"total": outputs.total.value}


class DoubleConfig(StageConfig):
    crash_flag: str | None = None
    """If this file exists, crash (simulates a killed run)."""


class Double(Stage):
    """Twice the total."""

    Config = DoubleConfig

    class Inputs(StageIO):
        total: Total

    class Outputs(StageIO):
        doubled: Total

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        (ctx.work_dir / "started.txt").write_text("x")
        if self.config.crash_flag and Path(self.config.crash_flag).exists():
            raise RuntimeError("simulated crash")
        return self.Outputs(doubled=Total(value=2 * inputs.total.value))


class NeedsModel(Stage):
    """Needs an artifact nobody produces."""

    class Inputs(StageIO):
        doubled: Total
        missing_thing: Total

    class Outputs(StageIO):
        other: Total

    def run(self, inputs, ctx):  # pragma: no cover - never wired
        raise AssertionError


def write_config(path: Path, extra_stage: str = "", double: str = "") -> Path:
    path.write_text(
        f"""name: toy
data: {{source: "toy_pkg:ToySource", n: 40}}
stages:
  - kind: toy_pkg:SumPixels
    name: sum
    params: {{scale: 1.0}}
  - kind: toy_pkg:Double
    name: double
    params: {{{double}}}
{extra_stage}"""
    )
    return path


_ = os


class ToyCentroid(Baseline):
    """A user baseline named by import path in YAML (``extra: ["toy_pkg:ToyCentroid"]``)."""

    name = "toy_centroid"
    description = "the nearest class mean on scaled features"
    problems = frozenset({"binary", "multiclass"})

    def build(self, task, seed, n_rows):  # noqa: ANN001, ANN201
        from sklearn.neighbors import NearestCentroid

        class CentroidProba(NearestCentroid):
            def predict_proba(self, X):  # noqa: ANN001, ANN202
                return np.eye(len(self.classes_))[np.searchsorted(self.classes_, self.predict(X))]

        return self.scaled(task, CentroidProba())


class CountStages(Callback):
    """A user callback named from YAML by import path (``callbacks: ["toy_pkg:CountStages"]``)."""

    ended: ClassVar[list[str]] = []

    def on_stage_end(self, run: Any, stage: Any, record: Any) -> None:
        CountStages.ended.append(stage.name)
