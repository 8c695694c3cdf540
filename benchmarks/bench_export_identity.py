"""Is the export stage's output unchanged by the export redesign (issue 14)?

Usage: ``python benchmarks/bench_export_identity.py RUN_DIR [OUT_DIR]``

RUN_DIR is a finished run made before the change (``closedloop run configs/quickstart.yaml
--no-cache --out /tmp/exp_before``). The script loads that run's upstream artifacts (data, task,
audit, baseline, model, evaluation), runs today's export stage on them with the run's seed and export
config, and compares with the old export folder: ONNX files (sha256), ``predictor.json`` (bytes),
variant metrics, gate decision, ``measurements.json`` (without the latency / wall-time keys that moved
to the stage's timings), the model card (without its latency column / note) and the montage. Each
line says IDENTICAL or DIFFERENT.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from closedloop.core.stage import RunContext
from closedloop.models.trained import logits_to_proba, raw_array
from closedloop.stages.export import ExportModel
from closedloop.stages.export.latency import latency_from_timings
from closedloop.stages.export.model_card import LATENCY_NOTE

MOVED_KEYS = ("latency_ms", "throughput", "seconds", "seconds_export_quantize_checks")


def _load(type_path: str, directory: Path) -> Any:
    module, _, name = type_path.partition(":")
    return getattr(importlib.import_module(module), name).load(directory)


def upstream_artifacts(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Artifacts of every stage before export, the export stage's config, and its old folder."""
    arts: dict[str, Any] = {}
    export_cfg, old = None, None
    for stage_dir in sorted((run_dir / "stages").iterdir()):
        rec = json.loads((stage_dir / "stage.json").read_text())
        if rec["name"] == "export":
            export_cfg, old = rec["config"], run_dir / rec["artifacts"]["exported"]["path"]
            break
        for name, info in rec["artifacts"].items():
            arts[name] = _load(info["type"], run_dir / info["path"])
    assert export_cfg is not None and old is not None, f"{run_dir} has no finished export stage"
    return arts, export_cfg, old


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def card_without_latency(text: str) -> str:
    """The card's metrics table without the old ``p50 / p95 ms`` column and without the new note."""
    lines = []
    had_column = False
    for line in text.replace(LATENCY_NOTE, "").splitlines():
        if line.startswith("| variant |") and " p50 / p95 ms |" in line:
            line, had_column = line.replace(" p50 / p95 ms |", ""), True
        elif line.startswith("|---") and had_column:
            line = line.replace("---|", "", 1)
        elif line.startswith("| ") and had_column:
            line = re.sub(r" [0-9.na]+ / [0-9.na]+ \|", "", line, count=1)
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _removed_grid_temperature(logits: np.ndarray, y: np.ndarray, problem: str) -> float:
    """The export stage's own temperature fit before issue 14 (41-point grid), kept here only to measure
    what replacing it with the training stage's fit changes (it applied to the distilled student)."""
    best, best_t = np.inf, 1.0
    for t in np.exp(np.linspace(np.log(0.25), np.log(8), 41)):
        p = np.clip(logits_to_proba(logits, problem, t), 1e-7, 1 - 1e-7)
        nll = -np.mean(np.log(p[np.arange(len(p)), np.asarray(y).reshape(-1).astype(int)]))
        if nll < best:
            best, best_t = nll, float(t)
    return best_t


def student_temperature_note(arts: dict[str, Any]) -> str:
    """Not covered by the identity check (quickstart has no student): the two temperature fits compared
    on the teacher's held-out logits, as they are and scaled by 3 (an over-confident model)."""
    from closedloop.stages.train.calibration import fit_temperature
    from closedloop.stages.train.heldout import heldout_split

    model, data = arts["model"], arts["data"]
    held, _, _ = heldout_split(model, data, "export")
    with torch.no_grad():
        logits = model.raw_module().eval()(torch.from_numpy(raw_array(held.X))).numpy()
    y, problem = np.asarray(held.y), model.problem_type
    if problem not in ("binary", "multiclass", "ordinal"):
        return "student temperature: not compared for this problem type"
    pairs = [
        f"logits x{k}: grid {_removed_grid_temperature(logits * k, y, problem):.4f}, "
        f"fit_temperature {fit_temperature(logits * k, y, problem):.4f}"
        for k in (1, 3)
    ]
    return (
        "student temperature (changed on purpose, one temperature fit in the codebase): removed export grid "
        f"vs train's fit_temperature on the teacher's {len(y)} held-out rows: " + "; ".join(pairs)
    )


def main() -> int:
    run_dir = Path(sys.argv[1])
    manifest_seed = json.loads((run_dir / "summary.json").read_text())["seed"]
    arts, cfg, old = upstream_artifacts(run_dir)
    stage = ExportModel(**cfg)
    tmp = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="export_identity_"))
    ctx = RunContext(stage_name="export", stage_dir=tmp, seed=manifest_seed)
    inputs = {p.name: arts.get(p.name) for p in stage.input_ports()}
    new = stage.execute({k: v for k, v in inputs.items() if v is not None}, ctx).exported
    print(
        f"$ python benchmarks/bench_export_identity.py {run_dir}  ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC})"
    )
    print(f"before: {old}")
    print(
        f"after:  {new.directory} (today's export stage on the same upstream artifacts, seed {manifest_seed})"
    )
    results: list[bool] = []

    def say(what: str, same: bool, detail: str = "") -> None:
        results.append(same)
        print(f"{'IDENTICAL' if same else 'DIFFERENT'}  {what}{'  ' + detail if detail else ''}")

    for f in sorted({p.name for p in old.glob("*.onnx")} | {p.name for p in new.directory.glob("*.onnx")}):
        a, b = sha(old / f), sha(new.directory / f)
        say(f"{f} sha256", a == b, a[:16])
    for f in ("predictor.json", "predictor.py", "worst_errors.png"):
        say(f"{f} bytes", sha(old / f) == sha(new.directory / f), sha(old / f)[:16])
    m_old = json.loads((old / "measurements.json").read_text())
    m_new = new.measurements
    say(
        "variant metrics",
        m_old["variants"] == json.loads(json.dumps(m_new["variants"])),
        ", ".join(m_new["variants"]),
    )
    gate = ("shipped", "blessed", "checks")
    say(
        "gate decision",
        all(m_old[k] == m_new[k] for k in gate),
        f"shipped {m_new['shipped']}, blessed {m_new['blessed']}",
    )
    moved = {k: v for k, v in m_old.items() if k not in MOVED_KEYS}
    say(f"measurements.json without {', '.join(MOVED_KEYS)}", moved == json.loads(json.dumps(m_new)))
    card_old = card_without_latency((old / "model_card.md").read_text())
    card_new = card_without_latency(new.model_card)
    say("model card without the latency column", card_old == card_new)
    lat, tput = latency_from_timings(ctx.timings)
    print(
        f"latency now in the stage's timings (not hashed): p95 ms { ({k: round(v['p95'], 3) for k, v in lat.items()}) }"
    )
    print(
        f"old measurements.json latency_ms p95: { ({k: round(v['p95'], 3) for k, v in m_old['latency_ms'].items()}) }"
    )
    print("RESULT:", "IDENTICAL" if all(results) else "DIFFERENT")
    print(student_temperature_note(arts))
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
