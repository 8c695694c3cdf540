"""The export stage: ONNX fp32 + int8 (+ pruned, + distilled student), parity, latency, model card.

Everything is evaluated on the validation rows the deployed model did not train on (the held-out
calibration split the train stage recorded; ``measurements["evaluated_on"]`` says which), and the
test split stays sealed: the single final test evaluation belongs to training. A compressed variant that loses more than ``tolerance`` of the
primary metric, or whose int8 probabilities drift too far from fp32, is rejected with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, create_model

from closedloop.core.artifacts import Artifact
from closedloop.core.config import StageConfig
from closedloop.core.errors import ConfigError
from closedloop.core.io import read_json, to_json, write_text_atomic
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO
from closedloop.data.bundle import DatasetBundle
from closedloop.models.trained import TrainedModel
from closedloop.stages.task import TaskSpec

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


class ExportModelConfig(StageConfig):
    """Export to ONNX, quantize, optionally prune and distill, measure, and write the model card."""

    opset: int = Field(17, ge=17)
    """ONNX opset (>= 17)."""
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    """torch.onnx exporter; torchscript is much faster for these models, dynamo is the new default."""
    quantize: Literal["auto", "static", "dynamic", "none"] = "auto"
    """int8 mode: auto = static (QDQ, per-channel) for images, dynamic for tables."""
    per_channel: bool = True
    calibration_samples: int = Field(256, ge=1)
    """Train samples used to calibrate static quantization."""
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


class ExportBundle(Artifact):
    """The exported model folder.

    Layout: ``model_fp32.onnx``, ``model_int8.onnx`` (when quantized), ``student.onnx`` /
    ``model_pruned.onnx`` (optional), ``predictor.json`` (input contract, temperature, threshold,
    class names), ``predictor.py`` (standalone), ``model_card.md``, ``measurements.json``,
    ``worst_errors.png`` (image tasks).
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
        from closedloop.serving import Predictor

        return Predictor(self.directory, variant=variant)


def _optional_artifact(module: str, name: str) -> type | None:
    """A concurrently developed artifact class, or None when it does not exist (yet)."""
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name, None)
    except Exception:  # missing module, or one mid-edit: the card just omits that section
        return None
    return cls if isinstance(cls, type) and issubclass(cls, Artifact) else None


_OPTIONAL = {
    "audit": _optional_artifact("closedloop.stages.audit", "AuditReport"),
    "baseline": _optional_artifact("closedloop.stages.baseline", "BaselineReport"),
    "evaluation": _optional_artifact("closedloop.stages.train", "EvaluationReport"),
}

_Inputs: type[StageIO] = create_model(  # type: ignore[call-overload]
    "Inputs",
    __base__=StageIO,
    data=(DatasetBundle, ...),
    task=(TaskSpec, ...),
    model=(TrainedModel, ...),
    **{k: (v | None, None) for k, v in _OPTIONAL.items() if v is not None},
)


@register_stage("export")
class ExportModel(Stage):
    """Ship the model outside Python: ONNX, int8, optional pruning/distillation, parity, latency, model card."""

    Config = ExportModelConfig
    version = "1"
    Inputs = _Inputs
    # measurements.json holds measured latencies and durations, which differ between identical runs
    nondeterministic_outputs = ("exported",)

    class Outputs(StageIO):
        exported: ExportBundle

    def run(self, inputs: Any, ctx: RunContext) -> Any:
        from closedloop.stages.export.pipeline import run_export

        return self.Outputs(exported=run_export(self.config, inputs, ctx))

    def summarize(self, outputs: Any) -> dict[str, Any]:
        m = outputs.exported.measurements
        metric = m["metric"]
        out: dict[str, Any] = {
            "shipped": m["shipped"],
            "blessed": m["blessed"],
            "parity_max_abs_diff": m["parity"]["max_abs_diff"],
            "latency_ms": m["latency_ms"],
            "throughput": m["throughput"],
            "export_seconds": m["seconds"],
            "evaluated_on": m.get("evaluated_on", "validation"),
            "n_evaluated": m.get("n_evaluated"),
        }
        for name, v in m["variants"].items():
            entry: dict[str, Any] = {"size_bytes": v.get("size_bytes"), "accepted": v["accepted"]}
            if v.get("comparison"):
                entry["metrics"] = {metric: v["comparison"]["value"], "ci95": v["comparison"]["ci"]}
            out[name] = entry
        return out

    def report(self, outputs: Any, stage_dir: Path) -> list[Any]:
        import html

        from closedloop.report.blocks import Callout, Figure, Html, KeyValues, Section, Table

        b = outputs.exported
        m = b.measurements
        blocks: list[Any] = [
            Callout(
                f"Shipped {m['shipped']}: "
                + ("blessed" if m["blessed"] else "NOT blessed")
                + f" ({'; '.join(m['checks_text'])})",
                "ok" if m["blessed"] else "warning",
            ),
            KeyValues(
                {
                    "parity max |diff| (fp32 ONNX vs torch)": m["parity"]["max_abs_diff"],
                    "export + quantize + checks (s)": m["seconds"],
                    "threads": m["threads"],
                },
                title="Export",
            ),
        ]
        rows = []
        for name, v in m["variants"].items():
            c = v.get("comparison") or {}
            lat = m["latency_ms"].get(name, {})
            rows.append(
                {
                    "variant": name,
                    m["metric"]: c.get("value"),
                    "95% CI": c.get("ci"),
                    "diff vs fp32": c.get("diff"),
                    "diff 95% CI": c.get("diff_ci"),
                    "size (bytes)": v.get("size_bytes"),
                    "p50 ms": lat.get("p50"),
                    "p95 ms": lat.get("p95"),
                    "throughput/s": m["throughput"].get(name),
                    "accepted": v["accepted"],
                    "reason": v.get("reason", ""),
                }
            )
        on = m.get("evaluated_on", "validation")
        blocks.append(
            Table(
                rows,
                title=f"Variants, evaluated on {m.get('n_evaluated', '?')} samples ({on}): "
                + m.get("evaluated_on_note", ""),
            )
        )
        if m.get("distillation"):
            blocks.append(KeyValues(m["distillation"], title="Distillation"))
        if (stage_dir / "figures" / FILES["worst_errors"]).is_file():
            blocks.append(
                Figure(
                    f"figures/{FILES['worst_errors']}",
                    f"Most confident errors on the {on} samples (not trained on)"
                    if on != "trained_on"
                    else "Most confident errors on trained-on data (nothing was held out)",
                )
            )
        card = b.directory / FILES["model_card"]
        if card.is_file():
            blocks.append(
                Section("Model card", [Html(f"<pre>{html.escape(card.read_text(encoding='utf-8'))}</pre>")])
            )
        return blocks


def _validate(cfg: ExportModelConfig) -> None:
    if cfg.ship == "student" and cfg.distill is None:
        raise ConfigError("stage 'export': ship: student needs a distill: section")
    if cfg.ship == "pruned" and cfg.prune is None:
        raise ConfigError("stage 'export': ship: pruned needs a prune: section")
    if cfg.ship == "int8" and cfg.quantize == "none":
        raise ConfigError("stage 'export': ship: int8 contradicts quantize: none")


__all__ = ["ExportBundle", "ExportModel", "ExportModelConfig"]
