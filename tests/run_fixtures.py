"""A run directory written by hand, the way the pipeline commits it: each artifact saved under
``stages/<NN_stage>/artifacts/<port>`` AND listed in ``manifest.json`` (readers find artifacts through
the manifest, by type: ``closedloop.core.run_reader.RunDir``, never by globbing folders)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from closedloop.core.cache import class_path


def save_artifact(run: Path, folder: str, port: str, artifact: Any) -> Path:
    """Save ``artifact`` to ``run/stages/<folder>/artifacts/<port>`` and list it in the manifest
    (``folder`` is ``NN_<stage>``, e.g. ``05_train``); returns the artifact's folder."""
    where = Path(run) / "stages" / folder / "artifacts" / port
    where.mkdir(parents=True, exist_ok=True)
    artifact.save(where)
    record(run, folder, port, class_path(type(artifact)))
    return where


def record(run: Path, folder: str, port: str, type_path: str) -> None:
    """List an artifact folder that is already on disk in ``run/manifest.json``."""
    path = Path(run) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {"status": "ok", "stages": []}
    stage = folder.split("_", 1)[1]
    entry = next((st for st in manifest["stages"] if st["name"] == stage), None)
    if entry is None:
        entry = {"name": stage, "status": "ok", "artifacts": {}}
        manifest["stages"].append(entry)
    entry["artifacts"][port] = {"path": f"stages/{folder}/artifacts/{port}", "type": type_path}
    manifest["stages"].sort(key=lambda st: min(a["path"] for a in st["artifacts"].values()))  # NN_ order
    path.write_text(json.dumps(manifest))
