"""The first stage of every pipeline: turn the ``data:`` section into a :class:`DatasetBundle`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from closedloop.core.config import StageConfig
from closedloop.core.registry import SOURCES, register_stage
from closedloop.core.stage import RunContext, Stage, StageIO
from closedloop.data.bundle import DatasetBundle


class LoadDataConfig(StageConfig):
    """``source`` names a registered data source (or ``pkg.module:Class``); ``options`` is its config."""

    source: str
    """Data source key: sklearn, medmnist, image_folder, tabular, or an import path."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The source's own config (validated by the source's config model)."""

    @model_validator(mode="after")
    def _validate_options(self) -> LoadDataConfig:
        cls = SOURCES.resolve(self.source, where="data.source")
        # store the source's full, validated config so equal data configs fingerprint equally
        full = cls(self.options).config.model_dump(mode="json")
        object.__setattr__(self, "options", full)
        return self


@register_stage("data")
class LoadData(Stage):
    """Load the dataset named in the ``data:`` section (seeded splits when the source has none)."""

    Config = LoadDataConfig

    class Inputs(StageIO):
        pass

    class Outputs(StageIO):
        data: DatasetBundle

    def source(self) -> Any:
        return SOURCES.resolve(self.config.source)(self.config.options)

    def cache_key(self) -> str:
        return self.source().content_key()

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        return self.Outputs(data=self.source().load(ctx.seed))

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        d = outputs.data
        return {"name": d.meta.name, "kind": d.kind, "sizes": d.sizes(), "warnings": d.meta.warnings}

    def report(self, outputs: Outputs, stage_dir: Path) -> list[Any]:
        from closedloop.core.blocks import Callout, KeyValues

        d = outputs.data
        blocks: list[Any] = [
            KeyValues(
                {
                    "dataset": d.meta.name,
                    "source": d.meta.source,
                    "kind": d.kind,
                    "split sizes": d.sizes(),
                    "splits": d.meta.split_origin,
                    "labels": ", ".join(d.meta.label_names[:20]),
                    "provenance": d.meta.provenance,
                }
            )
        ]
        blocks += [Callout(w, "warning") for w in d.meta.warnings]
        return blocks
