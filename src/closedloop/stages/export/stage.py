"""The export stage: ONNX fp32 + int8 (+ pruned, + distilled student), parity, latency, model card.

Everything is evaluated on the validation rows the deployed model did not train on (the held-out
calibration split the train stage recorded; ``measurements.evaluated_on`` says which), and the
test split stays sealed: the single final test evaluation belongs to training. A compressed variant
that loses more than ``tolerance`` of the primary metric, or whose int8 probabilities drift too far
from fp32, is rejected with the reason.

Where things live: config.py (config and its checks), steps.py (the steps in order), variants.py,
gate.py, latency.py, results.py (typed results), bundle.py (the artifact), model_card.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from closedloop.artifacts.evaluation import EvaluationReport
from closedloop.core.errors import ConfigError
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO, stage_timings
from closedloop.data.bundle import DatasetBundle
from closedloop.models.trained import TrainedModel
from closedloop.stages.audit import AuditReport
from closedloop.stages.baseline import BaselineReport
from closedloop.stages.export.bundle import FILES, ExportBundle
from closedloop.stages.export.config import ExportModelConfig
from closedloop.stages.export.latency import CORE_SECONDS, latency_from_timings
from closedloop.stages.export.steps import run_export
from closedloop.stages.export.variants import tree_refusal
from closedloop.stages.task import TaskSpec


@register_stage("export")
class ExportModel(Stage):
    """Ship the model outside Python: ONNX, int8, optional pruning/distillation, parity, latency, model card."""

    Config = ExportModelConfig
    version = "2"  # 2: latencies and wall times moved from measurements.json to the stage's timings

    class Inputs(StageIO):
        data: DatasetBundle
        task: TaskSpec
        model: TrainedModel
        audit: AuditReport | None = None
        """Optional: its findings appear in the model card."""
        baseline: BaselineReport | None = None
        evaluation: EvaluationReport | None = None

    class Outputs(StageIO):
        exported: ExportBundle

    def run(self, inputs: Any, ctx: RunContext) -> Any:
        return self.Outputs(exported=run_export(self.config, inputs, ctx))  # type: ignore[arg-type]

    def check_producers(self, producers: dict[str, Stage]) -> None:
        """``closedloop validate``: a config that would make the export refuse a tree model (``ship:
        int8``, ``prune:``, ``distill:``) fails when the pipeline is built, not after training, when the
        stage producing the model names a tree family it may ship (``candidate_families``)."""
        from closedloop.models.registry import family_kind

        families = getattr(producers.get("model"), "candidate_families", None)
        if not callable(families):
            return
        names = list(families())
        for family in names:
            what = (
                f"the train stage's family list {names} includes {family}, a tree ensemble it may choose"
                if len(names) > 1
                else f"the train stage trains {family}, a tree ensemble"
            )
            if family_kind(family) == "trees" and (problem := tree_refusal(self.config, family, what)):
                raise ConfigError(problem)

    def summarize(self, outputs: Any) -> dict[str, Any]:
        """Latency and throughput are in the entry's ``timings`` (``latency_ms.<variant>.p95``, ...)."""
        m = outputs.exported.measurements
        out: dict[str, Any] = {
            "shipped": m.shipped,
            "blessed": m.blessed,
            "parity_max_abs_diff": m.parity.max_abs_diff,
            "evaluated_on": m.evaluated_on,
            "n_evaluated": m.n_evaluated,
            "quantization": m.quantization,
            "quantization_note": m.quantization_note,
        }
        for name, v in m.variants.items():
            entry: dict[str, Any] = {"size_bytes": v.size_bytes, "accepted": v.accepted}
            entry["metrics"] = {m.metric: v.comparison.value, "ci95": list(v.comparison.ci)}
            out[name] = entry
        return out

    def report(self, outputs: Any, stage_dir: Path) -> list[Any]:
        import html

        from closedloop.report.blocks import Callout, Figure, Html, KeyValues, Section, Table

        b = outputs.exported
        m = b.measurements
        timings = stage_timings(stage_dir)
        latency_ms, throughput = latency_from_timings(timings)
        blocks: list[Any] = [
            Callout(
                f"Shipped {m.shipped}: "
                + ("blessed" if m.blessed else "NOT blessed")
                + f" ({'; '.join(m.checks_text)})",
                "ok" if m.blessed else "warning",
            ),
            KeyValues(
                {
                    "parity max |diff| (fp32 ONNX vs torch)": m.parity.max_abs_diff,
                    "export + quantize + checks (s)": timings.get(CORE_SECONDS),
                    "threads": m.threads,
                    "int8": m.quantization_note or m.quantization,
                },
                title="Export",
            ),
        ]
        rows = []
        for name, v in m.variants.items():
            c = v.comparison
            lat = latency_ms.get(name, {})
            rows.append(
                {
                    "variant": name,
                    m.metric: c.value,
                    "95% CI": c.ci,
                    "diff vs fp32": c.diff,
                    "diff 95% CI": c.diff_ci,
                    "size (bytes)": v.size_bytes,
                    "p50 ms": lat.get("p50"),
                    "p95 ms": lat.get("p95"),
                    "throughput/s": throughput.get(name),
                    "accepted": v.accepted,
                    "reason": "" if v.reason is None else v.reason,
                }
            )
        on = m.evaluated_on
        blocks.append(
            Table(
                rows, title=f"Variants, evaluated on {m.n_evaluated} samples ({on}): " + m.evaluated_on_note
            )
        )
        if m.distillation:
            blocks.append(KeyValues(m.distillation.record(), title="Distillation"))
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


__all__ = ["ExportBundle", "ExportModel", "ExportModelConfig"]
