"""A real ``closedloop serve`` process (torch blocked from importing) and real clients: tritonclient's HTTP
client, httpx under concurrency, SIGTERM mid-load, refusals to start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from serve_fixtures import images
from serve_helpers import BLOCK_TORCH, SRC  # noqa: I001

from closedloop.serving import Predictor

NAME = "shapes"
# uvicorn drains the requests in flight on SIGTERM, then re-raises the signal: a graceful stop ends with -15
STOPPED = (0, -signal.SIGTERM)


def log_records(log_dir: Path) -> list[dict]:
    out = []
    for f in sorted(log_dir.glob("requests-*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_against_a_torch_free_server(runs, serve, tmp_path: Path, binary: bool) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    server = serve([runs["champion"], "--log-dir", tmp_path / "log"])
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    meta = client.get_model_metadata(NAME)
    assert meta["inputs"][0]["shape"] == [-1, 8, 8, 1]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]

    X = images(seed=11, n=32)[0].astype(np.float32)
    inp = httpclient.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("proba", "label")]
    res = client.infer(NAME, [inp], outputs=outputs, request_id="triton-1")
    default = client.infer(NAME, [inp])  # no outputs named: the client asks for binary outputs
    pred = Predictor(next(runs["champion"].glob("stages/*/artifacts/exported")))
    np.testing.assert_allclose(res.as_numpy("proba"), pred.predict_proba(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(default.as_numpy("proba"), pred.predict_proba(X), rtol=0, atol=1e-12)
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in res.as_numpy("label")]
    assert labels == pred.predict_labels(X)
    assert res.get_response()["id"] == "triton-1"

    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.infer("other", [inp])
    bad = httpclient.InferInput("x", [2, 8, 8], "FP32")
    bad.set_data_from_numpy(X[:2, :, :, 0], binary_data=binary)
    with pytest.raises(InferenceServerException, match=r"shape \[2, 8, 8\] does not match"):
        client.infer(NAME, [bad])
    client.close()
    assert server.stop() in STOPPED
    recs = log_records(tmp_path / "log")
    assert [r["request_id"] for r in recs][0] == "triton-1" and len(recs) == 2
    assert "torch is blocked" not in server.log.read_text()


def _cli(
    args: list[str], module: str = "closedloop.serving", block_torch: bool = True
) -> subprocess.CompletedProcess:
    code = (
        (BLOCK_TORCH if block_torch else "")
        + f"import runpy, sys\nsys.argv = ['closedloop', *{args!r}]\nrunpy.run_module({module!r}, run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    "case,message",
    [
        ("no_export", "no exported model"),
        ("corrupt", "cannot load the ONNX model"),
        ("shadow_schema", "input schema differs"),
        ("missing", "no such run directory"),
        ("log_dir_is_a_file", "this is an existing file, not a folder"),
        ("log_dir_is_a_file_workers", "this is an existing file, not a folder"),
    ],
)
def test_serve_refuses_to_start_with_a_one_screen_message(
    runs, tmp_path: Path, case: str, message: str
) -> None:
    args = {
        "no_export": [str(runs["no_export"])],
        "corrupt": [str(runs["corrupt"])],
        "shadow_schema": [str(runs["champion"]), "--shadow", str(runs["other_schema"])],
        "missing": [str(tmp_path / "nothing")],
        "log_dir_is_a_file": [str(runs["champion"]), "--log-dir", str(tmp_path / "a-file")],
        "log_dir_is_a_file_workers": [
            *(str(runs["champion"]), "--log-dir", str(tmp_path / "a-file"), "--workers", "2")
        ],
    }[case]
    (tmp_path / "a-file").write_text("not a folder")
    r = _cli(["serve", *args, "--port", "1"])
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 5


@pytest.mark.slow  # imports torch and every stage twice
def test_main_cli_has_serve_and_compare_live(runs) -> None:
    # The main CLI also loads the training commands (which import torch); the torch-free entry point
    # is ``python -m closedloop.serving``, tested above.
    r = _cli(["serve", str(runs["corrupt"]), "--port", "1"], module="closedloop", block_torch=False)
    assert r.returncode == 2 and "cannot load the ONNX model" in r.stderr and "Traceback" not in r.stderr
    h = _cli(["compare-live", "--help"], module="closedloop", block_torch=False)
    assert "compare-live" in h.stdout + h.stderr


def test_sigterm_mid_load_loses_no_acknowledged_request(runs, serve, tmp_path: Path) -> None:
    import httpx

    log = tmp_path / "log"
    server = serve([runs["champion"], "--log-dir", log, "--shadow", runs["challenger"]])
    X = images(seed=3, n=16)[0]
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    body = {
        "inputs": [{"name": "x", "shape": [4, 8, 8, 1], "datatype": "UINT8", "data": X[:4].ravel().tolist()}]
    }

    def load(worker: int) -> None:
        with httpx.Client(timeout=10) as c:
            for i in range(400):  # bounded even if SIGTERM never came
                if stop.is_set():
                    return
                rid = f"w{worker}-{i}"
                try:
                    res = c.post(f"{server.url}/v2/models/{NAME}/infer", json={**body, "id": rid})
                except httpx.HTTPError:
                    return
                if res.status_code == 200:
                    with lock:
                        acked.append(rid)
                        n = len(acked)
                    if n == 60:
                        server.proc.send_signal(signal.SIGTERM)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    assert server.proc.wait(timeout=60) in STOPPED
    champion = {r["request_id"] for r in log_records(log) if r["route"] == "champion"}
    assert len(acked) >= 60
    assert set(acked) <= champion  # every acknowledged request is in the log


def test_promotion_under_concurrent_requests_drops_nothing(runs, serve, tmp_path: Path) -> None:
    import httpx

    server = serve([runs["champion"], "--shadow", runs["challenger"], "--log-dir", tmp_path / "log"])
    X = images(seed=4, n=8)[0]
    body = {
        "inputs": [{"name": "x", "shape": [2, 8, 8, 1], "datatype": "UINT8", "data": X[:2].ravel().tolist()}]
    }
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def load() -> None:
        with httpx.Client(timeout=20) as c:
            for _ in range(40):
                res = c.post(f"{server.url}/v2/models/{NAME}/infer", json=body)
                with lock:
                    results.append((res.status_code, res.json().get("model_version", res.text)))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    swaps = []
    with httpx.Client(timeout=20) as admin:
        for i in range(6):
            swaps.append(
                admin.post(f"{server.url}/admin/{'promote' if i % 2 == 0 else 'rollback'}").status_code
            )
    for t in threads:
        t.join(timeout=120)
    assert swaps == [200] * 6
    assert len(results) == 160 and {s for s, _ in results} == {200}
    assert {v for _, v in results} <= {"20260101-000000-champion", "20260102-000000-challenger"}
    with httpx.Client() as c:
        assert (
            c.get(f"{server.url}/admin/routing").json()["champion"]["version"] == "20260101-000000-champion"
        )


@pytest.mark.slow
def test_two_workers_share_one_port_metrics_and_log(runs, serve, tmp_path: Path) -> None:
    import httpx

    log = tmp_path / "log"
    server = serve([runs["champion"], "--workers", "2", "--log-dir", log])
    X = images(seed=5, n=4)[0]
    body = {
        "inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "UINT8", "data": X[:1].ravel().tolist()}]
    }
    with httpx.Client(timeout=20) as c:
        codes = [c.post(f"{server.url}/v2/models/{NAME}/infer", json=body).status_code for _ in range(40)]
        metrics = c.get(f"{server.url}/metrics").text
        promote = c.post(f"{server.url}/admin/promote")
    assert codes == [200] * 40
    assert 'closedloop_requests_total{endpoint="infer_latest",route="champion",status="200"} 40.0' in metrics
    assert promote.status_code == 409 and "2 workers" in promote.json()["error"]
    assert server.stop() in STOPPED
    assert len(log_records(log)) == 40


def test_a_killed_server_keeps_every_acknowledged_record(runs, serve, tmp_path: Path) -> None:
    import httpx

    log = tmp_path / "log"
    server = serve([runs["champion"], "--log-dir", log])
    X = images(seed=6, n=4)[0]
    body = {
        "inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "UINT8", "data": X[:1].ravel().tolist()}]
    }
    with httpx.Client(timeout=20) as c:
        ids = [
            c.post(f"{server.url}/v2/models/{NAME}/infer", json={**body, "id": f"k{i}"}).json()["id"]
            for i in range(25)
        ]
    server.proc.kill()  # SIGKILL: no shutdown code runs at all
    server.proc.wait(timeout=30)
    assert [r["request_id"] for r in log_records(log)] == ids
