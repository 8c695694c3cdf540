"""What a run leaves behind: the manifest's stage records, ``summary.json`` and the notebook result."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedloop.core.artifacts import Artifact
from closedloop.core.errors import ClosedLoopError
from closedloop.core.io import to_json, write_json_atomic
from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.core.rundir import MANIFEST


@dataclass
class StageRecord:
    """One stage's line in the manifest."""

    name: str
    kind: str
    cls: str
    version: str
    fingerprint: str = ""
    status: str = "pending"  # pending | ok | failed | skipped
    seconds: float = 0.0
    cached: bool = False
    dir: str = ""
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "class": self.cls,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
            "dir": self.dir,
            "artifacts": self.artifacts,
            "error": self.error,
            "timings": self.timings,
        }


class RunResult:
    """What a run produced: its directory, summary and artifacts. Renders its report in notebooks."""

    def __init__(self, run_dir: Path, summary: dict[str, Any], outputs: dict[str, Artifact]) -> None:
        self.run_dir = Path(run_dir)
        self.summary = summary
        self._outputs = outputs

    @property
    def ok(self) -> bool:
        return self.summary.get("status") == "ok"

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.html"

    def artifact(self, name: str) -> Artifact:
        """The artifact called ``name`` (e.g. ``"model"``, ``"task"``) produced by this run."""
        if name not in self._outputs:
            raise KeyError(f"no artifact {name!r} in this run; have: {sorted(self._outputs)}")
        return self._outputs[name]

    def __getitem__(self, stage: str) -> dict[str, Any]:
        return self.summary["stages"][stage]

    def __repr__(self) -> str:
        return f"RunResult(status={self.summary.get('status')!r}, run_dir='{self.run_dir}')"

    def _repr_html_(self) -> str:
        import html

        doc = (
            self.report_path.read_text(encoding="utf-8") if self.report_path.is_file() else "<p>no report</p>"
        )
        return (
            f"<p><b>closedloop run</b> {html.escape(str(self.run_dir))}: status <b>{self.summary.get('status')}</b></p>"
            f'<iframe srcdoc="{html.escape(doc, quote=True)}" style="width:100%;height:600px;border:1px solid #ccc"></iframe>'
        )


def write_manifest(
    run_dir: Path, run_id: str, name: str, fp: str, records: list[StageRecord], status: str
) -> None:
    """``manifest.json``: the run's stages with status, fingerprints, artifacts and timings."""
    write_json_atomic(
        run_dir / MANIFEST,
        {
            "run_id": run_id,
            "name": name,
            "pipeline_fingerprint": fp,
            "status": status,
            "stages": [r.to_json() for r in records],
        },
    )


def build_summary(
    pipeline_name: str,
    seed: int,
    run_dir: Path,
    records: list[StageRecord],
    status: str,
    seconds: float,
    test_ledger: TestLedger,
    val_ledger: ValidationLedger,
) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    for r in records:
        arts: dict[str, str] = {}
        for name, info in r.artifacts.items():
            arts[name] = info["path"]
            for key, rel in info.get("files", {}).items():
                arts[key] = f"{info['path']}/{rel}"
        entry = {
            "status": r.status,
            "seconds": round(r.seconds, 3),
            "dir": r.dir,
            "artifacts": arts,
            "cached": r.cached,
        }
        if r.error:
            entry["error"] = r.error
        if r.timings:
            entry["timings"] = r.timings
        for k, v in r.summary.items():
            entry.setdefault(k, v)
        stages[r.name] = entry
    return {
        "name": pipeline_name,
        "status": status,
        "run_dir": str(run_dir),
        "seconds": round(seconds, 3),
        "seed": seed,
        "stages": stages,
        "test_openings": test_ledger.entries(),
        "n_validation_configs": val_ledger.count(),
    }


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ClosedLoopError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def jsonable(obj: Any) -> Any:
    return json.loads(to_json(obj))
