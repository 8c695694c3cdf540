"""The stage commit: a stage runs in ``NN_name.tmp/`` and is renamed to ``NN_name/`` only after its
outputs, ``stage.json`` and log are written, so a folder without ``.tmp`` is always complete and a
crashed stage resumes from its checkpoints in the ``.tmp`` folder."""

from __future__ import annotations

import logging
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

from closedloop.core.artifacts import Artifact
from closedloop.core.cache import class_path
from closedloop.core.io import hash_tree, write_json_atomic
from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.core.records import StageRecord
from closedloop.core.stage import RunContext, Stage

log = logging.getLogger("closedloop")


def execute_stage(
    stage: Stage,
    inputs: dict[str, Artifact],
    rec: StageRecord,
    final_dir: Path,
    run_dir: Path,
    seed: int,
    test_ledger: TestLedger,
    val_ledger: ValidationLedger,
    progress: bool,
) -> Any:
    """Run ``stage`` in ``<final_dir>.tmp`` and rename it to ``final_dir`` once its outputs are saved."""
    tmp_dir = final_dir.with_name(final_dir.name + ".tmp")
    marker = tmp_dir / "fingerprint.txt"
    if tmp_dir.exists() and (not marker.is_file() or marker.read_text().strip() != rec.fingerprint):
        shutil.rmtree(tmp_dir)  # a crashed attempt of a different stage config: its checkpoints do not apply
    tmp_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(rec.fingerprint)
    ctx = RunContext(
        stage_name=stage.name,
        stage_dir=tmp_dir,
        seed=seed,
        fingerprint=rec.fingerprint,
        run_dir=run_dir,
        test_ledger=test_ledger,
        validation_ledger=val_ledger,
        progress_enabled=progress,
    )
    handler = logging.FileHandler(tmp_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("closedloop")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        log.info("stage %s: running (%s)", stage.name, type(stage).__qualname__)
        stage_outputs = stage.execute(inputs, ctx)
        rec.artifacts = save_outputs(stage, stage_outputs, tmp_dir)
        rec.timings = dict(ctx.timings)
    except Exception:
        (tmp_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
    write_json_atomic(
        tmp_dir / "stage.json",
        {
            "name": stage.name,
            "class": rec.cls,
            "version": rec.version,
            "fingerprint": rec.fingerprint,
            "config": stage.config.model_dump(mode="json"),
            "artifacts": rec.artifacts,
            "timings": rec.timings,
        },
    )
    marker.unlink()
    os.replace(tmp_dir, final_dir)  # the rename is what makes a stage complete
    return stage_outputs


def save_outputs(stage: Stage, outputs: Any, stage_dir: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for port in stage.output_ports():
        art = getattr(outputs, port.name)
        if art is None:
            continue
        d = stage_dir / "artifacts" / port.name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        art.save(d)
        rel = d.relative_to(stage_dir.parent.parent)  # relative to the run directory
        rel_path = str(rel).replace(stage_dir.name, stage_dir.name.removesuffix(".tmp"), 1)
        records[port.name] = {
            "path": rel_path,
            "type": class_path(type(art)),
            "hash": hash_tree(d),
            "files": art.files(d),
        }
        if (
            str(art.layout_version) != "1"
        ):  # absent means 1: manifests of unversioned artifacts stay as they were
            records[port.name]["layout"] = str(art.layout_version)
    return records


def load_outputs(stage: Stage, stage_dir: Path) -> Any:
    values = {}
    for port in stage.output_ports():
        d = stage_dir / "artifacts" / port.name
        if d.is_dir():
            values[port.name] = port.type.load(d)
    return type(stage).Outputs(**values)
