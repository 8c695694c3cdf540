"""The export stage's steps in order; each returns a typed result (see results.py).

1. the held-out rows (``heldout_rows``), 2. the variants (variants.py: fp32 + parity, int8, pruned,
student), 3. latency (latency.py; recorded in the stage's timings, not the folder), 4. the gate
(gate.py), 5. ``predictor.json``, the worst-errors montage, ``measurements.json`` and the model card.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from closedloop.core.io import to_json, write_text_atomic
from closedloop.core.killpoints import kill_point
from closedloop.core.stage import RunContext
from closedloop.models.heldout import heldout_split
from closedloop.models.trained import TrainedModel, logits_to_proba, raw_array
from closedloop.stages.export.bundle import FILES, ExportBundle
from closedloop.stages.export.config import ExportModelConfig
from closedloop.stages.export.gate import decide
from closedloop.stages.export.latency import (
    CORE_SECONDS,
    Timing,
    measure_all,
    onnx_runner,
    record_timings,
    torch_runner,
)
from closedloop.stages.export.model_card import per_day, render_model_card, worst_errors_montage
from closedloop.stages.export.results import (
    GateDecision,
    HeldOutRows,
    Variant,
    VariantRun,
    measurements_record,
)
from closedloop.stages.export.variants import (
    Exporter,
    Judge,
    fp32_step,
    int8_step,
    is_trees,
    onnx_logits,
    pruned_step,
    refuse_for_trees,
    refuse_int8_without_variant,
    student_step,
)
from closedloop.stages.task import TaskSpec

PREDICTOR_SOURCE = Path(__file__).resolve().parents[2] / "serving" / "predictor.py"


def heldout_rows(model: TrainedModel, data: Any, ctx: RunContext) -> HeldOutRows:
    """The rows the deployed model did not train on (the train stage's held-out calibration split),
    never trained-on validation rows; ``trained_on`` (with a warning) only when nothing was held out."""
    held, evaluated_on, note = heldout_split(model, data, "export")
    if evaluated_on == "trained_on":
        ctx.logger.warning("export: %s; variant figures are on trained-on data", note)
    return HeldOutRows(
        X=raw_array(held.X),
        images=held.X,
        y=np.asarray(held.y),
        evaluated_on=evaluated_on,
        note=note,
        groups=held.groups,
    )


def measure_latency(
    cfg: ExportModelConfig,
    task: TaskSpec,
    teacher: torch.nn.Module,
    runs: dict[str, VariantRun],
    rows: HeldOutRows,
    threads: int,
) -> dict[str, Timing]:
    """p50/p95 and throughput of torch eager fp32 and every ONNX variant, timed interleaved."""
    torch_threads = torch.get_num_threads()
    lb = task.constraints.latency_batch_size
    runners = {
        "torch_fp32": torch_runner(teacher, threads),
        **{k: onnx_runner(r.session) for k, r in runs.items()},
    }
    timings = measure_all(
        runners,
        rows.X[: max(cfg.latency.throughput_batch_size, lb)],
        threads=threads,
        latency_batch=lb,
        throughput_batch=cfg.latency.throughput_batch_size,
        repeats=cfg.latency.repeats,
        warmup=cfg.latency.warmup,
    )
    torch.set_num_threads(torch_threads)
    return timings


def predictor_metadata(
    task: TaskSpec, model: TrainedModel, variants: dict[str, Variant], gate: GateDecision, threads: int
) -> dict[str, Any]:
    """``predictor.json``: the input contract, calibration, and the variants a predictor may load."""
    pre = model.preprocessing
    return {
        "format_version": 1,
        "problem_type": task.problem_type,
        "label_names": model.label_names,
        "positive_class": task.positive_class,
        "temperature": model.temperature,
        "threshold": model.threshold,
        "threads": threads,
        "shipped": gate.shipped,
        "models": {
            n: {"file": v.file, "temperature": v.temperature, "threshold": v.threshold}
            for n, v in variants.items()
            if v.accepted or n == gate.shipped
        },
        "input": pre.input_contract(),
        "output": "logits; proba = link(logits / temperature) (sigmoid for binary/multilabel, softmax for multiclass)",
        "rejected": {n: v.reason or "" for n, v in variants.items() if not v.accepted},
    }


def montage_step(
    task: TaskSpec, model: TrainedModel, rows: HeldOutRows, p_ship: np.ndarray, ctx: RunContext, out: Path
) -> tuple[str | None, str | None]:
    """The most confident errors on the held-out rows (image classification): (file, why not drawn)."""
    if not (task.data_kind == "images" and task.problem_type in ("binary", "multiclass", "ordinal")):
        return None, "only drawn for image classification tasks"
    try:
        png = worst_errors_montage(
            rows.images,
            rows.y,
            p_ship,
            task.problem_type,
            model.label_names,
            ctx.figures_dir / FILES["worst_errors"],
        )
    except Exception as exc:  # the card says why instead of failing the export
        return None, f"{type(exc).__name__}: {exc}"
    shutil.copy2(png, out / FILES["worst_errors"])
    return FILES["worst_errors"], None


def run_export(cfg: ExportModelConfig, inputs: Any, ctx: RunContext) -> ExportBundle:
    """Run every step; the folder (ONNX files, metadata, card) is deterministic, timings go to ``ctx``."""
    data, task, model = inputs.data, inputs.task, inputs.model
    refuse_for_trees(cfg, model)
    if not is_trees(model):
        refuse_int8_without_variant(cfg, task.data_kind, model.n_parameters())
    threads = cfg.latency.threads or task.constraints.threads
    out = ctx.work_dir / "export"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = heldout_rows(model, data, ctx)
    X_train, y_train = raw_array(data.train.X), np.asarray(data.train.y)
    export = Exporter(cfg, rows, out, threads)

    with ctx.timed(CORE_SECONDS):
        fp32 = fp32_step(cfg, task, model, rows, export, ctx.seed)
        kill_point("export/fp32")
        judge = Judge(cfg, task, rows, fp32.proba, model.threshold, ctx.seed, ctx.logger)
        int8 = int8_step(cfg, task, model, rows, fp32, X_train, ctx.rng("calibration"), export, judge)
    pruned = pruned_step(cfg.prune, task, model, rows, X_train, y_train, ctx.seed, export, judge)
    student = student_step(
        cfg.distill, cfg, task, model, rows, fp32, X_train, y_train, ctx.seed, export, judge
    )
    kill_point("export/variants")
    runs: dict[str, VariantRun] = {"fp32": fp32}
    for name, run in (("int8", int8), ("pruned", pruned), ("student", student)):
        if run is not None:
            runs[name] = run
    variants = {n: r.variant for n, r in runs.items()}

    timings = measure_latency(cfg, task, fp32.teacher, runs, rows, threads)
    record_timings(timings, ctx.timings)
    kill_point("export/latency")
    gate = decide(cfg.ship, variants, timings, task, rows.evaluated_on)

    write_text_atomic(
        out / FILES["predictor_metadata"], to_json(predictor_metadata(task, model, variants, gate, threads))
    )
    shutil.copy2(PREDICTOR_SOURCE, out / FILES["predictor"])
    shipped = variants[gate.shipped]
    p_ship = logits_to_proba(
        onnx_logits(runs[gate.shipped].session, rows.X), task.problem_type, shipped.temperature
    )
    montage, montage_error = montage_step(task, model, rows, p_ship, ctx, out)
    measurements = measurements_record(
        metric=task.primary_metric,
        rows=rows,
        gate=gate,
        parity=fp32.parity,
        variants=variants,
        threads=threads,
        distillation=student.distillation if student is not None else None,
        quantization="none" if is_trees(model) else cfg.quantize_mode(task.data_kind, model.n_parameters()),
        quantization_note=cfg.quantize_note(task.data_kind, model.n_parameters(), trees=is_trees(model)),
    )
    thr = model.threshold
    card = render_model_card(
        task=task,
        model=model,
        data_meta=data.meta,
        measurements=measurements.model_dump(mode="json"),
        per_day_text=per_day(task, rows.y, p_ship, 0.5 if thr is None else thr, rows.evaluated_on),
        montage=montage,
        montage_error=montage_error,
        audit=getattr(inputs, "audit", None),
        baseline=getattr(inputs, "baseline", None),
        evaluation=getattr(inputs, "evaluation", None),
    )
    write_text_atomic(out / FILES["model_card"], card)
    write_text_atomic(out / FILES["measurements"], to_json(measurements.model_dump(mode="json")))
    return ExportBundle(out, measurements)
