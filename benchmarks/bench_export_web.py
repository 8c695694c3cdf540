"""The model in the browser (issue #24): parity, latency, size and cold start of an export-web folder.

Model: configs/pneumoniamnist.yaml with the train preset ``quick`` (made once, cached under
benchmarks/out/export_web/pneumonia_run; about 10-20 minutes on 2 shared cores). Images: the first 64 of
PneumoniaMNIST's official test split (never trained on), written as PNG files and picked in the page's
file input in headless Chromium (Selenium + Debian's chromium). Python's answer: onnxruntime on the same
files, converted as ``closedloop serve`` converts uploads, one image at a time, one thread.

Prints, for fp32 and int8: max |dp| page vs Python and identical labels; page latency per image
(median of 200, single thread) vs Python onnxruntime, as a ratio measured in one run, interleaved in
rounds of 50; the folder's size; the time to first prediction on a cold load (fresh browser profile:
open the page, pick one image, see its label).

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/bench_export_web.py``
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "export_web"
sys.path.insert(0, str(ROOT / "tests" / "web"))
sys.path.insert(0, str(ROOT / "tests" / "labeling"))
N_IMAGES = 64
ROUNDS, PER_ROUND = 4, 50  # 200 timed runs each, interleaved page / Python


def npz_path() -> Path:
    for cand in (ROOT / ".." / "shared", ROOT / ".." / ".." / "shared", Path("/work/shared")):
        p = (cand / "data" / "medmnist" / "pneumoniamnist.npz").resolve()
        if p.is_file():
            return p
    raise SystemExit("pneumoniamnist.npz not found under ../shared/data/medmnist")


def trained_run() -> Path:
    run = OUT / "pneumonia_run"
    if (run / "summary.json").is_file():
        return run
    cmd = [sys.executable, "-m", "closedloop", "run", str(ROOT / "configs" / "pneumoniamnist.yaml"),
           "--set", f"data.root={npz_path().parent}", "--set", "train.preset=quick",
           "--only", "export", "--out", str(run)]  # fmt: skip
    print("training the model once:", " ".join(cmd), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)  # the run's working directory: a clean clone has none
    subprocess.run(cmd, check=True, cwd=OUT)
    return run


def test_images() -> list[Path]:
    from PIL import Image

    folder = OUT / "images"
    folder.mkdir(parents=True, exist_ok=True)
    z = np.load(npz_path())
    paths = []
    for i, img in enumerate(z["test_images"][:N_IMAGES]):
        paths.append(folder / f"test{i:03d}.png")
        if not paths[-1].is_file():
            Image.fromarray(img, "L").save(paths[-1])
    return paths


def folder_size(folder: Path) -> str:
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    wasm = next(p for p in folder.rglob("*.wasm"))
    gz = len(gzip.compress(wasm.read_bytes(), 6))
    total = sum(files.values())
    return (
        f"{total / 1e6:.2f} MB in {len(files)} files (model.onnx {files['model.onnx'] / 1e3:.1f} kB, "
        f"{wasm.name} {wasm.stat().st_size / 1e6:.2f} MB, {gz / 1e6:.2f} MB gzipped)"
    )


def bench_variant(run: Path, variant: str, images: list[Path]) -> None:
    from labeling_browser import body_attr, wait_for
    from web_fixtures import chrome_with, open_page, static_server, upload

    from closedloop.serving.images import decode_image
    from closedloop.web.build import export_web
    from closedloop.web.reference import SpecPredictor

    built = export_web(run, OUT / f"web_{variant}", variant=variant, allow_unblessed=True)
    spec = built.spec
    ref = SpecPredictor(built.out_dir)
    shape = tuple(spec.input.shape)
    x = np.stack([decode_image(p.read_bytes(), p.name, shape) for p in images]).astype(np.float32)
    want = ref.proba(x)
    with static_server(built.out_dir) as (url, _):
        driver = chrome_with()  # a fresh profile: nothing cached
        try:
            t0 = time.perf_counter()
            assert open_page(driver, url, timeout=300) == "ready", driver.find_element("id", "message").text
            first = upload(driver, images[:1])
            cold = time.perf_counter() - t0
            load_ms = float(body_attr(driver, "loadMs"))
            rows = first + upload(driver, images[1:])
            got = np.array([r["proba"] for r in rows])
            same = sum(r["label"] == lab for r, lab in zip(rows, ref.labels(want), strict=True))
            driver.set_script_timeout(300)
            page_ms: list[float] = []
            py_ms: list[float] = []
            one = x[:1]
            for _ in range(10):
                ref.proba(one)  # warm
            for _ in range(ROUNDS):
                page_ms += driver.execute_async_script(
                    "const done = arguments[arguments.length - 1];"
                    f"window.closedloopPage.bench({PER_ROUND}).then(() => done(window.closedloopPage.benchTimes));"
                )
                for _ in range(PER_ROUND):
                    t = time.perf_counter()
                    ref.proba(one)
                    py_ms.append((time.perf_counter() - t) * 1000)
            wait_for(lambda: body_attr(driver, "state") == "ready", 10, "the page")
        finally:
            driver.quit()
    page_med, py_med = float(np.median(page_ms)), float(np.median(py_ms))
    print(f"[{variant}] blessed: {spec.source.blessed} ({'; '.join(spec.source.checks)})")
    print(
        f"[{variant}] parity on {len(images)} PneumoniaMNIST test images: max |dp| page vs Python onnxruntime "
        f"{np.abs(got - want).max():.3g} (bar 1e-5); identical labels {same}/{len(images)}"
    )
    print(
        f"[{variant}] latency per image, median of {len(page_ms)} (1 thread): page {page_med:.3f} ms, "
        f"Python onnxruntime {py_med:.3f} ms, ratio page/Python {page_med / py_med:.2f} "
        f"(page timer resolution 0.1 ms without cross-origin isolation)"
    )
    print(
        f"[{variant}] cold load to first prediction: {cold:.2f} s (page open -> model ready {load_ms / 1000:.2f} s, "
        "then one image picked and labelled)"
    )
    print(f"[{variant}] folder: {folder_size(built.out_dir)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="an existing run directory (default: train one, cached)")
    args = ap.parse_args()
    load = os.getloadavg()
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores (shared)"
    )
    from labeling_browser import missing

    if missing():
        raise SystemExit(missing())
    run = args.run or trained_run()
    print(f"run: {run.name} (configs/pneumoniamnist.yaml, train preset quick)")
    images = test_images()
    for variant in ("fp32", "int8"):
        bench_variant(run, variant, images)


if __name__ == "__main__":
    main()
