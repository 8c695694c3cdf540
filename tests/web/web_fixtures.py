"""Run directories with a tiny exported model (the real export stage on export_fixtures' digits CNN and
table MLP), a static HTTP server for an export-web folder, and the npm tarball (or a skip reason)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "export"))
sys.path.insert(0, str(HERE.parent / "labeling"))

FAST = {"latency": {"repeats": 5, "warmup": 1}, "bootstrap": 30, "calibration_samples": 128}


def runtime_missing() -> str | None:
    """Why the onnxruntime-web tarball is not available (downloaded once into the cache), or None."""
    from closedloop.web import runtime

    try:
        runtime.tarball()
    except runtime.RuntimeFilesError as exc:
        return f"onnxruntime-web {runtime.VERSION} npm tarball unavailable: {exc}"
    return None


def exported_run(root: Path, kind: str, acceptance: dict[str, float] | None = None) -> Path:
    """``root/<run id>`` holding a finished export stage (the layout closedloop run writes)."""
    from export_fixtures import digits_bundle, digits_model, table_bundle, table_model, task_for

    from closedloop.core.stage import RunContext
    from closedloop.stages.export import ExportModel

    if kind == "images":
        bundle = digits_bundle(binary=False)
        model = digits_model(bundle, steps=120)
        task = task_for(
            bundle,
            acceptance=acceptance or {"acc": 0.3},
            intended_use="Reading 8x8 digits (a test).",
            known_misuse=["Handwriting of a different size", "Anything that is not a digit"],
        )
    else:
        bundle = table_bundle()
        model = table_model(bundle)
        task = task_for(
            bundle, acceptance=acceptance or {"auc": 0.6}, intended_use="A synthetic table (a test)."
        )
    run = root / f"20260101-000000-{kind}"
    stage_dir = root / f"work-{kind}"
    ctx = RunContext(stage_name="export", stage_dir=stage_dir, seed=0)
    out = ExportModel(**FAST).execute({"data": bundle, "task": task, "model": model}, ctx)
    export = run / "stages" / "05_export" / "artifacts" / "exported"
    export.mkdir(parents=True)
    out.exported.save(export)
    for f in out.exported.directory.iterdir():
        if f.is_file() and not (export / f.name).exists():
            shutil.copy2(f, export / f.name)
    manifest = {
        "run_id": run.name,
        "name": f"tiny-{kind}",
        "status": "ok",
        "stages": [{"name": "export", "kind": "export", "status": "ok", "error": None}],
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".js": "text/javascript",
    }

    def log_message(self, *args: object) -> None:  # quiet
        pass


@contextmanager
def static_server(folder: Path) -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    """``folder`` served on 127.0.0.1 (a random port), as any static host would."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server
    finally:
        server.shutdown()
        server.server_close()
