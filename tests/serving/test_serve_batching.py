"""Dynamic batching (``--max-batch-size``, ``--max-queue-delay-ms``) in a real server driven by httpx:
each request its own outputs and record, bad requests refused alone, a client leaving while queued
never logged, and the options refused when the model or the task cannot take them."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serve_fixtures import images, write_task
from test_serve_server import _cli, log_records

from closedloop.serving import Predictor

NAME = "shapes"


def oip(x: np.ndarray, rid: str, datatype: str = "UINT8") -> dict:
    return {
        "id": rid,
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}],
    }


def metric(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_a_batch_answers_each_request_alone_and_bad_ones_never_fail_their_mates(
    runs, serve, tmp_path: Path
) -> None:
    import httpx

    log = tmp_path / "log"
    server = serve(
        [runs["champion"], "--log-dir", log, "--max-batch-size", "8", "--max-queue-delay-ms", "200"]
    )
    X = images(seed=21, n=32)[0]
    good = {f"g{i}": oip(X[i : i + 1 + i % 2], f"g{i}") for i in range(6)}  # 1 or 2 inputs each
    good["f32"] = oip(X[20:21].astype(np.float32), "f32", "FP32")  # another datatype, same batch
    bad = {
        "shape": oip(X[:1, :4], "bad-shape"),
        "dtype": oip(X[:1] > 0, "bad-dtype", "BOOL"),
        "nan": oip(np.full((1, 8, 8, 1), np.nan, np.float32), "bad-nan", "FP32"),
    }
    everything = list(good.items()) + list(bad.items())

    def post(item: tuple[str, dict]) -> tuple[str, httpx.Response]:
        with httpx.Client(timeout=30) as c:
            body = json.dumps(item[1]).encode()  # json.dumps writes NaN, as a careless client would
            return item[0], c.post(f"{server.url}/v2/models/{NAME}/infer", content=body)

    with ThreadPoolExecutor(len(everything)) as pool:
        answers = dict(pool.map(post, everything))
    with httpx.Client(timeout=30) as c:
        metrics = c.get(f"{server.url}/metrics").text

    pred = Predictor(next(runs["champion"].glob("stages/*/artifacts/exported")))
    for key, body in good.items():
        res = answers[key]
        assert res.status_code == 200, res.text
        x = np.array(body["inputs"][0]["data"]).reshape(body["inputs"][0]["shape"])
        proba = np.array(res.json()["outputs"][0]["data"]).reshape(len(x), -1)
        np.testing.assert_allclose(proba, pred.predict_proba(x), rtol=0, atol=1e-6)
        assert res.json()["id"] == key
    assert answers["shape"].status_code == 400 and "does not match" in answers["shape"].json()["error"]
    assert answers["dtype"].status_code == 400 and "BOOL" in answers["dtype"].json()["error"]
    assert answers["nan"].status_code == 400 and "NaN" in answers["nan"].json()["error"]

    calls, inputs = (
        metric(metrics, "closedloop_batch_size_count"),
        metric(metrics, "closedloop_batch_size_sum"),
    )
    n_inputs = sum(body["inputs"][0]["shape"][0] for body in good.values())
    assert inputs == n_inputs and calls < len(good)  # some requests shared a model call
    server.stop()
    recs = {r["request_id"]: r for r in log_records(log)}
    assert sorted(recs) == sorted(good)  # one record per answered request, none for the refused ones
    for key, body in good.items():
        assert recs[key]["inputs"]["shape"] == body["inputs"][0]["shape"]
        assert len(recs[key]["proba"]) == body["inputs"][0]["shape"][0]


def test_a_client_leaving_while_queued_gets_no_record(runs, serve, tmp_path: Path) -> None:
    import httpx

    log = tmp_path / "log"
    # a long queue delay: a lone request waits 1.5 s for batch-mates, its client gives up after 0.3 s
    server = serve(
        [runs["champion"], "--log-dir", log, "--max-batch-size", "64", "--max-queue-delay-ms", "1500"]
    )
    X = images(seed=22, n=4)[0]
    with httpx.Client(timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        c.post(f"{server.url}/v2/models/{NAME}/infer", json=oip(X[:1], "left"))
    time.sleep(1.8)  # past its batch's deadline
    with httpx.Client(timeout=60) as c:  # its own batch waits 1.5 s; a busy CI machine adds more
        stayed = c.post(f"{server.url}/v2/models/{NAME}/infer", json=oip(X[1:2], "stayed"))
        metrics = c.get(f"{server.url}/metrics").text
    assert stayed.status_code == 200
    assert metric(metrics, "closedloop_batch_abandoned_total") == 1.0
    server.stop()
    assert [r["request_id"] for r in log_records(log)] == ["stayed"]


def test_a_failing_batch_is_scored_request_by_request(runs, tmp_path: Path) -> None:
    from closedloop.serving.batching import Pending
    from closedloop.serving.service import ServeOptions, Service

    service = Service(ServeOptions(run_dir=str(runs["champion"]), log_dir=str(tmp_path), max_batch_size=8))
    model = service.router.current.champion
    real = model.predict

    def predict(x: np.ndarray):  # the model fails on any batch holding input 255 everywhere
        if (x == 255).all(axis=(1, 2, 3)).any():
            raise RuntimeError("poisoned input")
        return real(x)

    object.__setattr__(model, "predict", predict)
    X = images(seed=23, n=4)[0]
    loop = asyncio.new_event_loop()
    batch = [
        Pending(service.router.current, X[:1], "a", loop.create_future()),
        Pending(service.router.current, np.full((1, 8, 8, 1), 255, np.uint8), "poison", loop.create_future()),
        Pending(service.router.current, X[1:3], "b", loop.create_future()),
    ]
    out = service.score_batch(batch)
    loop.close()
    assert [type(o).__name__ for o in out] == ["Scored", "RuntimeError", "Scored"]
    service.close()
    assert [
        json.loads(line)["request_id"] for f in tmp_path.glob("requests-*.jsonl") for line in f.open()
    ] == [
        "a",
        "b",
    ]


def _fixed_batch_run(runs, tmp_path: Path, dim: int) -> Path:
    import onnx

    run = tmp_path / "fixed"
    shutil.copytree(runs["champion"], run)
    path = next(run.glob("stages/*/artifacts/exported")) / "model_fp32.onnx"
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = dim
    onnx.save(model, str(path))
    return run


def _run_with_latency_bound(runs, tmp_path: Path, max_latency_ms: float) -> Path:
    run = tmp_path / "bounded"
    shutil.copytree(runs["champion"], run)
    write_task(run, max_latency_ms=max_latency_ms)
    return run


@pytest.mark.parametrize(
    "case,message",
    [
        ("beyond_batch_dim", "takes batches of at most 4"),
        ("delay_over_budget", "constraints.max_latency_ms 20"),
        ("delay_without_batching", "--max-queue-delay-ms needs --max-batch-size"),
        ("zero_batch", "--max-batch-size"),
    ],
)
def test_batching_options_the_model_or_task_cannot_take_are_refused(
    runs, tmp_path: Path, case: str, message: str
) -> None:
    args = {
        "beyond_batch_dim": [str(_fixed_batch_run(runs, tmp_path, 4)), "--max-batch-size", "8"],
        "delay_over_budget": [
            *(str(_run_with_latency_bound(runs, tmp_path, 20)), "--max-batch-size", "8"),
            *("--max-queue-delay-ms", "25"),
        ],
        "delay_without_batching": [str(runs["champion"]), "--max-queue-delay-ms", "5"],
        "zero_batch": [str(runs["champion"]), "--max-batch-size", "0"],
    }[case]
    r = _cli(["serve", *args, "--port", "1"])
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 5
