"""A run directory written by hand (summary, manifest and the artifacts the decision reads), so report
tests need no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TYPES = {
    "task": ("02_task", "closedloop.stages.task:TaskSpec", "artifact.json"),
    "audit": ("03_audit", "closedloop.stages.audit.report:AuditReport", "report.json"),
    "evaluation": ("05_train", "closedloop.stages.train.stage:EvaluationReport", "artifact.json"),
    "exported": ("06_export", "closedloop.stages.export.stage:ExportBundle", "measurements.json"),
}


def _w(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def task(**kw: Any) -> dict[str, Any]:
    base = {
        "problem_type": "binary",
        "primary_metric": "auc",
        "metrics": ["auc", "acc"],
        "acceptance": {"auc": 0.9, "acc": 0.8},
        "constraints": {"max_latency_ms": 20, "latency_batch_size": 1, "max_model_size_mb": 10},
        "business": {"cases_per_day": 200, "positive_name": "pneumonia"},
        "references": [{"name": "paper", "level": "literature", "metrics": {"auc": 0.99}}],
    }
    return base | kw


def evaluation(**kw: Any) -> dict[str, Any]:
    per_day = {
        "unit": "day",
        "cases": 200.0,
        "prevalence": 0.6,
        "positive_name": "pneumonia",
        "caught": {"value": 115.2, "ci95": [110.0, 119.0]},
        "missed": {"value": 4.8, "ci95": [1.0, 10.0]},
        "false_alarms": {"value": 20.0, "ci95": [14.0, 27.0]},
        "evaluated_on": "test",
    }
    base = {
        "test": {"auc": {"value": 0.95, "ci95": [0.93, 0.97]}, "acc": {"value": 0.86, "ci95": [0.83, 0.89]}},
        "beats_baseline": {
            "metric": "auc",
            "baseline": "logistic_regression",
            "delta": 0.04,
            "ci95": [0.02, 0.06],
            "p_value": 0.0004,
            "p_holm": 0.0028,
            "n_configs": 7,
            "significant": True,
            "sentence": "The model beats the best baseline on test.",
        },
        "phases": {"final": {"per_day": per_day}},
        "curves": {"final seed 0": [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.3}]},
    }
    return base | kw


def audit(findings: list[dict[str, str]] | None = None, **metrics: Any) -> dict[str, Any]:
    return {
        "findings": findings or [],
        "results": {
            "duplicates": {"metrics": {"pairs": {"train-test": metrics.get("train_test", 0), "val-test": 0}}},
            "label_issues": {"metrics": {"estimated_noise_rate": metrics.get("noise", 0.01)}},
            "learning_curve": {
                "metrics": {"gain_at_2x": (g := metrics.get("gain", 0.002)), "gain_90ci": [g / 2, g * 1.5]}
            },
        },
    }


def measurements(**kw: Any) -> dict[str, Any]:
    base = {
        "shipped": "int8",
        "blessed": True,
        "checks": {"p95 latency <= 20 ms": True},
        "variants": {"int8": {"size_bytes": 150_000}},
    }
    return base | kw


# Measured latencies are stage timings (summary.json), as the export stage records them.
EXPORT_TIMINGS = {"latency_ms.int8.p50": 0.5, "latency_ms.int8.p95": 1.2}


def make_run(
    root: Path,
    *,
    name: str = "demo",
    status: str = "ok",
    artifacts: dict[str, dict[str, Any] | None] | None = None,
    failed: dict[str, str] | None = None,
    tracking: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """A run directory under ``root`` with the given artifact contents (None leaves one out)."""
    arts = {"task": task(), "audit": audit(), "evaluation": evaluation(), "exported": measurements()}
    arts.update(artifacts or {})
    run_dir = root / name / "20260101-000000-abcdef12"
    stages_m, stages_s = (
        [],
        {"data": {"status": "ok", "seconds": 0.1, "sizes": {"train": 800, "val": 100, "test": 100}}},
    )
    for key, content in arts.items():
        if content is None:
            continue
        folder, typ, fname = TYPES[key]
        path = f"stages/{folder}/artifacts/{key}"
        _w(run_dir / path / fname, content)
        stage = folder.split("_", 1)[1]
        stages_m.append({"name": stage, "status": "ok", "artifacts": {key: {"path": path, "type": typ}}})
        stages_s[stage] = {"status": "ok", "seconds": 1.0}
        if key == "exported":
            stages_s[stage] |= {"shipped": content.get("shipped"), "timings": dict(EXPORT_TIMINGS)}
    for stage, err in (failed or {}).items():
        stages_s[stage] = {"status": "failed", "seconds": 1.0, "error": err}
        stages_m.append({"name": stage, "status": "failed", "artifacts": {}})
    summary = {"name": name, "status": status, "seconds": 12.0, "seed": 0, "stages": stages_s}
    if tracking:
        summary["tracking"] = tracking
    _w(run_dir / "summary.json", summary)
    _w(run_dir / "manifest.json", {"name": name, "status": status, "stages": stages_m})
    import yaml

    cfg = config or {"name": name, "seed": 0, "data": {"source": "sklearn", "name": "digits"}, "stages": []}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return run_dir
