"""closedloop: the whole ML lifecycle, run the way practitioners say it should be run."""

from closedloop.core.artifacts import Artifact, JsonArtifact
from closedloop.core.config import StageConfig
from closedloop.core.errors import ClosedLoopError, ConfigError, DataError, SealedTestError, WiringError
from closedloop.core.registry import register_source, register_stage
from closedloop.core.stage import RunContext, Stage, StageIO

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "ClosedLoopError",
    "ConfigError",
    "DataError",
    "JsonArtifact",
    "RunContext",
    "SealedTestError",
    "Stage",
    "StageConfig",
    "StageIO",
    "WiringError",
    "register_source",
    "register_stage",
]


def __getattr__(name: str):  # lazy: importing closedloop must not import torch or build the registry
    if name == "Pipeline":
        from closedloop.core.pipeline import Pipeline

        return Pipeline
    if name == "check_stage":
        from closedloop.core.checks import check_stage

        return check_stage
    if name == "RunResult":
        from closedloop.core.records import RunResult

        return RunResult
    raise AttributeError(name)
