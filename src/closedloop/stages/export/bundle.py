"""The export stage's artifact: the exported model folder and its file names.

Everything in the folder is deterministic for a given config, seed and inputs (ONNX files,
``predictor.json``, ``measurements.json``, the model card): measured latencies and wall times are not
in it, they go to the stage's timings (``stage.json``), see :mod:`closedloop.stages.export.latency`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Self

from closedloop.core.artifacts import Artifact
from closedloop.core.io import read_json, to_json, write_text_atomic

METADATA_FILE = "predictor.json"  # must equal closedloop.serving.predictor.METADATA_FILE
FILES = {
    "onnx_fp32": "model_fp32.onnx",
    "onnx_int8": "model_int8.onnx",
    "onnx_student": "student.onnx",
    "onnx_pruned": "model_pruned.onnx",
    "predictor_metadata": METADATA_FILE,
    "model_card": "model_card.md",
    "measurements": "measurements.json",
    "worst_errors": "worst_errors.png",
    "predictor": "predictor.py",
}


class ExportBundle(Artifact):
    """The exported model folder.

    Layout: ``model_fp32.onnx``, ``model_int8.onnx`` (when quantized), ``student.onnx`` /
    ``model_pruned.onnx`` (optional), ``predictor.json`` (input contract, temperature, threshold,
    class names), ``predictor.py`` (standalone), ``model_card.md``, ``measurements.json`` (the JSON
    record of :class:`~closedloop.stages.export.results.ExportRecord`), ``worst_errors.png`` (image tasks).
    """

    def __init__(self, directory: Path, measurements: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.measurements = measurements

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        for rel in FILES.values():
            src = self.directory / rel
            if src.is_file() and src.resolve() != (directory / rel).resolve():
                shutil.copy2(src, directory / rel)
        write_text_atomic(directory / FILES["measurements"], to_json(self.measurements))

    @classmethod
    def load(cls, directory: Path) -> Self:
        return cls(Path(directory), read_json(Path(directory) / FILES["measurements"]))

    def files(self, directory: Path | None = None) -> dict[str, str]:
        d = Path(directory) if directory is not None else self.directory
        out = {k: v for k, v in FILES.items() if (d / v).is_file()}
        # Named even when quantization was off, so consumers find the key (it then points at fp32).
        out.setdefault("onnx_int8", out.get("onnx_int8", FILES["onnx_fp32"]))
        return out

    @property
    def model_card(self) -> str:
        return (self.directory / FILES["model_card"]).read_text(encoding="utf-8")

    def predictor(self, variant: str | None = None) -> Any:
        """The bundle's own standalone ``predictor.py`` (the file a deployment copies), loaded from this
        folder: the stages never import the server (``tests/test_layers.py``)."""
        import importlib.util
        import sys

        path = self.directory / FILES["predictor"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the export bundle has no standalone predictor.py")
        name = f"_closedloop_bundle_predictor_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # read fresh each call: the file belongs to this bundle
        spec.loader.exec_module(module)
        return module.Predictor(self.directory, variant=variant)
