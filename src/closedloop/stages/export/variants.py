"""The export variants, one step each: fp32 (+ parity against PyTorch), int8, pruned, distilled student.

Every step returns a typed :class:`~closedloop.stages.export.results.VariantRun`; a compressed variant is
judged against fp32 on the held-out rows by :class:`Judge` (metric loss within ``tolerance``, plus the
variant's own bar). The steps run in this order (fp32, int8, pruned, student) so seeded training in the
later ones sees the same random state as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from closedloop.models.registry import network_kind
from closedloop.models.trained import RawInputNetwork, TrainedModel, logits_to_proba
from closedloop.stages.export import distill as D
from closedloop.stages.export.bundle import FILES
from closedloop.stages.export.config import DistillConfig, ExportModelConfig, PruneConfig
from closedloop.stages.export.errors import ExportError
from closedloop.stages.export.evaluate import all_metrics, compare_metric
from closedloop.stages.export.onnx_export import export_onnx, onnx_session
from closedloop.stages.export.parity import ParityResult, compare_outputs, require_parity
from closedloop.stages.export.prune import finalize, prune_network
from closedloop.stages.export.quantize import quantize_model
from closedloop.stages.export.results import Distillation, HeldOutRows, Variant, VariantRun
from closedloop.stages.task import TaskSpec
from closedloop.stages.train.calibration import fit_temperature


def onnx_logits(session: Any, X: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits of an onnxruntime session, in batches."""
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: np.ascontiguousarray(X[i : i + batch])})[0] for i in range(0, len(X), batch)
    ]
    return np.concatenate(outs).reshape(len(X), -1)


@torch.no_grad()
def torch_logits(module: torch.nn.Module, X: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits of a PyTorch module in eval mode, in batches."""
    module.eval()
    outs = [
        module(torch.from_numpy(np.ascontiguousarray(X[i : i + batch]))).numpy()
        for i in range(0, len(X), batch)
    ]
    return np.concatenate(outs).reshape(len(X), -1)


class Judge:
    """Scores a variant's held-out probabilities against fp32's and decides whether it is accepted."""

    def __init__(
        self,
        cfg: ExportModelConfig,
        task: TaskSpec,
        rows: HeldOutRows,
        p_ref: np.ndarray,
        threshold: float | None,
        seed: int,
        log: Any,
    ) -> None:
        self.cfg, self.task, self.rows, self.p_ref, self.thr, self.seed, self.log = (
            cfg, task, rows, p_ref, threshold, seed, log,
        )  # fmt: skip
        # the bars (tolerance, int8_max_prob_diff) are in probability and metric units; a regression model's
        # outputs and errors are in the target's units (prices in thousands), so there they count in
        # standard deviations of the held-out target: else no int8 regression model could ever pass
        sd = float(np.std(np.asarray(rows.y, np.float64))) if task.problem_type == "regression" else 0.0
        self.scale = sd if sd > 0 else 1.0
        self.scale_text = f" x the held-out target's standard deviation {sd:.4g}" if sd > 0 else ""

    def variant(
        self,
        name: str,
        path: Path,
        logits: np.ndarray,
        temperature: float,
        extra_reason: str | None = None,
        **extra: Any,
    ) -> Variant:
        problem, metric = self.task.problem_type, self.task.primary_metric
        p = logits_to_proba(logits, problem, temperature)
        y = self.rows.y
        cmp = compare_metric(
            metric,
            y,
            p,
            self.p_ref,
            problem,
            self.thr,
            n_boot=self.cfg.bootstrap,
            seed=self.seed,
            groups=self.rows.groups,
        )
        reasons = []
        if cmp.loss > self.cfg.tolerance * self.scale:
            reasons.append(
                f"{metric} loses {cmp.loss:.4f} vs fp32 (> tolerance {self.cfg.tolerance}{self.scale_text})"
            )
        if extra_reason:
            reasons.append(extra_reason)
        reason = "; ".join(reasons) if reasons else None
        if reason:
            self.log.warning("export: variant %s rejected: %s", name, reason)
        return Variant(
            file=FILES[f"onnx_{name}"],
            size_bytes=os.path.getsize(path),
            temperature=temperature,
            threshold=self.thr,
            comparison=cmp,
            metrics=all_metrics(self.task.metrics, y, p, problem, self.thr),
            max_prob_diff_vs_fp32=float(np.abs(p - self.p_ref).max()) if len(p) else 0.0,
            accepted=not reasons,
            reason=reason,
            **extra,
        )


def is_trees(model: TrainedModel) -> bool:
    """A tree family's model (exported by its converter; no int8, pruning or distillation variant)."""
    return network_kind(model.network) == "trees"


def refuse_for_trees(cfg: ExportModelConfig, model: TrainedModel) -> None:
    """Tree models have no weight matrices: ``ship: int8`` and the prune/distill sections mean nothing."""
    if is_trees(model):
        problem = tree_refusal(cfg, model.spec.family)
        if problem:
            raise ExportError(problem)


def tree_refusal(cfg: ExportModelConfig, family: str, what: str | None = None) -> str | None:
    """Why this export config cannot ship a tree model of ``family`` (None when it can). ``what``: the
    reason's subject when it is said before training (default: the trained model)."""
    what = what or f"the model is a tree ensemble ({family})"
    if cfg.ship == "int8":
        return (
            f"export.ship: int8 - {what}: its parameters are split thresholds and leaf values, not weight "
            "matrices, so there is nothing to quantize and no int8 variant; use ship: auto or fp32 (the fp32 "
            "tree model is already small and fast: see its size and latency in the measurements)"
        )
    for section in ("prune", "distill"):
        if getattr(cfg, section) is not None:
            return (
                f"export.{section}: {what}; {section} works on networks. Remove the {section}: section "
                "(or train network families only)"
            )
    return None


def refuse_int8_without_variant(cfg: ExportModelConfig, data_kind: str, n_parameters: int) -> None:
    """``ship: int8`` when ``quantize: auto`` makes no int8 variant (a small table network): say so
    before any work, with the settings that would make one."""
    if cfg.ship == "int8" and cfg.quantize_mode(data_kind, n_parameters) == "none":
        raise ExportError(
            f"export.ship: int8 - quantize: auto makes no int8 variant for this table model ({n_parameters:,} "
            f"parameters < table_int8_min_parameters {cfg.table_int8_min_parameters:,}: fp32 ships, as int8 "
            "was measured slower than fp32 on table MLPs this small, see docs/export.md); set quantize: static "
            "(scales calibrated on train rows, batch-independent) or quantize: dynamic (answers one row at a "
            "time) to make one, or use ship: auto"
        )


class Exporter:
    """Writes a raw-input module to ONNX in the export folder (a sample of held-out rows traces it)."""

    def __init__(self, cfg: ExportModelConfig, rows: HeldOutRows, out: Path, threads: int) -> None:
        self.cfg, self.rows, self.out, self.threads = cfg, rows, out, threads

    def __call__(self, module: torch.nn.Module, key: str) -> Path:
        sample = torch.from_numpy(self.rows.X[:2].copy())
        return export_onnx(
            module, sample, self.out / FILES[key], opset=self.cfg.opset, exporter=self.cfg.exporter
        )

    def session(self, path: Path) -> Any:
        return onnx_session(path, self.threads)


class Fp32Run(VariantRun):
    """The fp32 export: the reference every other variant is judged against."""

    teacher: Any
    """The trained model as a raw-input PyTorch module (timed and distilled from later)."""
    parity: ParityResult
    proba: np.ndarray


def fp32_step(
    cfg: ExportModelConfig,
    task: TaskSpec,
    model: TrainedModel,
    rows: HeldOutRows,
    export: Exporter,
    seed: int,
) -> Fp32Run:
    """Export fp32, check it against PyTorch on the held-out rows (or fail), and score it."""
    problem, metric, thr = task.problem_type, task.primary_metric, model.threshold
    teacher = model.raw_module()
    path = export(teacher, "onnx_fp32")
    session = export.session(path)
    ref_logits = torch_logits(teacher, rows.X)
    logits = onnx_logits(session, rows.X)
    n_par = min(cfg.parity_samples, len(rows.X))
    parity = compare_outputs(ref_logits[:n_par], logits[:n_par], cfg.rtol, cfg.atol)
    require_parity(
        parity, f"{path.name} vs PyTorch on {n_par} {rows.evaluated_on} samples", cfg.rtol, cfg.atol
    )
    p = logits_to_proba(logits, problem, model.temperature)
    variant = Variant(
        file=FILES["onnx_fp32"],
        size_bytes=os.path.getsize(path),
        accepted=True,
        temperature=model.temperature,
        threshold=thr,
        comparison=compare_metric(
            metric, rows.y, p, p, problem, thr, n_boot=cfg.bootstrap, seed=seed, groups=rows.groups
        ),
        metrics=all_metrics(task.metrics, rows.y, p, problem, thr),
    )
    return Fp32Run(variant=variant, session=session, logits=logits, teacher=teacher, parity=parity, proba=p)


def int8_step(
    cfg: ExportModelConfig,
    task: TaskSpec,
    model: TrainedModel,
    rows: HeldOutRows,
    fp32: Fp32Run,
    X_train: np.ndarray,
    rng: np.random.Generator,
    export: Exporter,
    judge: Judge,
) -> VariantRun | None:
    """Quantize fp32 to int8 (static: calibrated on a seeded train sample); its bar: probability drift."""
    if is_trees(model):  # trees: no weight matrices, nothing to quantize
        return None
    mode = cfg.quantize_mode(task.data_kind, model.n_parameters())
    if mode == "none":
        return None
    n_calibration = cfg.calibration_count(task.data_kind)
    idx = rng.choice(len(X_train), size=min(n_calibration, len(X_train)), replace=False)
    path = quantize_model(
        export.out / FILES["onnx_fp32"],
        export.out / FILES["onnx_int8"],
        mode=mode,
        calibration=X_train[np.sort(idx)] if mode == "static" else None,
        input_shape=list(task.input_shape),
        per_channel=cfg.per_channel,
    )
    session = export.session(path)
    logits = onnx_logits(session, rows.X)
    parity = compare_outputs(fp32.logits, logits, cfg.rtol, cfg.atol)
    p = logits_to_proba(logits, task.problem_type, model.temperature)
    drift = float(np.abs(p - fp32.proba).max()) if len(p) else 0.0
    variant = judge.variant(
        "int8",
        path,
        logits,
        model.temperature,
        f"max |P(int8) - P(fp32)| {drift:.4f} > {cfg.int8_max_prob_diff}{judge.scale_text}"
        if drift > cfg.int8_max_prob_diff * judge.scale
        else None,
        mode=mode,
        parity_vs_fp32=parity.model_dump(include={"max_abs_diff", "max_rel_diff", "n_violations"}),
    )
    return VariantRun(variant=variant, session=session, logits=logits)


def pruned_step(
    pc: PruneConfig | None,
    task: TaskSpec,
    model: TrainedModel,
    rows: HeldOutRows,
    X_train: np.ndarray,
    y_train: np.ndarray,
    seed: int,
    export: Exporter,
    judge: Judge,
) -> VariantRun | None:
    """Magnitude-prune the network, fine-tune briefly, export (dense storage: zeros do not shrink it)."""
    if pc is None:
        return None
    net, sparsity = prune_network(model.network, pc.amount)
    raw = RawInputNetwork(net, model.preprocessing)
    if pc.epochs:
        D.fit(raw, X_train, y_train, task.problem_type, epochs=pc.epochs, lr=pc.lr, seed=seed)
    finalize(net)
    path = export(raw.eval(), "onnx_pruned")
    session = export.session(path)
    logits = onnx_logits(session, rows.X)
    variant = judge.variant(
        "pruned",
        path,
        logits,
        model.temperature,
        sparsity=sparsity,
        note="dense ONNX storage: zeros do not shrink the file unless compressed",
    )
    return VariantRun(variant=variant, session=session, logits=logits)


class StudentRun(VariantRun):
    """The distilled student and how it compares with the same student trained alone."""

    distillation: Distillation


def student_step(
    dc: DistillConfig | None,
    cfg: ExportModelConfig,
    task: TaskSpec,
    model: TrainedModel,
    rows: HeldOutRows,
    fp32: Fp32Run,
    X_train: np.ndarray,
    y_train: np.ndarray,
    seed: int,
    export: Exporter,
    judge: Judge,
) -> StudentRun | None:
    """Train a student with the teacher's soft labels and one alone; ship the distilled one.

    Each student's temperature is fitted on the held-out rows with the training stage's
    :func:`~closedloop.stages.train.calibration.fit_temperature` (one temperature fit in the codebase).
    """
    if dc is None:
        return None
    problem, metric = task.problem_type, task.primary_metric
    n_logits = 1 if problem == "binary" else model.n_outputs
    family = dc.family or model.spec.family
    spec, size_choice = D.choose_student(
        family,
        dict(dc.params),
        list(task.input_shape),
        n_logits,
        teacher_parameters=model.n_parameters(),
        max_ratio=dc.max_parameter_ratio,
        default_width=model.spec.params.get("width") if family == model.spec.family else None,
    )
    teacher_train = torch_logits(fp32.teacher, X_train)
    students = {}
    for kind, soft in (("distilled", teacher_train), ("alone", None)):
        torch.manual_seed(seed)
        raw = RawInputNetwork(D.build_student(spec, list(task.input_shape), n_logits), model.preprocessing)
        D.fit(
            raw,
            X_train,
            y_train,
            problem,
            epochs=dc.epochs,
            lr=dc.lr,
            batch_size=dc.batch_size,
            seed=seed,
            teacher_logits=soft,
            temperature=dc.temperature,
            alpha=dc.alpha,
        )
        students[kind] = raw
    s_logits = {k: torch_logits(v, rows.X) for k, v in students.items()}
    temps = {k: fit_temperature(v, rows.y, problem) for k, v in s_logits.items()}
    p_alone = logits_to_proba(s_logits["alone"], problem, temps["alone"])
    p_kd = logits_to_proba(s_logits["distilled"], problem, temps["distilled"])
    path = export(students["distilled"], "onnx_student")
    session = export.session(path)
    onnx_student = onnx_logits(session, rows.X)
    require_parity(
        compare_outputs(s_logits["distilled"], onnx_student, cfg.rtol, cfg.atol),
        f"{path.name} vs PyTorch",
        cfg.rtol,
        cfg.atol,
    )
    n_s = D.n_params(students["distilled"].network)
    variant = judge.variant("student", path, s_logits["distilled"], temps["distilled"], parameters=n_s)
    vs_alone = compare_metric(
        metric,
        rows.y,
        p_kd,
        p_alone,
        problem,
        model.threshold,
        n_boot=cfg.bootstrap,
        seed=seed,
        groups=rows.groups,
    )
    distillation = Distillation(
        metric=metric,
        student_spec=spec.model_dump(),
        student_size_choice=size_choice,
        teacher_parameters=model.n_parameters(),
        student_parameters=n_s,
        evaluated_on=rows.evaluated_on,
        teacher=fp32.variant.comparison.value,
        student_distilled=variant.comparison.value,
        student_alone=vs_alone.reference,
        distilled_minus_alone=vs_alone.diff,
        distilled_minus_alone_95ci=vs_alone.diff_ci,
        temperature=dc.temperature,
        alpha=dc.alpha,
        epochs=dc.epochs,
    )
    # the student is judged on its PyTorch logits (parity above ties them to the ONNX file)
    return StudentRun(
        variant=variant, session=session, logits=s_logits["distilled"], distillation=distillation
    )
