"""The input contract of a web folder (``spec.json``): what the page and Python both read to turn raw
input into probabilities and a decision. Written by ``export-web`` from the export stage's
``predictor.json`` (the same values the server uses) and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import ClosedLoopError

SPEC_FILE = "spec.json"
FORMAT_VERSION = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelFile(Strict):
    file: str
    variant: str
    sha256: str
    bytes: int


class InputContract(Strict):
    name: str
    kind: Literal["images", "table"]
    shape: list[int]
    """One sample: (H, W, C) channels last, or (n_features,)."""
    channels: int | None
    dtype: Literal["float32"] = "float32"
    scaling: str
    """What the numbers fed to the graph are; the graph itself normalizes."""
    image_conversion: str | None
    feature_names: list[str] | None


class Card(Strict):
    name: str
    intended_use: str
    known_misuse: list[str]


class Source(Strict):
    run_dir: str
    run_id: str
    pipeline: str
    blessed: bool
    checks: list[str]


class Runtime(Strict):
    package: str
    version: str
    integrity: str
    tarball: str
    license: str
    files: dict[str, str]
    """Vendored file -> sha256."""
    backend: Literal["wasm"] = "wasm"
    threads: int = 1


class WebSpec(Strict):
    format_version: int = FORMAT_VERSION
    model: ModelFile
    problem_type: Literal["binary", "multiclass", "multilabel", "regression"]
    class_names: list[str]
    positive_class: str | None
    temperature: float
    threshold: float | None
    """Binary / multi-label decision threshold on the calibrated probability (None: 0.5 or argmax)."""
    input: InputContract
    output: Literal["logits"] = "logits"
    card: Card
    source: Source
    runtime: Runtime

    @classmethod
    def load(cls, folder: str | Path) -> WebSpec:
        path = Path(folder) / SPEC_FILE
        if not path.is_file():
            raise ClosedLoopError(f"{path}: not found; is {folder} a folder made by closedloop export-web?")
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ClosedLoopError(f"{path}: not a valid web spec ({exc})") from None
