"""The export stage's steps, in order (kept apart from the stage class so each step reads on its own)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from closedloop.core.io import to_json, write_text_atomic
from closedloop.core.stage import RunContext
from closedloop.models.trained import RawInputNetwork, TrainedModel, logits_to_proba, raw_array
from closedloop.stages.export import distill as D
from closedloop.stages.export.evaluate import LOWER_IS_BETTER, all_metrics, compare_metric
from closedloop.stages.export.latency import measure_all, onnx_runner, torch_runner
from closedloop.stages.export.model_card import per_day, render_model_card, worst_errors_montage
from closedloop.stages.export.onnx_export import export_onnx, onnx_session
from closedloop.stages.export.parity import compare_outputs, require_parity
from closedloop.stages.export.prune import finalize, prune_network
from closedloop.stages.export.quantize import quantize_model
from closedloop.stages.export.stage import FILES, ExportBundle, ExportModelConfig, _validate
from closedloop.stages.train.heldout import heldout_split

SHIP_ORDER = ("int8", "student", "pruned", "fp32")


def _logits(session: Any, X: np.ndarray, batch: int = 512) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: np.ascontiguousarray(X[i : i + batch])})[0] for i in range(0, len(X), batch)
    ]
    return np.concatenate(outs).reshape(len(X), -1)


@torch.no_grad()
def _torch_logits(module: torch.nn.Module, X: np.ndarray, batch: int = 512) -> np.ndarray:
    module.eval()
    outs = [
        module(torch.from_numpy(np.ascontiguousarray(X[i : i + batch]))).numpy()
        for i in range(0, len(X), batch)
    ]
    return np.concatenate(outs).reshape(len(X), -1)


def _fit_temperature(logits: np.ndarray, y: np.ndarray, problem: str) -> float:
    """Temperature minimizing validation NLL (a grid is enough for one scalar)."""
    if problem in ("regression",):
        return 1.0
    best, best_t = np.inf, 1.0
    yi = np.asarray(y)
    for t in np.exp(np.linspace(np.log(0.25), np.log(8), 41)):
        p = np.clip(logits_to_proba(logits, problem, t), 1e-7, 1 - 1e-7)
        if problem == "binary":
            nll = -np.mean(np.log(p[np.arange(len(p)), yi.reshape(-1).astype(int)]))
        elif problem == "multilabel":
            yy = yi.reshape(p.shape)
            nll = -np.mean(yy * np.log(p) + (1 - yy) * np.log(1 - p))
        else:
            nll = -np.mean(np.log(p[np.arange(len(p)), yi.reshape(-1).astype(int)]))
        if nll < best:
            best, best_t = nll, float(t)
    return best_t


def run_export(cfg: ExportModelConfig, inputs: Any, ctx: RunContext) -> ExportBundle:
    _validate(cfg)
    t_start = time.perf_counter()
    data, task, model = inputs.data, inputs.task, inputs.model
    model: TrainedModel
    problem, metric = task.problem_type, task.primary_metric
    threads = cfg.latency.threads or task.constraints.threads
    torch_threads = torch.get_num_threads()
    out = ctx.work_dir / "export"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = ctx.logger

    # Everything below is scored on the rows the deployed model did not train on (the held-out
    # calibration split recorded by the train stage), never on trained-on validation rows.
    held, evaluated_on, held_note = heldout_split(model, data, "export")
    if evaluated_on == "trained_on":
        log.warning("export: %s; variant figures are on trained-on data", held_note)
    Xval = raw_array(held.X)
    yval = np.asarray(held.y)
    Xtr = raw_array(data.train.X)
    ytr = np.asarray(data.train.y)
    thr = model.threshold

    def export(module: torch.nn.Module, key: str) -> Path:
        return export_onnx(
            module,
            torch.from_numpy(Xval[:2].copy()),
            out / FILES[key],
            opset=cfg.opset,
            exporter=cfg.exporter,
        )

    # 1. fp32 export + checks + parity against PyTorch ------------------------------------------------
    teacher = model.raw_module()
    fp32_path = export(teacher, "onnx_fp32")
    fp32 = onnx_session(fp32_path, threads)
    ref_logits = _torch_logits(teacher, Xval)
    fp32_logits = _logits(fp32, Xval)
    n_par = min(cfg.parity_samples, len(Xval))
    parity = compare_outputs(ref_logits[:n_par], fp32_logits[:n_par], cfg.rtol, cfg.atol)
    require_parity(
        parity, f"{fp32_path.name} vs PyTorch on {n_par} {evaluated_on} samples", cfg.rtol, cfg.atol
    )
    p_ref = logits_to_proba(fp32_logits, problem, model.temperature)

    variants: dict[str, dict[str, Any]] = {
        "fp32": {
            "file": FILES["onnx_fp32"],
            "size_bytes": os.path.getsize(fp32_path),
            "accepted": True,
            "temperature": model.temperature,
            "threshold": thr,
            "comparison": compare_metric(
                metric, yval, p_ref, p_ref, problem, thr, n_boot=cfg.bootstrap, seed=ctx.seed
            ).model_dump(),
            "metrics": all_metrics(task.metrics, yval, p_ref, problem, thr),
        }
    }
    sessions: dict[str, Any] = {"fp32": fp32}

    def add_variant(name: str, path: Path, temperature: float, **extra: Any) -> None:
        """Open an ONNX session for a compressed variant and record its file, size and calibration."""
        sessions[name] = onnx_session(path, threads)
        variants[name] = {
            "file": FILES[f"onnx_{name}"],
            "size_bytes": os.path.getsize(path),
            **extra,
            "temperature": temperature,
            "threshold": thr,
        }

    def judge(name: str, logits: np.ndarray, temperature: float, extra_reason: str | None = None) -> None:
        p = logits_to_proba(logits, problem, temperature)
        cmp = compare_metric(metric, yval, p, p_ref, problem, thr, n_boot=cfg.bootstrap, seed=ctx.seed)
        v = variants[name]
        v["comparison"] = cmp.model_dump()
        v["metrics"] = all_metrics(task.metrics, yval, p, problem, thr)
        v["max_prob_diff_vs_fp32"] = float(np.abs(p - p_ref).max()) if len(p) else 0.0
        reasons = []
        if cmp.loss > cfg.tolerance:
            reasons.append(f"{metric} loses {cmp.loss:.4f} vs fp32 (> tolerance {cfg.tolerance})")
        if extra_reason:
            reasons.append(extra_reason)
        v["accepted"] = not reasons
        if reasons:
            v["reason"] = "; ".join(reasons)
            log.warning("export: variant %s rejected: %s", name, v["reason"])

    # 2. int8 ------------------------------------------------------------------------------------------
    mode = cfg.quantize if cfg.quantize != "auto" else ("static" if task.data_kind == "images" else "dynamic")
    if mode != "none":
        idx = ctx.rng("calibration").choice(
            len(Xtr), size=min(cfg.calibration_samples, len(Xtr)), replace=False
        )
        int8_path = quantize_model(
            fp32_path,
            out / FILES["onnx_int8"],
            mode=mode,
            calibration=Xtr[np.sort(idx)] if mode == "static" else None,
            input_shape=list(task.input_shape),
            per_channel=cfg.per_channel,
        )
        add_variant("int8", int8_path, model.temperature, mode=mode)
        q_logits = _logits(sessions["int8"], Xval)
        q_par = compare_outputs(fp32_logits, q_logits, cfg.rtol, cfg.atol)
        variants["int8"]["parity_vs_fp32"] = q_par.model_dump(
            include={"max_abs_diff", "max_rel_diff", "n_violations"}
        )
        p_q = logits_to_proba(q_logits, problem, model.temperature)
        drift = float(np.abs(p_q - p_ref).max()) if len(p_q) else 0.0
        judge(
            "int8",
            q_logits,
            model.temperature,
            f"max |P(int8) - P(fp32)| {drift:.4f} > {cfg.int8_max_prob_diff}"
            if drift > cfg.int8_max_prob_diff
            else None,
        )
    seconds_core = time.perf_counter() - t_start

    # 3. optional pruning ---------------------------------------------------------------------------------
    n_logits = 1 if problem == "binary" else model.n_outputs
    if cfg.prune is not None:
        net, sp = prune_network(model.network, cfg.prune.amount)
        raw = RawInputNetwork(net, model.preprocessing)
        if cfg.prune.epochs:
            D.fit(raw, Xtr, ytr, problem, epochs=cfg.prune.epochs, lr=cfg.prune.lr, seed=ctx.seed)
        finalize(net)
        path = export(raw.eval(), "onnx_pruned")
        add_variant(
            "pruned",
            path,
            model.temperature,
            sparsity=sp,
            note="dense ONNX storage: zeros do not shrink the file unless compressed",
        )
        judge("pruned", _logits(sessions["pruned"], Xval), model.temperature)

    # 4. optional distillation ----------------------------------------------------------------------------
    distillation: dict[str, Any] | None = None
    student_raw = None
    if cfg.distill is not None:
        dc = cfg.distill
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
        teacher_tr = _torch_logits(teacher, Xtr)
        students = {}
        for kind, tl in (("distilled", teacher_tr), ("alone", None)):
            torch.manual_seed(ctx.seed)
            net = D.build_student(spec, list(task.input_shape), n_logits)
            raw = RawInputNetwork(net, model.preprocessing)
            D.fit(
                raw,
                Xtr,
                ytr,
                problem,
                epochs=dc.epochs,
                lr=dc.lr,
                batch_size=dc.batch_size,
                seed=ctx.seed,
                teacher_logits=tl,
                temperature=dc.temperature,
                alpha=dc.alpha,
            )
            students[kind] = raw
        s_logits = {k: _torch_logits(v, Xval) for k, v in students.items()}
        temps = {k: _fit_temperature(v, yval, problem) for k, v in s_logits.items()}
        p_alone = logits_to_proba(s_logits["alone"], problem, temps["alone"])
        p_kd = logits_to_proba(s_logits["distilled"], problem, temps["distilled"])
        student_raw = students["distilled"]
        path = export(student_raw, "onnx_student")
        n_t, n_s = model.n_parameters(), D.n_params(student_raw.network)
        add_variant("student", path, temps["distilled"], parameters=n_s)
        sp_par = compare_outputs(
            s_logits["distilled"], _logits(sessions["student"], Xval), cfg.rtol, cfg.atol
        )
        require_parity(sp_par, f"{path.name} vs PyTorch", cfg.rtol, cfg.atol)
        judge("student", s_logits["distilled"], temps["distilled"])
        vs_alone = compare_metric(
            metric, yval, p_kd, p_alone, problem, thr, n_boot=cfg.bootstrap, seed=ctx.seed
        )
        t_val = variants["fp32"]["comparison"]["value"]
        distillation = {
            "student_spec": spec.model_dump(),
            "student_size_choice": size_choice,
            "teacher_parameters": n_t,
            "student_parameters": n_s,
            "parameter_ratio": n_s / max(n_t, 1),
            "evaluated_on": evaluated_on,
            f"teacher_{metric}": t_val,
            f"student_distilled_{metric}": variants["student"]["comparison"]["value"],
            f"student_alone_{metric}": vs_alone.reference,
            "distilled_minus_alone": vs_alone.diff,
            "distilled_minus_alone_95ci": vs_alone.diff_ci,
            "retained_share_of_teacher": variants["student"]["comparison"]["value"] / t_val
            if t_val
            else None,
            "temperature": dc.temperature,
            "alpha": dc.alpha,
            "epochs": dc.epochs,
        }

    # 5. latency and throughput ---------------------------------------------------------------------------
    lb = task.constraints.latency_batch_size
    sample = Xval[: max(cfg.latency.throughput_batch_size, lb)]
    runners = {
        "torch_fp32": torch_runner(teacher, threads),
        **{k: onnx_runner(s) for k, s in sessions.items()},
    }
    timings = measure_all(
        runners,
        sample,
        threads=threads,
        latency_batch=lb,
        throughput_batch=cfg.latency.throughput_batch_size,
        repeats=cfg.latency.repeats,
        warmup=cfg.latency.warmup,
    )
    latency_ms = {n: {"p50": t.p50_ms, "p95": t.p95_ms} for n, t in timings.items()}
    throughput = {n: t.throughput_per_s for n, t in timings.items()}
    torch.set_num_threads(torch_threads)

    # 6. which variant ships, and is it blessed ----------------------------------------------------------
    c = task.constraints

    def constraint_checks(name: str) -> dict[str, bool]:
        checks = {}
        if c.max_latency_ms is not None:
            checks[f"p95 latency <= {c.max_latency_ms} ms at batch {lb}"] = (
                latency_ms[name]["p95"] <= c.max_latency_ms
            )
        if c.max_model_size_mb is not None:
            checks[f"size <= {c.max_model_size_mb} MB"] = (
                variants[name]["size_bytes"] / 1e6 <= c.max_model_size_mb
            )
        for m_name, bar in task.acceptance.items():
            val = variants[name].get("metrics", {}).get(m_name)
            if val is None:
                continue
            ok = val <= bar if m_name in LOWER_IS_BETTER else val >= bar
            rel = "<=" if m_name in LOWER_IS_BETTER else ">="
            checks[f"{evaluated_on} {m_name} {val:.4f} {rel} {bar}"] = bool(ok)
        return checks

    if cfg.ship != "auto":
        shipped = cfg.ship
    else:
        # int8 only when it is actually smaller (QDQ scales outweigh the savings on tiny models).
        fp32_size = variants["fp32"]["size_bytes"]
        cands = [
            n
            for n in SHIP_ORDER
            if n in variants
            and variants[n]["accepted"]
            and (n != "int8" or variants[n]["size_bytes"] < fp32_size)
        ]
        shipped = next((n for n in cands if all(constraint_checks(n).values())), "fp32")
    checks = constraint_checks(shipped)
    checks[f"{shipped} accepted"] = bool(variants[shipped]["accepted"])
    blessed = all(checks.values())

    # 7. predictor metadata, montage, card ----------------------------------------------------------------
    pre = model.preprocessing
    shipped_models = {
        n: {k: v[k] for k in ("file", "temperature", "threshold")}
        for n, v in variants.items()
        if v["accepted"] or n == shipped
    }
    meta = {
        "format_version": 1,
        "problem_type": problem,
        "label_names": model.label_names,
        "positive_class": task.positive_class,
        "temperature": model.temperature,
        "threshold": thr,
        "threads": threads,
        "shipped": shipped,
        "models": shipped_models,
        "input": {
            "name": "x",
            "kind": pre.input_kind,
            "shape": list(pre.input_shape),
            "dtype": "float32",
            "accepts": (
                "uint8 or float pixel values 0..255, shape (N, H, W, C), channels last"
                if pre.input_kind == "images"
                else "float feature values in the training columns' order, NaN for missing"
            ),
            "feature_names": pre.feature_names,
            "normalization_in_graph": {"mean": pre.mean, "std": pre.std, "impute": pre.impute},
        },
        "output": "logits; proba = link(logits / temperature) (sigmoid for binary/multilabel, softmax for multiclass)",
        "rejected": {n: v.get("reason", "") for n, v in variants.items() if not v["accepted"]},
    }
    write_text_atomic(out / FILES["predictor_metadata"], to_json(meta))
    shutil.copy2(Path(__file__).resolve().parents[2] / "serving" / "predictor.py", out / FILES["predictor"])

    p_ship = logits_to_proba(_logits(sessions[shipped], Xval), problem, variants[shipped]["temperature"])
    montage, montage_error = None, None
    if task.data_kind == "images" and problem in ("binary", "multiclass", "ordinal"):
        try:
            png = worst_errors_montage(
                held.X, yval, p_ship, problem, model.label_names, ctx.figures_dir / FILES["worst_errors"]
            )
            shutil.copy2(png, out / FILES["worst_errors"])
            montage = FILES["worst_errors"]
        except Exception as exc:  # the card says why instead of failing the export
            montage_error = f"{type(exc).__name__}: {exc}"
    else:
        montage_error = "only drawn for image classification tasks"

    measurements: dict[str, Any] = {
        "metric": metric,
        "evaluated_on": evaluated_on,
        "n_evaluated": int(len(yval)),
        "evaluated_on_note": held_note,
        "shipped": shipped,
        "blessed": blessed,
        "checks": checks,
        "checks_text": [f"{k}: {'pass' if v else 'FAIL'}" for k, v in checks.items()],
        "parity": parity.model_dump(),
        "variants": variants,
        "latency_ms": latency_ms,
        "throughput": throughput,
        "threads": threads,
        "distillation": distillation,
        "quantization": mode,
        "seconds_export_quantize_checks": seconds_core,
    }
    measurements["seconds"] = time.perf_counter() - t_start
    card = render_model_card(
        task=task,
        model=model,
        data_meta=data.meta,
        measurements=measurements,
        per_day_text=per_day(task, yval, p_ship, 0.5 if thr is None else thr, evaluated_on),
        montage=montage,
        montage_error=montage_error,
        audit=getattr(inputs, "audit", None),
        baseline=getattr(inputs, "baseline", None),
        evaluation=getattr(inputs, "evaluation", None),
    )
    write_text_atomic(out / FILES["model_card"], card)
    measurements["seconds"] = time.perf_counter() - t_start
    write_text_atomic(out / FILES["measurements"], to_json(measurements))
    return ExportBundle(out, measurements)
