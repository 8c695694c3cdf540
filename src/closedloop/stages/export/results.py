"""Typed results of the export steps, and the JSON record (``measurements.json``) built from them.

Each step returns one of these; :func:`measurements_record` is the single place that turns them into
the folder's record, whose layout is documented in docs/export.md (unchanged keys).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.artifacts.export import ExportRecord, MetricComparison, ParityResult, Variant

__all__ = [
    "Distillation",
    "GateDecision",
    "HeldOutRows",
    "MetricComparison",
    "ParityResult",
    "Variant",
    "VariantRun",
    "measurements_record",
]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Held(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class HeldOutRows(_Held):
    """The rows every figure is scored on: the deployed model's held-out rows (see train/heldout.py)."""

    X: np.ndarray
    """Raw model inputs (float32, as the ONNX graph takes them)."""
    images: Any
    """The split's inputs as stored (for the worst-errors montage)."""
    y: np.ndarray
    evaluated_on: str
    """``calibration``, ``validation`` or ``trained_on`` (see closedloop.stages.train.heldout)."""
    note: str


class VariantRun(_Held):
    """A variant with what the later steps need: its onnxruntime session and its held-out logits."""

    variant: Variant
    session: Any
    logits: np.ndarray


class Distillation(_Result):
    """The student against the teacher and against the same student trained alone."""

    student_spec: dict[str, Any]
    student_size_choice: dict[str, Any]
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

    def record(self, metric: str) -> dict[str, Any]:
        """The JSON record; metric values are keyed by the metric's name (``teacher_auc``)."""
        return {
            "student_spec": self.student_spec,
            "student_size_choice": self.student_size_choice,
            "teacher_parameters": self.teacher_parameters,
            "student_parameters": self.student_parameters,
            "parameter_ratio": self.student_parameters / max(self.teacher_parameters, 1),
            "evaluated_on": self.evaluated_on,
            f"teacher_{metric}": self.teacher,
            f"student_distilled_{metric}": self.student_distilled,
            f"student_alone_{metric}": self.student_alone,
            "distilled_minus_alone": self.distilled_minus_alone,
            "distilled_minus_alone_95ci": self.distilled_minus_alone_95ci,
            "retained_share_of_teacher": self.student_distilled / self.teacher if self.teacher else None,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "epochs": self.epochs,
        }


class GateDecision(_Result):
    """Which variant ships and whether it is blessed, with every check that decided it."""

    shipped: str
    blessed: bool
    checks: dict[str, bool]


def measurements_record(
    *,
    metric: str,
    rows: HeldOutRows,
    gate: GateDecision,
    parity: ParityResult,
    variants: dict[str, Variant],
    threads: int,
    distillation: Distillation | None,
    quantization: str,
) -> ExportRecord:
    """``measurements.json``: every deterministic figure of the export (no latencies, no wall times)."""
    return ExportRecord.model_validate(
        {
            "metric": metric,
            "evaluated_on": rows.evaluated_on,
            "n_evaluated": int(len(rows.y)),
            "evaluated_on_note": rows.note,
            "shipped": gate.shipped,
            "blessed": gate.blessed,
            "checks": dict(gate.checks),
            "checks_text": [f"{k}: {'pass' if v else 'FAIL'}" for k, v in gate.checks.items()],
            "parity": parity,
            "variants": variants,
            "threads": threads,
            "distillation": distillation.record(metric) if distillation is not None else None,
            "quantization": quantization,
        }
    )
