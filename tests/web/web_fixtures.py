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

# int8 always accepted: these tiny models test page-vs-Python parity, not quantization quality
FAST = {
    "latency": {"repeats": 5, "warmup": 1},
    "bootstrap": 30,
    "calibration_samples": 128,
    "int8_max_prob_diff": 0.5,
    "tolerance": 1.0,
}


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
    # The table run asks for dynamic int8 (quantize: auto ships fp32 for tables): the page must run its
    # MatMulInteger graph one row at a time, as the predictor does.
    quantize = {"quantize": "dynamic"} if kind != "images" else {}
    out = ExportModel(**FAST, **quantize).execute({"data": bundle, "task": task, "model": model}, ctx)
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
        "stages": [
            {
                "name": "export",
                "kind": "export",
                "status": "ok",
                "error": None,
                # listed as the pipeline lists every artifact: readers find it through the manifest
                "artifacts": {
                    "exported": {
                        "path": "stages/05_export/artifacts/exported",
                        "type": f"{type(out.exported).__module__}:{type(out.exported).__qualname__}",
                    }
                },
            }
        ],
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


def chrome_with(*extra: str):
    """labeling_browser.chrome with extra command-line switches (e.g. WebAssembly switched off)."""
    from labeling_browser import CHROMEDRIVER, CHROMIUM
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", *extra):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def open_page(driver, url: str, timeout: float = 90.0) -> str:
    """Load the page and wait until it is ready (or says why not); returns its state."""
    from labeling_browser import body_attr, wait_for

    driver.get(url)
    wait_for(lambda: body_attr(driver, "state") in ("ready", "error", "nowasm"), timeout, "the page to load")
    return body_attr(driver, "state")


def page_rows(driver) -> list[dict]:
    """What the results table shows, one dict per row (full-precision probabilities from data-proba)."""
    rows = []
    for tr in driver.find_elements("css selector", "#results tbody tr"):
        row = {
            "name": tr.get_attribute("data-file"),
            "status": tr.get_attribute("data-status"),
            "text": tr.text,
        }
        if row["status"] == "ok":
            row["proba"] = json.loads(tr.get_attribute("data-proba"))
            row["label"] = json.loads(tr.get_attribute("data-label"))
            row["ms"] = float(tr.get_attribute("data-ms"))
        else:
            row["reason"] = tr.get_attribute("data-reason")
        rows.append(row)
    return rows


def upload(driver, paths: list[Path], timeout: float = 120.0) -> list[dict]:
    """Pick ``paths`` in the page's file input, as a person would; the rows they produced."""
    from labeling_browser import body_attr, wait_for

    before = int(body_attr(driver, "done") or 0)
    driver.find_element("id", "files").send_keys("\n".join(str(p) for p in paths))
    wait_for(lambda: int(body_attr(driver, "done") or 0) >= before + len(paths), timeout, "the predictions")
    return page_rows(driver)[before:]
