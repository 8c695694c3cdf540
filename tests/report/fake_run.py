"""A run directory written by hand (summary, manifest and the artifacts the decision reads), so report
tests need no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TYPES = {
    "task": ("02_task", "closedloop.artifacts.task:TaskSpec", "artifact.json"),
    "audit": ("03_audit", "closedloop.artifacts.audit:AuditReport", "report.json"),
    "evaluation": ("05_train", "closedloop.artifacts.evaluation:EvaluationReport", "artifact.json"),
    "exported": ("06_export", "closedloop.artifacts.export:ExportBundle", "measurements.json"),
}
# Each fixture below is the JSON a stage writes, built from the record type itself (so a fixture can
# never drift from the layout the reader expects); keyword arguments replace top-level fields.


def _w(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def task(**kw: Any) -> dict[str, Any]:
    from closedloop.artifacts.task import Business, Constraints, Reference, TaskSpec, ValidationProtocol

    base = TaskSpec(
        problem_type="binary",
        n_outputs=2,
        label_names=["normal", "pneumonia"],
        positive_class=1,
        inputs="chest X-rays",
        target="pneumonia",
        data_kind="images",
        input_shape=[28, 28, 1],
        primary_metric="auc",
        metrics=["auc", "acc"],
        metric_convention="standard",
        higher_is_better=True,
        acceptance={"auc": 0.9, "acc": 0.8},
        references=[Reference(name="paper", level="literature", metrics={"auc": 0.99})],
        constraints=Constraints(max_latency_ms=20, latency_batch_size=1, max_model_size_mb=10),
        business=Business(cases_per_day=200, positive_name="pneumonia"),
        intended_use="",
        known_misuse=[],
        validation=ValidationProtocol(),
        class_counts={},
        inferred={},
    ).model_dump(mode="json")
    return TaskSpec.model_validate(base | kw).model_dump(mode="json")


def estimate(value: float, lo: float, hi: float) -> dict[str, Any]:
    return {"value": value, "ci95": [lo, hi]}


def per_day(**kw: Any) -> dict[str, Any]:
    from closedloop.artifacts.figures import PerDay

    base = {
        "unit": "day",
        "cases": 200.0,
        "prevalence": 0.6,
        "threshold": 0.5,
        "positive_name": "pneumonia",
        "sensitivity": estimate(0.96, 0.92, 0.99),
        "false_positive_rate": estimate(0.25, 0.18, 0.33),
        "caught": estimate(115.2, 110.0, 119.0),
        "missed": estimate(4.8, 1.0, 10.0),
        "false_alarms": estimate(20.0, 14.0, 27.0),
        "flagged": estimate(135.2, 126.0, 144.0),
        "sentence": "per day: 115 caught, 4.8 missed, 20 false alarms",
        "sentence_with_intervals": "per day: 115 caught, 4.8 missed, 20 false alarms; 95% intervals: ...",
        "evaluated_on": "test",
    }
    return PerDay.model_validate(base | kw).model_dump(mode="json")


def gate(**kw: Any) -> dict[str, Any]:
    from closedloop.artifacts.gate import GateResult

    base = {
        "metric": "auc",
        "baseline": "logistic_regression",
        "delta": 0.04,
        "ci95": [0.02, 0.06],
        "bound95": 0.022,
        "p_value": 0.0004,
        "p_two_sided": 0.0008,
        "p_adjusted": 0.0028,
        "correction": "Holm over 7 test comparisons",
        "n_test_comparisons": 7,
        "n_configs": 7,
        "significant": True,
        "model_value": 0.95,
        "baseline_value": 0.91,
        "higher_is_better": True,
        "method": "paired bootstrap",
        "n": 100,
        "alpha": 0.05,
        "comparisons": [],
        "sentence": "The model beats the best baseline on test.",
    }
    return GateResult.model_validate(base | kw).model_dump(mode="json")


def selection(**kw: Any) -> dict[str, Any]:
    from closedloop.artifacts.selection import SelectionBias

    base = {
        "metric": "auc",
        "n_candidates": 7,
        "n_validation": 100,
        "winner": "trial 3",
        "winner_value": 0.97,
        "winner_is_best": True,
        "optimism": 0.01,
        "optimism_out_of_bootstrap": 0.012,
        "optimism_in_sample": 0.006,
        "corrected_value": 0.96,
        "winner_repick_rate": 0.6,
        "higher_is_better": True,
        "n_resamples": 200,
        "sentence": "selected among 7",
    }
    return SelectionBias.model_validate(base | kw).model_dump(mode="json")


def tune(**kw: Any) -> dict[str, Any]:
    """The tune phase's outcome (what compare reads: the chosen configuration's validation logits)."""
    from closedloop.artifacts.training import TuneOutcome

    base = {
        "model_params": {"width": 8},
        "hparams": {"lr": 0.001},
        "knobs": {},
        "best_epoch": 2,
        "val_metric": 0.9,
        "val_logits_file": "val.npy",
        "n_trials": 1,
        "n_complete": 1,
        "n_pruned": 0,
        "n_failed": 0,
        "failures": [],
        "importance": {},
        "gain_vs_unregularized": None,
        "knob_gains": {},
        "knob_gains_skipped": [],
        "trials": [],
        "best_trial_number": 0,
        "space": {},
    }
    return TuneOutcome.model_validate(base | kw).model_dump(mode="json")


def evaluation(**kw: Any) -> dict[str, Any]:
    from closedloop.artifacts.evaluation import EvaluationReport

    final = {
        "epochs": 2,
        "fitted_on": "train+val",
        "n_heldout": 50,
        "calibration": "temperature",
        "temperature": 1.0,
        "threshold": 0.5,
        "threshold_rule": "youden",
        "evaluated_on": {"test": "test"},
        "test": {},
        "val": {},
        "heldout": None,
        "per_day": per_day(),
    }
    base = {
        "phases": {"final": final},
        "curves": {"final seed 0": [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.3}]},
        "decisions": [],
        "val": {},
        "test": {"auc": estimate(0.95, 0.93, 0.97), "acc": estimate(0.86, 0.83, 0.89)},
        "beats_baseline": gate(),
        "n_configs": 7,
        "chosen": {
            "family": "small_cnn",
            "model_params": {"width": 8},
            "hparams": {"lr": 0.001},
            "epochs": 2,
            "n_parameters": 1000,
            "temperature": 1.0,
            "threshold": 0.5,
            "knobs": {},
        },
        "figures": [],
        "primary_metric": "auc",
    }
    return EvaluationReport.model_validate(base | kw).model_dump(mode="json")


def audit(findings: list[dict[str, str]] | None = None, **metrics: Any) -> dict[str, Any]:
    return {
        "findings": findings or [],
        "results": {
            "duplicates": {
                "status": "ok",
                "metrics": {"pairs": {"train-test": metrics.get("train_test", 0), "val-test": 0}},
            },
            "label_issues": {
                "status": "ok",
                "metrics": {
                    "estimated_noise_rate": metrics.get("noise", 0.01),
                    "noise_is_evidence": metrics.get("noise_is_evidence"),
                    **{k: metrics[k] for k in ("n_flagged", "one_rank_from_suggested") if k in metrics},
                },
            },
            "learning_curve": {
                "status": "ok",
                "metrics": {"gain_at_2x": (g := metrics.get("gain", 0.002)), "gain_90ci": [g / 2, g * 1.5]},
            },
            **(
                {
                    "repeated_entities": {
                        "status": "ok",
                        "metrics": {"test_share_sharing": metrics["entities"]},
                    }
                }
                if "entities" in metrics
                else {}
            ),
        },
        "failed": {},
    }


def measurements(**kw: Any) -> dict[str, Any]:
    from closedloop.artifacts.export import ExportRecord

    comparison = {
        "metric": "auc",
        "value": 0.95,
        "ci": [0.93, 0.97],
        "reference": 0.95,
        "diff": 0.0,
        "diff_ci": [-0.002, 0.002],
        "loss": 0.0,
    }
    variant = {
        "file": "model_int8.onnx",
        "size_bytes": 150_000,
        "temperature": 1.0,
        "threshold": 0.5,
        "comparison": comparison,
        "metrics": {"auc": 0.95},
        "accepted": True,
    }
    base = {
        "metric": "auc",
        "evaluated_on": "calibration",
        "n_evaluated": 50,
        "evaluated_on_note": "the held-out calibration rows",
        "shipped": "int8",
        "blessed": True,
        "checks": {"p95 latency <= 20 ms": True},
        "checks_text": ["p95 latency <= 20 ms: pass"],
        "parity": {
            "n": 50,
            "max_abs_diff": 1e-6,
            "max_rel_diff": 1e-6,
            "n_violations": 0,
            "passed": True,
            "worst": [],
        },
        "variants": {"int8": variant},
        "threads": 1,
        "distillation": None,
        "quantization": "dynamic",
    }
    return ExportRecord.model_validate(base | kw).model_dump(mode="json")


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
    export_timings: dict[str, float] | None = None,
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
            stages_s[stage] |= {
                "shipped": content["shipped"],
                "timings": dict(export_timings or EXPORT_TIMINGS),
            }
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
