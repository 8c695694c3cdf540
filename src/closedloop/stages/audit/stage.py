"""The ``audit`` stage: run the configured checks, collect findings, stop on configured errors.

The audit never modifies its input. ``drop_duplicates: true`` is an explicit fix: it writes a *new*
bundle (``clean_data``) without the train copies of cross-split duplicates and of repeated train
samples (val and test are kept as they are) and records what it dropped in the report.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from threadpoolctl import threadpool_limits

from closedloop.core.config import PluginSpec, StageConfig
from closedloop.core.errors import ConfigError, DataError
from closedloop.core.killpoints import kill_point
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO, stage_timings
from closedloop.data.bundle import DatasetBundle, Split
from closedloop.stages.audit.base import (
    SEVERITIES,
    AuditCheck,
    AuditContext,
    CheckSkipped,
    Finding,
    resolve_check,
)
from closedloop.stages.audit.report import AuditReport
from closedloop.stages.task import TaskSpec

DEFAULT_CHECKS = [
    "provenance",
    "samples",
    "class_balance",
    "feature_quality",
    "duplicates",
    "target_leakage",
    "repeated_entities",
    "split_shift",
    "label_issues",
    "learning_curve",
]


CheckSpec = PluginSpec  # one configured check: a registered name or ``pkg.module:Class``, and its params


class AuditDatasetConfig(StageConfig):
    """Which checks run, with which params, and which findings stop the pipeline."""

    checks: list[str | CheckSpec] = Field(default_factory=lambda: list(DEFAULT_CHECKS))
    """Check names (or ``{name, params}``); default: all built-in checks."""
    stop_on: list[str] = Field(default_factory=lambda: ["duplicates:error"])
    """Findings that make the stage fail: a severity (``error``), a check name (its errors), or
    ``check:severity``. Default: train/test overlap (``duplicates:error``). ``[]`` never stops."""
    drop_duplicates: bool = False
    """Write a de-duplicated copy of the data as the ``clean_data`` output (the input is unchanged)."""

    @field_validator("checks")
    @classmethod
    def _resolve(cls, v: list[str | CheckSpec]) -> list[str | CheckSpec]:
        for i, spec in enumerate(v):
            name, params = PluginSpec.parts(spec)
            check = resolve_check(name, where=f"stage 'audit': checks[{i}]")
            check(params, where=f"stage 'audit': checks[{i}] ({name}).params")
        return v

    @field_validator("stop_on")
    @classmethod
    def _stop(cls, v: list[str]) -> list[str]:
        for item in v:
            name, _, sev = item.partition(":")
            if sev and sev not in SEVERITIES:
                raise ConfigError(f"stage 'audit': stop_on {item!r}: severity must be one of {SEVERITIES}")
            if name not in SEVERITIES:
                resolve_check(name, where=f"stage 'audit': stop_on {item!r}")
        return v

    def specs(self) -> list[tuple[str, dict[str, Any]]]:
        return [PluginSpec.parts(s) for s in self.checks]


def _stops(finding: dict[str, Any], stop_on: list[str]) -> bool:
    for item in stop_on:
        name, _, sev = item.partition(":")
        if name in SEVERITIES and finding["severity"] == name:
            return True
        if name == finding["check"] and finding["severity"] == (sev or "error"):
            return True
    return False


@register_stage("audit")
class AuditDataset(Stage):
    """Look at the data before any model: duplicates and leakage, label issues, balance, shift,
    quality, provenance and whether the data is enough. Findings go to summary.json."""

    Config = AuditDatasetConfig
    version = "1"

    class Inputs(StageIO):
        data: DatasetBundle
        task: TaskSpec

    class Outputs(StageIO):
        audit: AuditReport
        clean_data: DatasetBundle | None = None

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        cfg: AuditDatasetConfig = self.config  # type: ignore[assignment]
        data, task = inputs.data, inputs.task
        actx = AuditContext(ctx, data)
        report = AuditReport(config=cfg.model_dump(mode="json"))
        for name, params in cfg.specs():
            cls: type[AuditCheck] = resolve_check(name)
            check = cls(params)
            actx.current_check = cls.name
            with ctx.timed(f"check {cls.name}"):
                entry = self._run_check(check, data, task, actx, report, ctx)
            report.results[cls.name] = entry
            kill_point(f"audit/{cls.name}/done")
            seconds = ctx.timings[f"check {cls.name}"]
            ctx.logger.info("audit check %s: %s in %.1fs", cls.name, entry["status"], seconds)
        clean = self._drop_duplicates(data, report) if cfg.drop_duplicates else None
        stopping = [f for f in report.findings if _stops(f, cfg.stop_on)]
        if stopping:
            where = ctx.work_dir / "audit_report"
            where.mkdir(parents=True, exist_ok=True)
            report.save(where)
            lines = "\n".join(f"- [{f['check']}] {f['message']}" for f in stopping[:10])
            raise DataError(
                f"stage {self.name!r}: the audit found {len(stopping)} finding(s) matching stop_on {cfg.stop_on}:\n{lines}\n"
                f"The full report is in {where}. Fix the data (e.g. drop_duplicates: true, stop_on: [] and "
                "inputs_from: {data: clean_data} on the stages after the audit), or set stop_on: [] to continue anyway."
            )
        return self.Outputs(audit=report, clean_data=clean)

    @staticmethod
    def _drop_duplicates(data: DatasetBundle, report: AuditReport) -> DatasetBundle | None:
        if report.results.get("duplicates", {}).get("status") != "ok":
            report.fixes.append(
                {
                    "action": "drop_duplicates",
                    "applied": False,
                    "note": "the duplicates check did not run, nothing dropped",
                }
            )
            return None
        d = report.duplicates
        # exact copies and near pairs in excess of the data's own density (not every close pair)
        cross = d[(d.split_a == "train") & (d.split_b != "train") & d.excess].index_a
        within = d[(d.split_a == "train") & (d.split_b == "train")].index_b
        drop = np.unique(np.concatenate([cross.to_numpy(int), within.to_numpy(int)]))
        keep = np.setdiff1d(np.arange(len(data.train)), drop)
        tr = data.train
        X = tr.X.iloc[keep].reset_index(drop=True) if hasattr(tr.X, "iloc") else tr.X[keep]
        meta = data.meta.model_copy(deep=True)
        meta.warnings = [*meta.warnings, f"audit drop_duplicates: removed {len(drop)} train sample(s)"]
        report.fixes.append(
            {
                "action": "drop_duplicates",
                "applied": True,
                "split": "train",
                "n_dropped": int(len(drop)),
                "dropped_indices": drop[:1000].tolist(),
                "note": "train copies of cross-split duplicates and repeated train samples; val/test unchanged",
            }
        )
        return DatasetBundle(
            meta=meta,
            splits={"train": Split(X=X, y=tr.y[keep]), "val": data.val, "test": data.splits["test"]},
        )

    @staticmethod
    def _run_check(
        check: AuditCheck,
        data: DatasetBundle,
        task: TaskSpec,
        actx: AuditContext,
        report: AuditReport,
        ctx: RunContext,
    ) -> dict[str, Any]:
        """Run one check; its findings go into ``report``; returns its ``results`` entry."""
        cls = type(check)
        entry: dict[str, Any] = {"status": "ok", "metrics": {}, "figures": {}, "tables": []}
        if data.kind not in cls.applies_to:
            note = f"check {cls.name!r} applies to {sorted(cls.applies_to)} data, not {data.kind}: skipped"
            entry.update(status="skipped", note=note)
            report.findings.append(Finding(cls.name, "info", note).to_dict())
        else:
            try:
                # one OpenMP thread: on a shared 2-core machine spinning OpenMP workers (boosting,
                # kNN) slowed checks 20x under contention; BLAS keeps its threads
                with threadpool_limits(limits=1, user_api="openmp"):
                    res = check.run(data, task, actx)
                entry.update(metrics=res.metrics, figures=res.figures, tables=sorted(res.tables))
                report.findings += [f.to_dict() for f in res.findings]
                report.tables.update(res.tables)
            except CheckSkipped as exc:
                entry.update(status="skipped", note=str(exc))
                report.findings.append(Finding(cls.name, "info", f"skipped: {exc}").to_dict())
            except Exception as exc:  # a broken check must not hide the others' findings
                msg = f"{type(exc).__name__}: {exc}"
                entry.update(status="failed", note=msg)
                report.failed[cls.name] = msg
                report.findings.append(
                    Finding(cls.name, "warning", f"check failed and was skipped: {msg}").to_dict()
                )
                ctx.logger.warning("audit check %s failed:\n%s", cls.name, traceback.format_exc())
        return entry

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        r = outputs.audit
        metrics = {k: v.get("metrics", {}) for k, v in r.results.items()}
        out: dict[str, Any] = {
            "findings": [
                {"check": f["check"], "severity": f["severity"], "message": f["message"]} for f in r.findings
            ],
            "n_errors": r.count("error"),
            "n_warnings": r.count("warning"),
            "n_info": r.count("info"),
            "failed_checks": dict(r.failed),
            "skipped_checks": [k for k, v in r.results.items() if v["status"] == "skipped"],
            "n_duplicate_pairs": int(len(r.duplicates)),
            "n_label_issues": int(len(r.label_issues)),
        }
        for key, check, metric in (
            ("estimated_noise_rate", "label_issues", "estimated_noise_rate"),
            ("label_noise_is_evidence", "label_issues", "noise_is_evidence"),
            ("n_identifier_columns", "feature_quality", "n_identifier_columns"),
            ("adversarial_auc_test", "split_shift", "adversarial_auc_test"),
            ("gain_at_2x_data", "learning_curve", "gain_at_2x"),
            ("near_nonzero_look", "duplicates", "nonzero_look"),
            ("near_columns_look", "duplicates", "columns_look"),
            ("near_exact_look", "duplicates", "near_exact_look"),
            ("near_null_redeals", "duplicates", "null_redeals"),
            ("near_combine_looks", "duplicates", "combine_looks"),
        ):
            if metric in metrics.get(check, {}):
                out[key] = metrics[check][metric]
        if r.fixes:
            out["fixes"] = [{k: v for k, v in f.items() if k != "dropped_indices"} for f in r.fixes]
        return out

    def report(self, outputs: Outputs, stage_dir: Path) -> list[Any]:
        from closedloop.core.blocks import Callout, Figure, KeyValues, Paragraph, Section, Table

        r = outputs.audit
        timings = stage_timings(stage_dir)
        blocks: list[Any] = [
            Paragraph(
                f"{len(r.results)} checks: {r.count('error')} error(s), {r.count('warning')} warning(s), "
                f"{r.count('info')} note(s). The audit reads inputs only; it never scores a model on test."
            )
        ]
        for f in r.findings:
            if f["severity"] in ("error", "warning"):
                blocks.append(Callout(f"[{f['check']}] {f['message']}", f["severity"]))
        for name, res in r.results.items():
            sec: list[Any] = [
                Paragraph(
                    f"status: {res['status']} ({timings.get(f'check {name}', 0.0):.1f}s)"
                    + (f"; {res['note']}" if res.get("note") else "")
                )
            ]
            sec += [
                Callout(f["message"], "info")
                for f in r.findings
                if f["check"] == name and f["severity"] == "info"
            ]
            scalars = {
                k: v for k, v in res.get("metrics", {}).items() if isinstance(v, int | float | str | bool)
            }
            if scalars:
                sec.append(KeyValues(scalars))
            sec += [
                Figure(f"figures/{fname}", cap)
                for fname, cap in res.get("figures", {}).items()
                if (Path(stage_dir) / "figures" / fname).is_file()
            ]
            for t in res.get("tables", []):
                if t in r.tables and len(r.tables[t]):
                    sec.append(Table(r.tables[t].head(20).to_dict("records"), title=t, max_rows=20))
            blocks.append(Section(name, sec))
        if r.fixes:
            blocks.append(
                Section(
                    "fixes",
                    [KeyValues({k: v for k, v in f.items() if k != "dropped_indices"}) for f in r.fixes],
                )
            )
        return blocks
