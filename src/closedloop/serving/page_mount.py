"""``closedloop serve RUN_DIR --app WEB_DIR``: the export-web folder served at ``/app/``, next to the API.

The folder is checked at start: it must be an export-web folder whose model is one of the files the
served run exported (a page built from another run would disagree with the API it sits next to).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from closedloop.artifacts.webpage import WebSpec
from closedloop.core.errors import ClosedLoopError
from closedloop.core.io import sha256_file
from closedloop.serving.model import find_export_dir

# Browsers load the runtime's .mjs only as JavaScript and stream-compile .wasm only as application/wasm;
# some systems' mime tables know neither.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")


def check_page(app_dir: str | Path, run_dir: str | Path) -> WebSpec:
    """The folder's spec, or a one-line reason it cannot be served next to ``run_dir``'s model."""
    app_dir = Path(app_dir)
    if not app_dir.is_dir():
        raise ClosedLoopError(
            f"--app {app_dir}: no such folder (make it with closedloop export-web RUN_DIR {app_dir})"
        )
    spec = WebSpec.load(app_dir)
    missing = [
        n
        for n in ("index.html", "app.js", spec.model.file, *(f"runtime/{f}" for f in spec.runtime.files))
        if not (app_dir / n).is_file()
    ]
    if missing:
        raise ClosedLoopError(f"--app {app_dir}: incomplete export-web folder, missing {missing}")
    export_dir = find_export_dir(Path(run_dir))
    hashes = {sha256_file(p) for p in export_dir.glob("*.onnx")}
    if spec.model.sha256 not in hashes:
        raise ClosedLoopError(
            f"--app {app_dir}: its model ({spec.model.variant}, from {spec.source.run_dir}) is not one of the "
            f"models {run_dir} exported; rebuild it: closedloop export-web {run_dir} {app_dir}"
        )
    return spec


def mount_page(app: Any, app_dir: str | Path, run_dir: str | Path) -> None:
    """Serve ``app_dir`` at ``/app/`` on the FastAPI ``app`` (``/app`` redirects there)."""
    from fastapi.responses import RedirectResponse
    from starlette.staticfiles import StaticFiles

    check_page(app_dir, run_dir)

    @app.get("/app", include_in_schema=False)
    async def app_root() -> Any:
        return RedirectResponse("/app/")

    app.mount("/app", StaticFiles(directory=str(app_dir), html=True), name="app")
