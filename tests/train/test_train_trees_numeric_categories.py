"""A categorical column whose categories are numbers (a tumour stage 1..4, as in nwtco): in rows keyed by
feature name a number is the category, not its code, through ``closedloop serve``'s /predict, the OIP
route's per-feature inputs and the bundle's predictor on a DataFrame; rows in column order stay the
model's tensor (a number is a code). Before, stage 3 was answered as stage 4 (max |dp| 0.60 on nwtco's
test rows, benchmarks/bench_table_serving.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

from closedloop.artifacts.export import ExportBundle  # noqa: E402
from closedloop.core.pipeline import RunResult  # noqa: E402
from closedloop.data.bundle import DatasetBundle  # noqa: E402

from .test_train_trees import binary_table_bundle, task_train_export  # noqa: E402
from .test_train_trees_bad_input import QUICK  # noqa: E402


def staged_table(n: int = 400, seed: int = 0) -> DatasetBundle:
    """The label rises with the stage (categories 1..4, numbers); one numeric column."""
    rng = np.random.default_rng(seed)
    stage = rng.integers(1, 5, n)
    a = rng.normal(size=n)
    y = (stage + 0.5 * a + rng.normal(0, 0.5, n) > 2.8).astype(np.int64)
    X = pd.DataFrame({"a": a, "stage": pd.Categorical(stage, categories=[1, 2, 3, 4])})
    return binary_table_bundle("staged", X, y, categorical=["stage"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return task_train_export(staged_table(), QUICK, tmp_path_factory.mktemp("staged_runs"), "staged")


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {"a": [0.0] * 5, "stage": pd.Categorical([1, 2, 3, 4, None], categories=[1, 2, 3, 4])}
    )


def test_numbers_name_the_category_in_keyed_rows_and_data_frames(run: RunResult, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from closedloop.serving.app import create_app

    native = run.artifact("model").predict_proba(_rows())[:, 1]
    assert native[3] - native[0] > 0.3  # the stage matters: a misread category shows
    exported = ExportBundle.load(run.run_dir / run.summary["stages"]["export"]["artifacts"]["exported"])
    pred = exported.predictor()
    codes = np.array([[0.0, 0], [0.0, 1], [0.0, 2], [0.0, 3], [0.0, np.nan]], np.float32)
    by_frame = pred.predict_proba(_rows())[:, 1]
    np.testing.assert_allclose(by_frame, native, atol=1e-5)
    np.testing.assert_array_equal(pred.predict_proba(codes)[:, 1], by_frame)  # a numeric array: codes

    client = TestClient(create_app(run.run_dir, log_dir=str(tmp_path / "log")))

    def served(body: list[Any]) -> tuple[np.ndarray, dict[str, Any]]:
        r = client.post("/predict", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        return np.array([p["probabilities"]["yes"] for p in out["predictions"]]), out

    keyed = [{"a": 0.0, "stage": s} for s in (1, 2.0, "3", "4.0", None)]  # numbers and their text
    p_keyed, out = served(keyed)
    np.testing.assert_allclose(p_keyed, native, atol=1e-5)
    assert "unseen_categories" not in out
    p_unseen, out = served([{"a": 0.0, "stage": 7}])  # a stage the model never saw: a missing value
    assert p_unseen[0] == p_keyed[4]
    assert out["unseen_categories"] == [{"index": 0, "feature": "stage", "value": 7}]
    p_lists, _ = served([[0.0, 0], [0.0, 3]])  # rows in column order are the model's tensor: codes
    assert p_lists.tolist() == [p_keyed[0], p_keyed[3]]
    # the OIP route, one input per feature (MLServer's pandas codec): numbers name the category too
    infer = "/v2/models/staged/infer"  # the served model is named after the run
    cols = [
        {"name": "a", "datatype": "FP32", "shape": [4], "data": [0.0] * 4},
        {"name": "stage", "datatype": "INT64", "shape": [4], "data": [1, 2, 3, 4]},
    ]
    r = client.post(infer, json={"inputs": cols})
    assert r.status_code == 200, r.text
    proba = next(o for o in r.json()["outputs"] if o["name"] == "proba")["data"]
    np.testing.assert_allclose(np.asarray(proba).reshape(4, 2)[:, 1], native[:4], atol=1e-5)
