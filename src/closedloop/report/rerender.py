"""Re-write the report of a finished run from its files, without running any stage.

Separate from :mod:`closedloop.report.html` because it rebuilds the pipeline from ``config.yaml``,
and the pipeline itself writes reports through ``html`` (no import cycle).
"""

from __future__ import annotations

from pathlib import Path

from closedloop.report.html import write_report


def rerender(run_dir: str | Path) -> Path:
    """Re-write ``report.html`` (and ``decision.json``) of a finished run from its files (no stage runs)."""
    from closedloop.core.commit import load_outputs as _load_outputs
    from closedloop.core.errors import RunDirError
    from closedloop.core.io import read_json
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.records import StageRecord

    run_dir = Path(run_dir)
    for f in ("config.yaml", "manifest.json", "summary.json"):
        if not (run_dir / f).is_file():
            raise RunDirError(f"{run_dir}: no {f}; it is not a finished closedloop run directory")
    pipeline = Pipeline.from_yaml(run_dir / "config.yaml")
    manifest, summary = read_json(run_dir / "manifest.json"), read_json(run_dir / "summary.json")
    by_name = {r["name"]: r for r in manifest.get("stages", [])}
    records, outputs = [], {}
    for stage in pipeline.stages:
        r = by_name.get(stage.name, {})
        rec = StageRecord(stage.name, r.get("kind", ""), r.get("class", ""), r.get("version", ""))
        rec.status, rec.seconds, rec.cached = (
            r.get("status", "skipped"),
            r.get("seconds", 0.0),
            r.get("cached", False),
        )
        rec.dir, rec.error = r.get("dir", ""), r.get("error")
        records.append(rec)
        if rec.status == "ok":
            loaded = _load_outputs(stage, run_dir / rec.dir)
            for p in stage.output_ports():
                if getattr(loaded, p.name, None) is not None:
                    outputs[p.name] = getattr(loaded, p.name)
    return write_report(run_dir, pipeline, records, outputs, summary)
