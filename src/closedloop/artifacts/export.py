"""The export stage's artifact: the exported model folder, and the typed record of what was measured
on it (``measurements.json``).

Written by the export steps (:mod:`closedloop.stages.export.steps`); read back by the report, compare,
the tracker and serving as these types (``RunDir(path).artifact(ExportBundle).measurements.shipped``).
Everything in the folder is deterministic for a given config, seed and inputs (ONNX files,
``predictor.json``, ``measurements.json``, the model card): measured latencies and wall times are not
in it, they go to the stage's timings (``stage.json``), see :mod:`closedloop.stages.export.latency`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from closedloop.core.artifacts import Artifact
from closedloop.core.io import read_json, to_json, write_text_atomic


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricComparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    """A variant's metric on validation against the reference model's, with 95% bootstrap intervals."""

    metric: str
    value: float
    ci: tuple[float, float]
    reference: float
    diff: float
    """variant - reference (positive = better when higher is better)."""
    diff_ci: tuple[float, float]
    loss: float
    """How much worse the variant is (>= 0 means worse), in the metric's units."""


class ParityResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    """Largest differences between two output arrays on the same inputs."""

    n: int
    max_abs_diff: float
    max_rel_diff: float
    n_violations: int
    passed: bool
    worst: list[dict[str, Any]]
    """The largest differences: sample index, output index, reference, candidate, |diff|."""


class Variant(_Record):
    """One exported model file and how it scored against fp32 on the held-out rows."""

    file: str
    size_bytes: int
    mode: str | None = None
    """int8 only: static or dynamic quantization."""
    sparsity: float | None = None
    """pruned only: share of zero weights."""
    note: str | None = None
    parameters: int | None = None
    """student only: parameter count."""
    temperature: float
    threshold: float | None
    parity_vs_fp32: dict[str, float | int] | None = None
    """int8 only: largest differences of its logits to fp32's."""
    comparison: MetricComparison
    metrics: dict[str, float]
    max_prob_diff_vs_fp32: float | None = None
    accepted: bool
    reason: str | None = None

    @model_serializer(mode="wrap")
    def _written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Variant-specific keys only where they apply (the threshold always): the file's layout."""
        out = {k: v for k, v in handler(self).items() if v is not None}
        out["threshold"] = self.threshold  # always written (last when None, as the layout always had it)
        return out

    def record(self) -> dict[str, Any]:
        """The JSON record (as written in ``measurements.json``)."""
        return self.model_dump(mode="json")


class Distillation(_Record):
    """The distilled student against the teacher and against the same student trained alone
    (``measurements.json: distillation``). On disk the three metric values are keyed by the metric's
    name (``teacher_auc``, ``student_distilled_auc``, ``student_alone_auc``), with the parameter ratio
    and the retained share written beside them; read back, they are these typed fields."""

    metric: str
    student_spec: dict[str, Any]
    """The student's ModelSpec (family and params)."""
    student_size_choice: dict[str, Any]
    """How its size was chosen (``closedloop.stages.export.distill.choose_student``)."""
    teacher_parameters: int
    student_parameters: int
    evaluated_on: str
    teacher: float
    student_distilled: float
    student_alone: float
    distilled_minus_alone: float
    distilled_minus_alone_95ci: tuple[float, float]
    temperature: float
    alpha: float
    epochs: int

    @property
    def parameter_ratio(self) -> float:
        return self.student_parameters / max(self.teacher_parameters, 1)

    @property
    def retained_share_of_teacher(self) -> float | None:
        return self.student_distilled / self.teacher if self.teacher else None

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any) -> Any:
        """The file's layout (metric-named keys, derived figures) -> the fields."""
        if not isinstance(data, dict) or "metric" in data:
            return data
        metric = next((k[len("student_alone_") :] for k in data if k.startswith("student_alone_")), None)
        if metric is None:
            return data  # the field check names what is missing
        named = {f"{role}_{metric}": role for role in ("teacher", "student_distilled", "student_alone")}
        derived = {"parameter_ratio", "retained_share_of_teacher"}
        return {"metric": metric} | {named.get(k, k): v for k, v in data.items() if k not in derived}

    @model_serializer(mode="plain")
    def _written(self) -> dict[str, Any]:
        """The file's layout (the order it always had)."""
        m = self.metric
        return {
            "student_spec": self.student_spec,
            "student_size_choice": self.student_size_choice,
            "teacher_parameters": self.teacher_parameters,
            "student_parameters": self.student_parameters,
            "parameter_ratio": self.parameter_ratio,
            "evaluated_on": self.evaluated_on,
            f"teacher_{m}": self.teacher,
            f"student_distilled_{m}": self.student_distilled,
            f"student_alone_{m}": self.student_alone,
            "distilled_minus_alone": self.distilled_minus_alone,
            "distilled_minus_alone_95ci": self.distilled_minus_alone_95ci,
            "retained_share_of_teacher": self.retained_share_of_teacher,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "epochs": self.epochs,
        }

    def record(self) -> dict[str, Any]:
        """The JSON record (as written in ``measurements.json``)."""
        return self.model_dump(mode="json")


class ExportRecord(_Record):
    """``measurements.json``: every deterministic figure of the export (no latencies, no wall times)."""

    metric: str
    evaluated_on: str
    """``calibration``, ``validation`` or ``trained_on``: the deployed model's held-out rows."""
    n_evaluated: int
    evaluated_on_note: str
    shipped: str
    """The variant that ships (a key of ``variants``)."""
    blessed: bool
    checks: dict[str, bool]
    checks_text: list[str]
    parity: ParityResult
    """fp32 ONNX against the trained model."""
    variants: dict[str, Variant]
    threads: int
    distillation: Distillation | None
    """The student against the teacher and alone; None without a ``distill:`` section."""
    quantization: str
    """The int8 mode used: ``static``, ``dynamic`` or ``none`` (no int8 variant)."""
    quantization_note: str = ""
    """Why, in one sentence (``ExportModelConfig.quantize_note``; empty in records written before it)."""

    @property
    def shipped_variant(self) -> Variant:
        return self.variants[self.shipped]


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


class ServedModel(BaseModel):
    """One model file the predictor can serve (``predictor.json: models.<variant>``); a bare file name
    (an older folder's entry) reads as that file."""

    model_config = ConfigDict(extra="allow")

    file: str
    temperature: float = 1.0
    threshold: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _file_name(cls, data: Any) -> Any:
        return {"file": data} if isinstance(data, str) else data


class InputInfo(BaseModel):
    """``predictor.json: input``, the model's input contract (``Preprocessing.input_contract``)."""

    model_config = ConfigDict(extra="allow")

    kind: str = "images"
    """``images`` or ``table``."""
    shape: list[int]
    """One sample's shape: (H, W, C) images, (F,) table rows."""
    name: str | None = None
    """The ONNX graph's input name."""
    feature_names: list[str] | None = None


class PredictorInfo(BaseModel):
    """``predictor.json``, the input contract and calibration the server and the standalone predictor
    read (they read it as plain JSON: ``predictor.py`` runs without closedloop). Typed here for the
    readers inside closedloop; a served folder (``closedloop adapt``'s output) has one too."""

    model_config = ConfigDict(extra="allow")

    format_version: int = 1
    problem_type: str | None = None
    label_names: list[str] = Field(default_factory=list)
    positive_class: str | int | None = None
    temperature: float = 1.0
    threshold: float | None = None
    shipped: str | None = None
    models: dict[str, ServedModel] = Field(default_factory=dict)
    input: InputInfo | None = None

    def variant_threshold(self, variant: str) -> float | None:
        """That variant's own threshold where its entry names one (even ``null``), else the folder's."""
        entry = self.models[variant]
        return entry.threshold if "threshold" in entry.model_fields_set else self.threshold

    def variant_temperature(self, variant: str) -> float:
        """That variant's temperature where its entry names one, else the folder's."""
        entry = self.models[variant]
        return entry.temperature if "temperature" in entry.model_fields_set else self.temperature

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.model_validate(read_json(Path(path)))

    @property
    def shipped_threshold(self) -> float | None:
        """The shipped variant's decision threshold (the folder's own when no variant is named)."""
        entry = self.models.get(self.shipped) if self.shipped else None
        return self.threshold if entry is None else entry.threshold


class ExportBundle(Artifact):
    """The exported model folder.

    Layout: ``model_fp32.onnx``, ``model_int8.onnx`` (when quantized), ``student.onnx`` /
    ``model_pruned.onnx`` (optional), ``predictor.json`` (input contract, temperature, threshold,
    class names), ``predictor.py`` (standalone), ``model_card.md``, ``measurements.json`` (the JSON
    record of :class:`ExportRecord`), ``worst_errors.png`` (image tasks).
    """

    record_file = FILES["measurements"]

    def __init__(self, directory: Path, measurements: ExportRecord) -> None:
        self.directory = Path(directory)
        self.measurements = measurements

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        for rel in FILES.values():
            src = self.directory / rel
            if src.is_file() and src.resolve() != (directory / rel).resolve():
                shutil.copy2(src, directory / rel)
        write_text_atomic(
            directory / FILES["measurements"], to_json(self.measurements.model_dump(mode="json"))
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        return cls(
            Path(directory), ExportRecord.model_validate(read_json(Path(directory) / FILES["measurements"]))
        )

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
