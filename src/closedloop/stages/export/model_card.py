"""The model card: one markdown page a reviewer can read without the run directory.

Sections for the audit, baselines and the training evaluation appear only when those artifacts are
wired in (they are optional inputs of the export stage). The card holds no measured latency, so it is
the same for the same config, seed and inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LATENCY_NOTE = (
    "Latency (p50 / p95 per variant) and throughput are measured on the export machine; they are in the "
    "run's report and its `stage.json` timings, not in this folder (they differ between identical runs). "
    "The latency constraint's pass/fail is among the export checks (`measurements.json`)."
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _artifact_items(art: Any, limit: int = 12) -> list[str]:
    """Readable bullet lines from an optional artifact whose exact shape this module does not know."""
    try:
        summary = art.model_dump(mode="json") if hasattr(art, "model_dump") else dict(vars(art))
    except Exception:
        return [f"(could not read {type(art).__name__})"]
    lines = []
    for k, v in summary.items():
        if isinstance(v, dict | list) and len(str(v)) > 200:
            v = f"{type(v).__name__} with {len(v)} entries"
        lines.append(f"- **{k}**: {v}")
        if len(lines) >= limit:
            break
    return lines


def per_day(
    task: Any, y: np.ndarray, proba: np.ndarray, threshold: float, evaluated_on: str = "validation"
) -> str | None:
    """Binary tasks with ``business.cases_per_day``: caught / missed / false alarms per day at the threshold."""
    b = task.business
    if task.problem_type != "binary" or not b.cases_per_day:
        return None
    yi = np.asarray(y).reshape(-1).astype(int)
    pred = (proba[:, 1] >= threshold).astype(int)
    pos, neg = yi == 1, yi == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    fpr = float(pred[neg].mean()) if neg.any() else float("nan")
    prev = b.prevalence or float(pos.mean())
    n_pos, n_neg = b.cases_per_day * prev, b.cases_per_day * (1 - prev)
    name = b.positive_name or "positive"
    cost = (1 - sens) * n_pos * b.cost_false_negative + fpr * n_neg * b.cost_false_positive
    return (
        f"Per day ({b.cases_per_day:,.0f} cases, {prev:.1%} {name}): about **{sens * n_pos:,.1f} {name} caught**, "
        f"**{(1 - sens) * n_pos:,.1f} missed**, **{fpr * n_neg:,.1f} false alarms** "
        f"(at the shipped threshold {threshold:.4g}: sensitivity {sens:.3f}, false-positive rate {fpr:.3f} on "
        f"{len(yi)} {evaluated_on} samples the model "
        f"did not train on; expected cost {cost:,.1f})."
    )


def render_model_card(
    *,
    task: Any,
    model: Any,
    data_meta: Any,
    measurements: dict[str, Any],
    per_day_text: str | None,
    montage: str | None,
    montage_error: str | None,
    audit: Any = None,
    baseline: Any = None,
    evaluation: Any = None,
) -> str:
    m = measurements
    metric = task.primary_metric
    on = m.get("evaluated_on", "validation")
    on_text = f"{m.get('n_evaluated', '?')} {on} samples the deployed model did not train on"
    if on == "trained_on":
        on_text = "validation samples the deployed model TRAINED ON (nothing was held out): optimistic"
    cal_on = getattr(model, "info", {}).get("calibrated_on", "validation")
    shipped = m["shipped"]
    L: list[str] = [f"# Model card: {data_meta.name} ({task.problem_type})", ""]
    L += [
        "## Intended use",
        task.intended_use or "_Not declared in the task (set `intended_use` in the task stage)._",
        "",
        "## Known misuse",
        *([f"- {x}" for x in task.known_misuse] or ["_None declared (set `known_misuse`)._"]),
        "",
        "## Model",
        f"- Predicts **{task.target}** from **{task.inputs}**; classes: {', '.join(task.label_names) or 'n/a'}",
        f"- Family `{model.spec.family}` {model.spec.params or ''}, {model.n_parameters():,} parameters",
        f"- Shipped variant: **{shipped}** (`{m['variants'][shipped]['file']}`), blessed: **{m['blessed']}**",
        f"- Calibrated temperature {model.temperature:.3f}; operating threshold "
        + (
            f"{model.threshold:.4f} (chosen on {cal_on} predictions)"
            if model.threshold is not None
            else "argmax / 0.5"
        ),
        "",
        "## Data",
        f"- Source `{data_meta.source}`, dataset `{data_meta.name}`; class counts {task.class_counts}",
    ]
    if data_meta.warnings:
        L += [f"- Loader warning: {w}" for w in data_meta.warnings]
    if audit is not None:
        L += ["", "### Audit findings", *_artifact_items(audit)]
    L += ["", f"## Metrics (on {on_text}; the single test evaluation belongs to training)", ""]
    if m.get("evaluated_on_note"):
        L += [f"_Held-out split: {m['evaluated_on_note']}._", ""]
    L += [
        "| variant | " + metric + " | 95% CI | diff vs fp32 [95% CI] | size | accepted |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in m["variants"].items():
        c = v.get("comparison")
        cells = (
            [
                _fmt(c["value"]),
                f"[{c['ci'][0]:.4f}, {c['ci'][1]:.4f}]",
                f"{c['diff']:+.4f} [{c['diff_ci'][0]:+.4f}, {c['diff_ci'][1]:+.4f}]",
            ]
            if c
            else ["-", "-", "-"]
        )
        acc = "yes" if v["accepted"] else f"no: {v.get('reason', '')}"
        L.append(f"| {name} | {' | '.join(cells)} | {v.get('size_bytes', 0) / 1e6:.3f} MB | {acc} |")
    L += ["", LATENCY_NOTE]
    if task.acceptance:
        L += ["", f"Acceptance bar: {task.acceptance}; checks: {m['checks']}"]
    if evaluation is not None:
        L += ["", "### Training evaluation", *_artifact_items(evaluation)]
    if baseline is not None:
        L += ["", "### Baselines", *_artifact_items(baseline)]
    if task.references:
        L += ["", "### References"]
        for r in task.references:
            ci = "".join(f", {k} 95% CI [{v[0]:.3f}, {v[1]:.3f}]" for k, v in r.ci95.items() if k in ("acc",))
            n = f", {r.n} items" if r.n else ""
            L.append(f"- {r.name} ({r.level}): {r.metrics}{ci}{n} {r.source}")
            if r.comparison is not None:
                L.append(f"  - {r.comparison.sentence()}")
    L += ["", "## Operating point"]
    L.append(per_day_text or "_No per-day framing: set `business.cases_per_day` (binary tasks)._")
    L += ["", f"## Most confident errors ({on_text})"]
    if montage:
        L.append(f"![worst errors]({montage})")
    else:
        L.append(f"_Montage not drawn: {montage_error or 'not an image task'}._")
    L += [
        "",
        "## Limits",
        f"- Inputs must match the training distribution: {task.inputs}; raw values as documented in `predictor.json`.",
        f"- Metrics are estimates on {on} data with bootstrap intervals; a new site, scanner or population may differ.",
        *(
            ["- int8 outputs differ slightly from fp32 (see the parity figures in `measurements.json`)."]
            if "int8" in m.get("variants", {})
            else [f"- No int8 variant: {m.get('quantization_note') or m.get('quantization', 'none')}."]
        ),
        *(
            [
                "- The int8 model is dynamically quantized (one activation scale per model call), so the "
                "predictor and the server run it one row at a time: a row's answer never depends on its "
                "batch-mates, and a large request costs one model call per row (`quantize: none` ships fp32)."
            ]
            if m.get("quantization") == "dynamic" and "int8" in m.get("variants", {})
            else []
        ),
        "",
        "## Monitoring drift",
        "- Log inputs' summary statistics and predicted probabilities per day; compare with the reference profile "
        "(the `monitor` stage does this from the export folder).",
        "- Alert when the positive rate at the threshold or the mean probability moves outside its reference interval; "
        "re-label a sample and re-evaluate before trusting the model again.",
        "",
    ]
    return "\n".join(L)


def worst_errors_montage(
    X: np.ndarray,
    y: np.ndarray,
    proba: np.ndarray,
    problem: str,
    label_names: list[str],
    path: Path,
    k: int = 16,
) -> Path:
    """A grid of the ``k`` most confident wrong predictions on held-out samples (image tasks)."""
    from closedloop.report.montage import montage

    yi = np.asarray(y).reshape(-1).astype(int)
    conf_true = proba[np.arange(len(yi)), yi]
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != yi)
    if len(wrong) == 0:
        raise ValueError("no errors on the held-out samples")
    order = wrong[np.argsort(conf_true[wrong])][:k]
    cols = min(8, len(order))
    rows = int(np.ceil(len(order) / cols))
    imgs = np.asarray(X[order])
    if imgs.dtype != np.uint8:  # stored as floats: spread their range over 0-255
        lo, hi = float(imgs.min()), float(imgs.max())
        imgs = (imgs - lo) * (255.0 / (hi - lo if hi > lo else 1.0))

    def name(c: int) -> str:
        return label_names[c] if c < len(label_names) else str(c)

    titles = [f"y={name(yi[i])}\np={name(pred[i])} {proba[i, pred[i]]:.2f}" for i in order]
    return montage(list(imgs), titles, [""] * rows, cols, path, "")
