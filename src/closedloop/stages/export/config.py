"""The export stage's config: its sections and every cross-field check, as pydantic validators.

The checks run when the config is validated (``closedloop validate``, building the pipeline), so a
contradiction such as ``ship: student`` without a ``distill:`` section fails before any training.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from closedloop.core.config import StageConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class PruneConfig(_Section):
    """Global magnitude pruning of conv/linear weights, then a short fine-tune."""

    amount: float = Field(0.5, gt=0, lt=1)
    """Share of weights set to zero."""
    epochs: int = Field(1, ge=0)
    """Fine-tune epochs after pruning."""
    lr: float = 3e-4


class DistillConfig(_Section):
    """Knowledge distillation into a smaller student (reported against the student trained alone)."""

    family: str | None = None
    """Student model family (registry key); default: the teacher's."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Student hyper-parameters; ``width`` is an upper bound (default: the teacher's), see below."""
    max_parameter_ratio: float | None = Field(0.25, gt=0, le=1)
    """Largest student / teacher parameter ratio. For families with ``width`` the largest width that fits
    is chosen by building candidates; other families must fit as configured. None: no bound."""
    epochs: int = Field(5, ge=1)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    """Weight of the soft (teacher) loss; 1 - alpha on the hard labels."""
    lr: float = 2e-3
    batch_size: int = Field(128, ge=2)


class LatencyConfig(_Section):
    repeats: int = Field(100, ge=5)
    warmup: int = Field(10, ge=0)
    threads: int | None = Field(None, ge=1)
    """CPU threads; default: the task's ``constraints.threads``."""
    throughput_batch_size: int = Field(64, ge=1)


#: ship value -> (the section it needs, how to tell it is missing)
_SHIP_NEEDS = {
    "student": ("distill", "a distill: section (ship: student ships the distilled student)"),
    "pruned": ("prune", "a prune: section (ship: pruned ships the pruned model)"),
}


class ExportModelConfig(StageConfig):
    """Export to ONNX, quantize, optionally prune and distill, measure, and write the model card."""

    opset: int = Field(17, ge=17)
    """ONNX opset (>= 17)."""
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    """torch.onnx exporter; torchscript is much faster for these models, dynamo is the new default."""
    quantize: Literal["auto", "static", "dynamic", "none"] = "auto"
    """int8 mode: auto = static (QDQ, per-channel) for images; for tables static when the network has at
    least ``table_int8_min_parameters`` parameters, else none (fp32 ships). Measured on table MLPs:
    ``docs/export.md``, ``benchmarks/bench_table_quantization.py``."""
    table_int8_min_parameters: int = Field(100_000, ge=0)
    """``quantize: auto`` on a table: the smallest network that gets a static int8 variant. Measured on
    table MLPs (``docs/results/table_quantization.txt``): up to 20k parameters static int8 was 1.5-1.9x
    slower than fp32 at 1 row; at 71k 0.65x on 500 rows but 0.9-1.3x at 1 row (either side of fp32, run
    to run); from 273k 0.44-0.9x at 1 row and 0.18-0.43x on 500 rows."""
    per_channel: bool = True
    calibration_samples: int | None = Field(None, ge=1)
    """Train samples used to calibrate static quantization; default 256 for images, 2000 for tables
    (MedExp's widest MLPs: 0.11-0.16 off fp32 with 256 rows, 0.04-0.07 with 2000; ``docs/export.md``)."""
    tolerance: float = Field(0.01, ge=0)
    """Largest primary-metric loss (vs fp32, on the held-out split) for a compressed variant to be accepted."""
    int8_max_prob_diff: float = Field(0.1, gt=0)
    """Largest |P(int8) - P(fp32)| on the held-out split for the int8 model to be accepted (its parity bar)."""
    rtol: float = 1e-3
    """Parity of ONNX fp32 vs PyTorch: relative tolerance."""
    atol: float = 1e-5
    """Parity of ONNX fp32 vs PyTorch: absolute tolerance."""
    parity_samples: int = Field(256, ge=1)
    prune: PruneConfig | None = None
    distill: DistillConfig | None = None
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    ship: Literal["auto", "fp32", "int8", "student", "pruned"] = "auto"
    """Variant to ship; auto = the first accepted of int8, student, pruned, fp32 that meets the constraints."""
    bootstrap: int = Field(200, ge=0)
    """Bootstrap resamples for metric intervals."""

    @field_validator("ship")
    @classmethod
    def _ship_has_its_variant(cls, ship: str, info: ValidationInfo) -> str:
        # ship is declared after quantize/prune/distill, so their validated values are in info.data
        # (a section that failed its own validation is absent: its error is reported instead).
        if ship in _SHIP_NEEDS:
            section, needed = _SHIP_NEEDS[ship]
            if section in info.data and info.data[section] is None:
                raise PydanticCustomError("ship_needs_section", needed)
        if ship == "int8" and info.data.get("quantize") == "none":
            raise PydanticCustomError(
                "ship_contradicts_quantize",
                "quantize: auto, static or dynamic (ship: int8 contradicts quantize: none)",
            )
        return ship

    def quantize_mode(self, data_kind: str, n_parameters: int | None = None) -> str:
        """The int8 mode for a task's data kind and the network's parameter count (``auto`` = static for
        images; for tables static from ``table_int8_min_parameters`` parameters, else none)."""
        if self.quantize != "auto":
            return self.quantize
        if data_kind == "images":
            return "static"
        wide = n_parameters is not None and n_parameters >= self.table_int8_min_parameters
        return "static" if wide else "none"

    def calibration_count(self, data_kind: str) -> int:
        """Train rows that calibrate static quantization (``calibration_samples``, else by data kind)."""
        if self.calibration_samples is not None:
            return self.calibration_samples
        return 256 if data_kind == "images" else 2000

    def quantize_note(self, data_kind: str, n_parameters: int | None = None, trees: bool = False) -> str:
        """Why the export has the int8 variant it has, in one sentence (report, summary, model card)."""
        if trees:
            return (
                "none: a tree ensemble has split thresholds and leaf values, no weight matrices to quantize"
            )
        mode = self.quantize_mode(data_kind, n_parameters)
        size = f"{n_parameters:,} parameters" if n_parameters is not None else "the network"
        if mode == "static":
            if self.quantize != "auto":
                how = "quantize: static"
            elif data_kind == "images":
                how = "quantize: auto for images"
            else:
                how = f"quantize: auto for a table network of {size} >= table_int8_min_parameters {self.table_int8_min_parameters:,}"
            return (
                f"static int8 ({how}): scales calibrated once on up to {self.calibration_count(data_kind)} "
                "train rows, then fixed, so a row gets the same answer in any batch and requests keep their batches"
            )
        if mode == "dynamic":
            return (
                "dynamic int8 (quantize: dynamic): one activation scale per model call, so it answers one "
                "row at a time (a row's answer never depends on its batch-mates; a large request costs one "
                "call per row)"
            )
        if self.quantize == "auto":
            return (
                f"none (quantize: auto for a table network of {size} < table_int8_min_parameters "
                f"{self.table_int8_min_parameters:,}): fp32 ships. On table MLPs this small, static int8 was "
                "measured slower than fp32 at 1 row and no faster on 500 rows, and dynamic int8 must answer "
                "row by row (docs/export.md); quantize: static makes a batch-independent int8 variant on request"
            )
        return "none (quantize: none): fp32 ships"
