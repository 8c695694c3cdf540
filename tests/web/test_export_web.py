"""closedloop export-web: the page runs the exported model in headless Chromium and agrees with Python.

The run directories hold the real export stage's output for tiny models (export_fixtures: a digits CNN
with fp32 and int8 variants, a table MLP); the runtime is the pinned onnxruntime-web npm tarball,
downloaded once into the cache (skipped, with the reason, when it cannot be had)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from web_fixtures import (  # noqa: E402
    chrome_with,
    exported_run,
    open_page,
    page_rows,
    runtime_missing,
    static_server,
    upload,
)

from closedloop.artifacts.webpage import WebSpec  # noqa: E402
from closedloop.cli import main  # noqa: E402
from closedloop.serving import Predictor  # noqa: E402
from closedloop.serving.images import decode_image  # noqa: E402
from closedloop.serving.model import find_export_dir  # noqa: E402
from closedloop.web.build import export_web  # noqa: E402
from closedloop.web.reference import SpecPredictor  # noqa: E402

TOL = 1e-5
pytestmark = pytest.mark.slow  # the real export stage on two tiny models, then Chromium


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("web_runs")
    return {"images": exported_run(root, "images"), "table": exported_run(root, "table")}


@pytest.fixture(scope="module")
def runtime_ok() -> None:
    reason = runtime_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    from labeling_browser import missing

    reason = missing()
    if reason:
        pytest.skip(reason)
    driver = chrome_with()
    yield driver
    driver.quit()


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _export_error(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    assert main(["export-web", *map(str, args)]) == 2
    return capsys.readouterr().err


def test_export_web_refuses_what_it_cannot_ship(runs, tmp_path: Path, capsys) -> None:
    """Refused before anything is downloaded or written: failed export, not blessed, no export, bad variant."""
    failed = _copy_run(runs["images"], tmp_path / "failed")
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["stages"][0].update(status="failed", error="ValueError: int8 calibration ran out of memory")
    (failed / "manifest.json").write_text(json.dumps(manifest))
    err = _export_error(capsys, failed, tmp_path / "w1")
    assert "export stage 'export' is failed" in err and "int8 calibration ran out of memory" in err

    unblessed = _copy_run(runs["images"], tmp_path / "unblessed")
    mpath = find_export_dir(unblessed) / "measurements.json"
    m = json.loads(mpath.read_text())
    m.update(blessed=False, checks_text=["validation acc 0.2 >= 0.9: FAIL"])
    m["variants"]["int8"].update(accepted=False, reason="int8 AUC 0.05 below fp32")
    mpath.write_text(json.dumps(m))
    err = _export_error(capsys, unblessed, tmp_path / "w2")
    assert "not blessed" in err and "validation acc 0.2 >= 0.9: FAIL" in err and "--allow-unblessed" in err
    err = _export_error(capsys, unblessed, tmp_path / "w2", "--allow-unblessed", "--variant", "int8")
    assert "--variant 'int8' was rejected" in err and "int8 AUC 0.05 below fp32" in err
    err = _export_error(capsys, runs["images"], tmp_path / "w3", "--variant", "student")
    assert "--variant 'student'" in err and "['fp32', 'int8']" in err

    no_export = tmp_path / "no_export"
    (no_export / "stages" / "01_task").mkdir(parents=True)
    assert "no exported model" in _export_error(capsys, no_export, tmp_path / "w4")
    assert "no such run directory" in _export_error(capsys, tmp_path / "nope", tmp_path / "w5")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("mine")
    assert "not an export-web folder" in _export_error(capsys, runs["images"], busy)
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists()


@pytest.fixture(scope="module")
def folders(runs, runtime_ok, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("web_out")
    out = {}
    for variant in ("fp32", "int8"):
        out[variant] = root / variant
        assert main(["export-web", str(runs["images"]), str(out[variant]), "--variant", variant]) == 0
    for variant in ("fp32", "int8"):  # int8 here is dynamic quantization (MatMulInteger)
        out[f"table_{variant}"] = export_web(
            runs["table"], root / f"table_{variant}", variant=variant
        ).out_dir
    return out


def test_the_folder_is_self_contained_and_its_spec_is_the_predictors(runs, folders) -> None:
    from closedloop.core.io import sha256_file
    from closedloop.web import runtime

    export_dir = find_export_dir(runs["images"])
    X = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 1)).astype(np.float32)
    for variant in ("fp32", "int8"):
        folder = folders[variant]
        spec = WebSpec.load(folder)
        p = Predictor(export_dir, variant=variant)
        assert spec.model.variant == variant and spec.model.sha256 == sha256_file(folder / "model.onnx")
        assert (spec.temperature, spec.threshold, spec.class_names) == (
            p.temperature,
            p.threshold,
            p.label_names,
        )
        assert spec.input.shape == [8, 8, 1] and spec.input.channels == 1 and spec.input.kind == "images"
        assert spec.card.intended_use == "Reading 8x8 digits (a test)." and len(spec.card.known_misuse) == 2
        assert spec.source.blessed and spec.runtime.version == runtime.VERSION
        for name, digest in spec.runtime.files.items():
            assert sha256_file(folder / "runtime" / name) == digest
        ref = SpecPredictor(folder)
        np.testing.assert_allclose(ref.proba(X), p.predict_proba(X), rtol=0, atol=1e-12)
        assert ref.labels(ref.proba(X)) == p.predict_labels(X)
        # nothing is fetched from elsewhere when the page runs (the one URL is advice in a message)
        for name in ("index.html", "app.js"):
            urls = set(re.findall(r"https?://[^\s\"'`)]+", (folder / name).read_text()))
            assert urls <= {"http://127.0.0.1:8000/"}, (name, urls)
    table = WebSpec.load(folders["table_int8"])
    assert table.input.kind == "table" and table.input.feature_names == [f"f{i}" for i in range(6)]


def _digit_files(tmp: Path, n: int) -> tuple[list[Path], np.ndarray]:
    from export_fixtures import digits_bundle
    from PIL import Image

    X = digits_bundle().val.X[:n]  # parity, not a quality figure: any rows will do
    paths = []
    for i, img in enumerate(X):
        paths.append(tmp / f"digit{i:02d}.png")
        Image.fromarray(img[..., 0], "L").save(paths[-1])
    return paths, X


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_the_page_equals_python_on_images(folders, browser, variant: str, tmp_path: Path) -> None:
    from PIL import Image

    paths, _ = _digit_files(tmp_path, 24)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (13, 21, 3), dtype=np.uint8), "RGB").save(tmp_path / "wide_rgb.png")
    Image.fromarray(rng.integers(0, 256, (5, 6), dtype=np.uint8), "L").save(tmp_path / "small.png")
    smooth = np.kron(rng.integers(0, 256, (7, 7, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    Image.fromarray(smooth, "RGB").save(tmp_path / "photo.jpg", quality=90)  # 4:2:0 chroma, 28x28
    (tmp_path / "notes.txt").write_text("not a picture")
    files = [
        *paths,
        tmp_path / "wide_rgb.png",
        tmp_path / "small.png",
        tmp_path / "photo.jpg",
        tmp_path / "notes.txt",
    ]
    ref = SpecPredictor(folders[variant])
    with static_server(folders[variant]) as (url, server):
        assert open_page(browser, url) == "ready"
        assert "Reading 8x8 digits (a test)." in browser.find_element("id", "card").text
        rows = upload(browser, files)
        # offline once loaded: the host goes away, the page keeps predicting
        server.shutdown()
        server.server_close()
        again = upload(browser, paths[:2])
    assert [r["name"] for r in rows] == [p.name for p in files]
    images = [p for p in files if p.suffix in (".png", ".jpg")]
    x = np.stack([decode_image(p.read_bytes(), p.name, (8, 8, 1)) for p in images])  # as the server converts
    want = ref.proba(x)
    got = np.array([r["proba"] for r in rows[: len(images)]])
    assert np.abs(got - want).max() <= TOL
    assert [r["label"] for r in rows[: len(images)]] == ref.labels(want)
    assert all(r["ms"] > 0 or r["ms"] == 0 for r in rows[: len(images)])
    assert "resized from 21x13 to 8x8" in rows[len(paths)]["text"]
    bad = rows[-1]
    assert (
        bad["status"] == "refused"
        and 'file "notes.txt"' in bad["reason"]
        and "not a readable image" in bad["reason"]
    )
    assert all(r["status"] == "ok" for r in again), again
    assert np.abs(np.array([r["proba"] for r in again]) - want[:2]).max() <= TOL


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_the_page_equals_python_on_a_table(folders, browser, variant: str) -> None:
    from export_fixtures import table_bundle

    F = table_bundle().val.features()[:20]
    lines = [",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in F]
    lines.append("1,2,3")
    lines.append("1,2,three,4,5,6")
    ref = SpecPredictor(folders[f"table_{variant}"])
    with static_server(folders[f"table_{variant}"]) as (url, _):
        assert open_page(browser, url) == "ready"
        box = browser.find_element("id", "rows")
        box.clear()
        box.send_keys("\n".join(lines))
        browser.find_element("id", "predict-rows").click()
        from labeling_browser import body_attr, wait_for

        wait_for(lambda: body_attr(browser, "done") == str(len(lines)), 60, "the table predictions")
        rows = page_rows(browser)
    want = ref.proba(F.astype(np.float32))
    assert np.isnan(F).any()  # missing values travel as NaN and the graph imputes them
    assert np.abs(np.array([r["proba"] for r in rows[:20]]) - want).max() <= TOL
    assert [r["label"] for r in rows[:20]] == ref.labels(want)
    assert rows[20]["reason"] == "line 21: 3 values, expected 6 (f0, f1, f2, f3, f4, f5)"
    assert rows[21]["reason"] == 'line 22, f2: "three" is not a number'


def test_a_browser_without_webassembly_gets_a_clear_message(folders) -> None:
    from labeling_browser import missing

    if missing():
        pytest.skip(missing())
    driver = chrome_with()
    try:
        # a browser without WebAssembly (switched off by policy, or too old): the global is gone before any script runs
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": "delete globalThis.WebAssembly;"}
        )
        with static_server(folders["fp32"]) as (url, _):
            assert open_page(driver, url) == "nowasm"
            assert "no WebAssembly" in driver.find_element("id", "message").text
    finally:
        driver.quit()


def test_a_page_opened_as_a_file_says_to_serve_it(folders, browser) -> None:
    assert open_page(browser, (folders["fp32"] / "index.html").as_uri()) == "error"
    assert "Open this page over HTTP" in browser.find_element("id", "message").text


def test_closedloop_serve_serves_the_page_at_app(runs, folders, browser, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
    from serve_helpers import ServerProcess

    from closedloop.core.errors import ClosedLoopError
    from closedloop.serving.app import create_app

    with pytest.raises(ClosedLoopError, match="is not one of the models"):
        create_app(runs["images"], app_dir=str(folders["table_fp32"]))
    server = ServerProcess([str(runs["images"]), "--app", str(folders["int8"])], tmp_path)
    try:
        server.wait_ready()
        import httpx

        wasm = httpx.head(f"{server.url}/app/runtime/ort-wasm-simd-threaded.wasm")
        assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
        assert httpx.get(f"{server.url}/app", follow_redirects=False).headers["location"] == "/app/"
        paths, _ = _digit_files(tmp_path, 3)
        assert open_page(browser, f"{server.url}/app") == "ready"
        rows = upload(browser, paths)
    finally:
        server.stop()
    x = np.stack([decode_image(p.read_bytes(), p.name, (8, 8, 1)) for p in paths])
    assert np.abs(np.array([r["proba"] for r in rows]) - SpecPredictor(folders["int8"]).proba(x)).max() <= TOL
