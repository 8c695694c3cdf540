"""Typed results of the export steps, and the JSON record (``measurements.json``) built from them.

Each step returns one of these; :func:`measurements_record` is the single place that turns them into
the folder's record, whose layout is documented in docs/export.md (unchanged keys).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.artifacts.export import Distillation, ExportRecord, MetricComparison, ParityResult, Variant

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
    groups: np.ndarray | None = None
    """The group of each row (``data.group``): intervals resample whole groups."""


class VariantRun(_Held):
    """A variant with what the later steps need: its onnxruntime session and its held-out logits."""

    variant: Variant
    session: Any
    logits: np.ndarray


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
    quantization_note: str,
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
            "distillation": distillation,
            "quantization": quantization,
            "quantization_note": quantization_note,
        }
    )
