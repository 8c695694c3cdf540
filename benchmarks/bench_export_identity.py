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

from closedloop.core.stage import RunContext
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
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
