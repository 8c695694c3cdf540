"""The service in process (FastAPI's test client): protocol, /predict, /feedback, log, routing, bad input."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from closedloop.monitoring.requestlog import LoggedArray
from closedloop.serving import Predictor
from closedloop.serving.app import create_app
from closedloop.serving.model import ServeError
from closedloop.serving.routing import canary_fraction

sys.path.insert(0, str(Path(__file__).parent))
from serve_fixtures import images  # noqa: E402

NAME = "shapes"


def client(run_dir: Path, **kw):
    from fastapi.testclient import TestClient

    return TestClient(create_app(run_dir, **kw))


def oip(x: np.ndarray, datatype: str = "UINT8", name: str = "x", **extra) -> dict:
    return {
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}],
        **extra,
    }


def records(log_dir: Path, kind: str = "requests") -> list[dict]:
    out = []
    for f in sorted(log_dir.glob(f"{kind}-*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines()]
    return out


def proba_of(res_json: dict) -> np.ndarray:
    out = next(o for o in res_json["outputs"] if o["name"] == "proba")
    return np.array(out["data"]).reshape(out["shape"])


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return images(seed=7, n=64)[0]


def test_health_metadata_and_ready_after_warm_up(runs: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    app = create_app(runs["champion"])
    plain = TestClient(app)  # no lifespan yet: loaded, but the warm-up inference has not run
    assert plain.get("/v2/health/live").json() == {"live": True}
    assert plain.get("/v2/health/ready").status_code == 503
    with TestClient(app) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
        assert "binary_tensor_data" in c.get("/v2").json()["extensions"]
        meta = c.get(f"/v2/models/{NAME}").json()
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
        assert meta["outputs"][0] == {"name": "proba", "datatype": "FP64", "shape": [-1, 10]}
        assert meta["versions"] == ["20260101-000000-champion"]
        assert c.get("/docs").status_code == 200


def test_what_start_up_built_is_frozen_before_ready(runs: dict[str, Path]) -> None:
    """The start-up heap (models, framework, routes) is out of the garbage collector's full passes
    before the server reports ready: such a pass over it paused every request in flight for 10-40 ms."""
    import gc

    from fastapi.testclient import TestClient

    gc.unfreeze()  # other tests' servers froze their heaps in this process
    app = create_app(runs["champion"])
    assert gc.get_freeze_count() == 0
    with TestClient(app) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert gc.get_freeze_count() > 1000
        assert c.post(f"/v2/models/{NAME}/infer", json=oip(images(seed=1, n=2)[0])).status_code == 200
    gc.unfreeze()


def test_infer_json_matches_the_predictor_and_is_logged(runs: dict[str, Path], X, tmp_path: Path) -> None:
    pred = Predictor(next(runs["champion"].glob("stages/*/artifacts/exported")))
    with client(runs["champion"], log_dir=str(tmp_path)) as c:
        res = c.post(f"/v2/models/{NAME}/infer", json=oip(X[:16], id="req-1"))
        assert res.status_code == 200, res.text
        body = res.json()
        fl = c.post(f"/v2/models/{NAME}/infer", json=oip(X[:3].astype(np.float32), "FP32"))
    assert body["id"] == "req-1" and body["model_version"] == "20260101-000000-champion"
    np.testing.assert_allclose(proba_of(body), pred.predict_proba(X[:16]), rtol=0, atol=1e-12)
    labels = next(o for o in body["outputs"] if o["name"] == "label")["data"]
    assert labels == pred.predict_labels(X[:16])
    np.testing.assert_allclose(proba_of(fl.json()), pred.predict_proba(X[:3]), atol=1e-12)
    recs = records(tmp_path)
    assert [r["request_id"] for r in recs][0] == "req-1" and len(recs) == 2
    r = recs[0]
    assert (r["route"], r["status"], r["model_name"], r["variant"]) == ("champion", "ok", NAME, "fp32")
    np.testing.assert_array_equal(LoggedArray.model_validate(r["inputs"]).to_array(), X[:16])
    np.testing.assert_allclose(np.array(r["proba"]), pred.predict_proba(X[:16]), atol=1e-12)


def test_input_reduction_none_logs_no_inputs(runs: dict[str, Path], X, tmp_path: Path) -> None:
    with client(runs["champion"], log_dir=str(tmp_path), input_reduction="none") as c:
        assert c.post(f"/v2/models/{NAME}/infer", json=oip(X[:2])).status_code == 200
    assert records(tmp_path)[0]["inputs"] is None


def test_binary_tensor_extension_by_hand(runs: dict[str, Path], X) -> None:
    pred = Predictor(next(runs["champion"].glob("stages/*/artifacts/exported")))
    x = X[:5].astype(np.float32)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "proba", "parameters": {"binary_data": True}}, {"name": "label"}],
        }
    ).encode()
    with client(runs["champion"]) as c:
        res = c.post(
            f"/v2/models/{NAME}/infer",
            content=head + x.tobytes(),
            headers={
                "Inference-Header-Content-Length": str(len(head)),
                "Content-Type": "application/octet-stream",
            },
        )
    assert res.status_code == 200, res.text
    n = int(res.headers["inference-header-content-length"])
    meta = json.loads(res.content[:n])
    proba = np.frombuffer(res.content[n:], dtype="<f8").reshape(meta["outputs"][0]["shape"])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == proba.nbytes
    np.testing.assert_allclose(proba, pred.predict_proba(x), atol=1e-12)
    assert meta["outputs"][1]["data"] == pred.predict_labels(x)


def test_predict_json_and_image_upload(runs: dict[str, Path], X, tmp_path: Path) -> None:
    from PIL import Image

    pred = Predictor(next(runs["binary"].glob("stages/*/artifacts/exported")))
    png = io.BytesIO()
    Image.fromarray(X[0, ..., 0]).save(png, format="PNG")
    big = io.BytesIO()  # an RGB JPEG of another size: converted to gray and resized like training data
    Image.fromarray(np.repeat(np.kron(X[1, ..., 0], np.ones((4, 4), np.uint8))[..., None], 3, axis=2)).save(
        big, format="JPEG", quality=95
    )
    with client(runs["binary"], log_dir=str(tmp_path)) as c:
        res = c.post("/predict", json=X[:4].tolist(), headers={"X-Request-Id": "p-1"})
        up = c.post(
            "/predict",
            files=[
                ("files", ("a.png", png.getvalue(), "image/png")),
                ("files", ("b.jpg", big.getvalue(), "image/jpeg")),
            ],
        )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["request_id"] == "p-1" and body["model_version"] == "20260103-000000-binary"
    p = pred.predict_proba(X[:4])
    for i, row in enumerate(body["predictions"]):
        assert row["label"] == pred.predict_labels(X[:4])[i]
        assert row["probabilities"]["high"] == pytest.approx(p[i, 1], abs=1e-12)
        assert row["decision"]["threshold"] == 0.4 and row["decision"]["positive"] == bool(p[i, 1] >= 0.4)
    assert up.status_code == 200, up.text
    got = up.json()["predictions"]
    assert got[0]["probabilities"]["high"] == pytest.approx(pred.predict_proba(X[:1])[0, 1], abs=1e-12)
    assert len(got) == 2
    assert [r["inputs"]["shape"] for r in records(tmp_path)] == [[4, 8, 8, 1], [2, 8, 8, 1]]


def test_feedback_is_checked_against_the_request_it_names(runs: dict[str, Path], X, tmp_path: Path) -> None:
    with client(runs["binary"], log_dir=str(tmp_path)) as c:
        assert c.post("/v2/models/shapes2/infer", json=oip(X[:3], id="r1")).status_code == 200
        ok = c.post("/feedback", json={"request_id": "r1", "index": 2, "label": "high"})
        unknown = c.post("/feedback", json={"request_id": "r1", "label": "pneumonia"})
        no_id = c.post("/feedback", json={"label": "high"})
        neg = c.post("/feedback", json={"request_id": "r1", "index": -1, "label": "high"})
        typo = c.post("/feedback", json={"request_id": "r2", "label": "high"})
        past = c.post("/feedback", json={"request_id": "r1", "index": 3, "label": "high"})
        far = c.post("/feedback", json={"request_id": "r1", "index": 999, "label": "high"})
    assert ok.status_code == 200 and ok.json()["status"] == "verified"
    assert unknown.status_code == 400 and "unknown class 'pneumonia'" in unknown.json()["error"]
    assert no_id.status_code == 400 and "request_id" in no_id.json()["error"]
    assert neg.status_code == 400 and "index" in neg.json()["error"]
    assert typo.status_code == 404 and "'r2'" in typo.json()["error"] and "refused" in typo.json()["error"]
    for res, i in ((past, 3), (far, 999)):
        assert res.status_code == 400, res.text
        assert f"index {i} is past the inputs of request 'r1'" in res.json()["error"]
        assert "3 input(s)" in res.json()["error"]
    fb = records(tmp_path, "feedback")
    assert [(r["kind"], r["request_id"], r["index"], r["label"]) for r in fb] == [
        ("feedback", "r1", 2, "high")
    ]


def test_feedback_finds_requests_another_worker_or_an_earlier_process_logged(
    runs: dict[str, Path], X, tmp_path: Path
) -> None:
    # an earlier server process (a restart, or another --workers process) answered "old" into the same folder
    with client(runs["binary"], log_dir=str(tmp_path)) as c:
        assert c.post("/v2/models/shapes2/infer", json=oip(X[:2], id="old")).status_code == 200
    shadow_only = {**records(tmp_path)[0], "request_id": "shadowed", "route": "shadow"}
    failed = {**records(tmp_path)[0], "request_id": "failed", "status": "error", "labels": None}
    with open(tmp_path / "requests-other-000000.jsonl", "w") as f:
        f.write(json.dumps(shadow_only) + "\n" + json.dumps(failed) + "\n")
    with client(runs["binary"], log_dir=str(tmp_path)) as c:
        ok = c.post("/feedback", json={"request_id": "old", "index": 1, "label": "low"})
        past = c.post("/feedback", json={"request_id": "old", "index": 2, "label": "low"})
        never = [c.post("/feedback", json={"request_id": r, "label": "low"}) for r in ("shadowed", "failed")]
    assert ok.status_code == 200 and ok.json()["status"] == "verified" and ok.json()["found_in"] == "log"
    assert past.status_code == 400 and "2 input(s)" in past.json()["error"]
    assert [r.status_code for r in never] == [404, 404]  # a shadow or failed record answered no client


def test_feedback_without_log_dir_is_503(runs: dict[str, Path]) -> None:
    with client(runs["binary"]) as c:
        res = c.post("/feedback", json={"request_id": "r1", "label": "high"})
    assert res.status_code == 503 and "--log-dir" in res.json()["error"]


# -- bad input: each answered with its status and a JSON error naming the problem ---------------------
BAD = [
    ("wrong shape", lambda X: oip(X[:2, :4]), 400, "shape [2, 4, 8, 1] does not match"),
    ("no batch axis", lambda X: oip(X[0]), 400, "does not match the model"),
    ("wrong datatype", lambda X: oip(X[:2] > 0, "BOOL"), 400, "datatype BOOL is not accepted"),
    (
        "strings as data",
        lambda X: {"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": ["a"] * 64}]},
        400,
        "not a (nested) list of FP32 numbers",
    ),
    ("unknown datatype", lambda X: oip(X[:1], "FLOAT"), 400, "unknown datatype 'FLOAT'"),
    (
        "two inputs",
        lambda X: {"inputs": oip(X[:1])["inputs"] + oip(X[:1], name="y")["inputs"]},
        400,
        "wrong number of inputs",
    ),
    ("no inputs", lambda X: {"inputs": []}, 400, "wrong number of inputs"),
    ("wrong input name", lambda X: oip(X[:1], name="image"), 400, "unknown input 'image'"),
    (
        "data size",
        lambda X: {"inputs": [{"name": "x", "shape": [2, 8, 8, 1], "datatype": "UINT8", "data": [1] * 64}]},
        400,
        "has 64 elements but shape [2, 8, 8, 1] needs 128",
    ),
    (
        "out of range",
        lambda X: oip(X[:1].astype(np.int64) + 1000, "INT64"),
        400,
        "expected raw pixels in 0..255",
    ),
    (
        "uint8 overflow",
        lambda X: oip(X[:1].astype(np.int64) + 1000, "UINT8"),
        400,
        "do not fit datatype UINT8",
    ),
    ("missing inputs key", lambda X: {"id": "a"}, 400, "inputs: Field required"),
    (
        "unknown output",
        lambda X: {**oip(X[:1]), "outputs": [{"name": "logits"}]},
        400,
        "unknown output 'logits'",
    ),
]


@pytest.mark.parametrize("case,make,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_infer_requests(runs: dict[str, Path], X, case, make, status, message) -> None:
    with client(runs["champion"]) as c:
        res = c.post(f"/v2/models/{NAME}/infer", json=make(X))
    assert res.status_code == status, res.text
    assert message in res.json()["error"]


def test_nan_in_a_float_tensor(runs: dict[str, Path], X) -> None:
    x = X[:2].astype(np.float32)
    x[1, 3, 4, 0] = np.nan
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 8, 8, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        }
    ).encode()
    text = json.dumps(oip(x, "FP32"))  # Python writes NaN as the (non-standard) JSON literal NaN
    with client(runs["champion"]) as c:
        res_bin = c.post(
            f"/v2/models/{NAME}/infer",
            content=head + x.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
        res_json = c.post(
            f"/v2/models/{NAME}/infer", content=text, headers={"Content-Type": "application/json"}
        )
    for res in (res_bin, res_json):
        assert res.status_code == 400, res.text
        assert "NaN or infinite (first at index [1, 3, 4, 0])" in res.json()["error"]


def test_unknown_model_is_404(runs: dict[str, Path], X) -> None:
    with client(runs["champion"]) as c:
        res = c.post("/v2/models/resnet/infer", json=oip(X[:1]))
        meta = c.get("/v2/models/resnet")
        ver = c.post(f"/v2/models/{NAME}/versions/v9/infer", json=oip(X[:1]))
        good_ver = c.post(f"/v2/models/{NAME}/versions/20260101-000000-champion/infer", json=oip(X[:1]))
    assert (
        res.status_code == 404
        and res.json()["error"] == "unknown model 'resnet'; this server serves 'shapes'"
    )
    assert meta.status_code == 404 and "resnet" in meta.json()["error"]
    assert ver.status_code == 404 and "unknown version 'v9'" in ver.json()["error"]
    assert good_ver.status_code == 200


def test_body_over_the_limit_is_413(runs: dict[str, Path], X) -> None:
    with client(runs["champion"], max_body_bytes=2000) as c:
        res = c.post(f"/v2/models/{NAME}/infer", json=oip(X[:16]))
        pred = c.post("/predict", json=X[:16].tolist())
        small = c.post(f"/v2/models/{NAME}/infer", json=oip(X[:1]))
        chunks = [json.dumps(oip(X[:16])).encode()[i : i + 500] for i in range(0, 6000, 500)]
        chunked = c.post(f"/v2/models/{NAME}/infer", content=iter(chunks))  # no Content-Length
    assert "content-length" not in chunked.request.headers
    for r in (res, pred, chunked):
        assert r.status_code == 413 and "over the limit of 2000 bytes" in r.json()["error"]
    assert small.status_code == 200


@pytest.mark.parametrize(
    "content,header,message",
    [
        (b'{"inputs": [', None, "malformed JSON in the body"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"inputs": []}xxxx', "abc", "header 'abc' is not an integer"),
        (b'{"inputs": []}', "999", "header is 999 but the body has 14 bytes"),
        (b'{"inputs": [{"name": "x"xxxx', "20", "malformed JSON in the first 20 bytes"),
    ],
    ids=["truncated json", "not an object", "header not int", "header too long", "header cuts json"],
)
def test_malformed_json_or_binary_header_is_400(runs, content, header, message) -> None:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header
    with client(runs["champion"]) as c:
        res = c.post(f"/v2/models/{NAME}/infer", content=content, headers=headers)
    assert res.status_code == 400, res.text
    assert message in res.json()["error"]


def test_binary_sizes_that_do_not_add_up_are_400(runs: dict[str, Path], X) -> None:
    x = X[:2]

    def body(size: int, extra: bytes = b"") -> tuple[bytes, dict]:
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2, 8, 8, 1],
                        "datatype": "UINT8",
                        "parameters": {"binary_data_size": size},
                    }
                ]
            }
        ).encode()
        return head + x.tobytes() + extra, {"Inference-Header-Content-Length": str(len(head))}

    with client(runs["champion"]) as c:
        short = c.post(f"/v2/models/{NAME}/infer", content=body(100)[0], headers=body(100)[1])
        past = c.post(f"/v2/models/{NAME}/infer", content=body(500)[0], headers=body(500)[1])
        extra = c.post(f"/v2/models/{NAME}/infer", content=body(128, b"zz")[0], headers=body(128, b"zz")[1])
    assert "binary_data_size is 100 bytes but shape [2, 8, 8, 1] of UINT8 needs 128" in short.json()["error"]
    assert "goes past the end of the body" in past.json()["error"]
    assert "2 binary bytes that no input's binary_data_size accounts for" in extra.json()["error"]
    assert {short.status_code, past.status_code, extra.status_code} == {400}


def test_predict_bad_input(runs: dict[str, Path], X) -> None:
    with client(runs["champion"]) as c:
        corrupt = c.post(
            "/predict", files=[("files", ("scan.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"))]
        )
        not_json = c.post("/predict", content=b"{oops", headers={"Content-Type": "application/json"})
        shape = c.post("/predict", json=[[1, 2, 3]])
        empty = c.post("/predict", json=[])
        no_files = c.post("/predict", data={"a": "b"}, files=[])
    assert corrupt.status_code == 400 and "file 'scan.png'" in corrupt.json()["error"]
    assert "not a readable image" in corrupt.json()["error"]
    assert not_json.status_code == 400 and "malformed JSON body" in not_json.json()["error"]
    assert shape.status_code == 400 and "expected [N, 8, 8, 1]" in shape.json()["error"]
    assert empty.status_code == 400 and "non-empty JSON array" in empty.json()["error"]
    assert no_files.status_code == 400


def test_unknown_endpoint_and_method_are_json(runs: dict[str, Path]) -> None:
    with client(runs["champion"]) as c:
        assert c.get("/v3/nothing").json() == {"error": "no endpoint GET /v3/nothing"}
        res = c.get(f"/v2/models/{NAME}/infer")
    assert res.status_code == 405 and "not allowed" in res.json()["error"]


# -- refusing to start ---------------------------------------------------------------------------------
def test_refuses_to_start_on_a_bad_run_dir(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="no exported model"):
        create_app(runs["no_export"])
    with pytest.raises(ServeError, match="cannot load the ONNX model"):
        create_app(runs["corrupt"])
    with pytest.raises(ServeError, match="no such run directory"):
        create_app(tmp_path / "missing")
    with pytest.raises(ServeError, match="variant 'int8' not in"):
        create_app(runs["champion"], variant="int8")


@pytest.mark.parametrize("role", ["shadow", "canary"])
def test_challenger_with_another_input_schema_is_refused(runs: dict[str, Path], role: str) -> None:
    with pytest.raises(
        ServeError,
        match=rf"--{role} .*input schema differs.*input shape: champion \[8, 8, 1\], {role} \[16, 16, 1\]",
    ):
        create_app(runs["champion"], **{role: str(runs["other_schema"])})
    with pytest.raises(ServeError, match="class names"):
        create_app(runs["champion"], **{role: str(runs["binary"])})


# -- shadow and canary ----------------------------------------------------------------------------------
def test_shadow_is_logged_never_returned_and_its_failure_is_harmless(
    runs: dict[str, Path], X, tmp_path: Path
) -> None:
    bodies = []
    for i, shadow in enumerate([None, str(runs["challenger"])]):
        log = tmp_path / f"log{i}"
        kw = {"shadow": shadow} if shadow else {}
        with client(runs["champion"], log_dir=str(log), **kw) as c:
            bodies.append(
                [
                    c.post(f"/v2/models/{NAME}/infer", json=oip(X[j : j + 2], id=f"r{j}")).content
                    for j in range(5)
                ]
            )
            bodies.append([c.post("/predict", json=X[:3].tolist(), headers={"X-Request-Id": "pp"}).content])
    assert bodies[0] == bodies[2] and bodies[1] == bodies[3]  # byte-identical with and without the shadow
    recs = records(tmp_path / "log1")
    assert sorted(r["route"] for r in recs) == ["champion"] * 6 + ["shadow"] * 6
    shadow = [r for r in recs if r["route"] == "shadow"]
    assert {r["model_version"] for r in shadow} == {"20260102-000000-challenger"}
    assert {r["request_id"] for r in shadow} == {"r0", "r1", "r2", "r3", "r4", "pp"}

    app = create_app(runs["champion"], shadow=str(runs["challenger"]), log_dir=str(tmp_path / "log2"))
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        broken = app.state.service.router.current.challenger
        object.__setattr__(broken, "predict", _raise)  # the shadow model now fails on every call
        res = c.post(f"/v2/models/{NAME}/infer", json=oip(X[:2], id="r0"))
        assert res.content == bodies[0][0]
        app.state.service.shadow_runner.flush()
        assert "closedloop_shadow_errors_total 1.0" in c.get("/metrics").text
    errs = [r for r in records(tmp_path / "log2") if r["route"] == "shadow"]
    assert errs[0]["status"] == "error" and "shadow exploded" in errs[0]["error"]


def _raise(x):
    raise RuntimeError("shadow exploded")


def test_canary_share_is_deterministic_and_falls_back(runs: dict[str, Path], X, tmp_path: Path) -> None:
    ids = [f"id-{i}" for i in range(200)]
    expected = {i for i in ids if canary_fraction(i) < 0.3}
    from fastapi.testclient import TestClient

    app = create_app(
        runs["champion"], canary=str(runs["challenger"]), canary_share=0.3, log_dir=str(tmp_path)
    )
    with TestClient(app) as c:
        versions = {
            i: c.post(f"/v2/models/{NAME}/infer", json=oip(X[:1], id=i)).json()["model_version"] for i in ids
        }
        again = c.post(f"/v2/models/{NAME}/infer", json=oip(X[:1], id=sorted(expected)[0])).json()[
            "model_version"
        ]
        object.__setattr__(app.state.service.router.current.challenger, "predict", _raise)
        fallback = c.post(f"/v2/models/{NAME}/infer", json=oip(X[:1], id=sorted(expected)[0]))
    assert {i for i, v in versions.items() if v == "20260102-000000-challenger"} == expected
    assert 30 < len(expected) < 90 and again == "20260102-000000-challenger"
    assert fallback.status_code == 200 and fallback.json()["model_version"] == "20260101-000000-champion"
    recs = records(tmp_path)
    assert sum(r["route"] == "canary" and r["status"] == "ok" for r in recs) == len(expected) + 1
    assert [r["route"] for r in recs[-2:]] == ["canary", "champion"] and recs[-2]["status"] == "error"


def test_promote_and_rollback(runs: dict[str, Path], X) -> None:
    with client(runs["champion"], shadow=str(runs["challenger"])) as c:
        v = lambda: c.post(f"/v2/models/{NAME}/infer", json=oip(X[:1])).json()["model_version"]  # noqa: E731
        assert v() == "20260101-000000-champion"
        p = c.post("/admin/promote")
        assert p.status_code == 200 and p.json()["champion"]["version"] == "20260102-000000-challenger"
        assert v() == "20260102-000000-challenger"
        assert c.post("/admin/rollback").json()["champion"]["version"] == "20260101-000000-champion"
        assert v() == "20260101-000000-champion"
        again = c.post("/admin/rollback")
    assert again.status_code == 409 and "nothing to roll back" in again.json()["error"]
    with client(runs["champion"]) as c:
        res = c.post("/admin/promote")
    assert res.status_code == 409 and "no challenger" in res.json()["error"]


# -- monitor ----------------------------------------------------------------------------------------------
def test_monitor_503_without_log_dir_or_live_module(
    runs: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    with client(runs["champion"]) as c:
        res = c.get("/monitor")
    assert res.status_code == 503 and "--log-dir" in res.json()["error"]
    monkeypatch.setitem(sys.modules, "closedloop.monitoring.live", None)  # import fails
    with client(runs["champion"], log_dir=str(tmp_path)) as c:
        res = c.get("/monitor")
    assert res.status_code == 503 and "closedloop.monitoring.live" in res.json()["error"]


class _FakeStatus(BaseModel):
    level: str
    n_records: int
    p_values: dict[str, float]


def test_monitor_status_and_gauges(runs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    seen = []

    class FakeLiveMonitor:
        def __init__(self, run_dir, log_dir) -> None:
            seen.append((Path(run_dir), Path(log_dir)))

        def status(self) -> _FakeStatus:
            return _FakeStatus(level="warn", n_records=12, p_values={"ks": 0.01})

    monkeypatch.setitem(
        sys.modules, "closedloop.monitoring.live", types.SimpleNamespace(LiveMonitor=FakeLiveMonitor)
    )
    with client(runs["champion"], log_dir=str(tmp_path)) as c:
        res = c.get("/monitor")
        metrics = c.get("/metrics").text
    assert res.json() == {"level": "warn", "n_records": 12, "p_values": {"ks": 0.01}}
    assert seen == [(runs["champion"].resolve(), tmp_path)]
    assert "closedloop_monitor_level 1.0" in metrics
    assert 'closedloop_monitor_value{field="p_values.ks"} 0.01' in metrics


def test_an_internal_failure_is_a_json_500_and_not_acknowledged(
    runs: dict[str, Path], X, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    app = create_app(runs["champion"], log_dir=str(tmp_path))
    with TestClient(app, raise_server_exceptions=False) as c:
        object.__setattr__(app.state.service.router.current.champion, "predict", _raise)
        res = c.post(f"/v2/models/{NAME}/infer", json=oip(X[:1]))
    assert res.status_code == 500 and "RuntimeError: shadow exploded" in res.json()["error"]
    assert records(tmp_path) == []
