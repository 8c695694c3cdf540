"""A bool column of a CSV (nwtco's ``in.subcohort``) is categorical with the names "False"/"True" (the
tabular source). Served rows send it as JSON ``true``/``false``, the value the user sees: ``closedloop
serve``'s /predict and the bundle's predictor on a DataFrame answer it as that category; before, both
refused it ("feature 'flag' is False, not a number"). A row in column order wider than the model's columns
is refused naming the row and the expected width."""

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
from closedloop.data.sources.tabular import TabularSource  # noqa: E402

from .test_train_trees import task_train_export  # noqa: E402
from .test_train_trees_bad_input import QUICK  # noqa: E402


def flag_csv(path: Path, n: int = 400, seed: int = 0) -> Path:
    """The label follows a bool column and one number."""
    rng = np.random.default_rng(seed)
    flag = rng.random(n) < 0.4
    a = rng.normal(size=n)
    y = (2.0 * flag + 0.5 * a + rng.normal(0, 0.5, n) > 1.0).astype(np.int64)
    pd.DataFrame({"a": a, "flag": flag, "y": y}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    root = tmp_path_factory.mktemp("bool_runs")
    data = TabularSource(path=str(flag_csv(root / "flag.csv")), target="y").load(seed=0)
    assert data.meta.categorical_features == ["flag"]
    return task_train_export(data, QUICK, root, "flagged")


def test_json_booleans_name_a_bool_columns_category(run: RunResult, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from closedloop.serving.app import create_app

    frame = pd.DataFrame({"a": [0.0, 0.0], "flag": [False, True]})  # as pandas reads the CSV
    exported = ExportBundle.load(run.run_dir / run.summary["stages"]["export"]["artifacts"]["exported"])
    pred = exported.predictor()
    assert exported.directory.joinpath("predictor.json").read_text().count('"True"') == 1
    by_frame = pred.predict_proba(frame)[:, 1]
    by_name = pred.predict_proba([{"a": 0.0, "flag": "False"}, {"a": 0.0, "flag": "True"}])[:, 1]
    np.testing.assert_array_equal(by_frame, by_name)
    assert by_frame[1] - by_frame[0] > 0.3  # the flag matters: a misread category shows
    assert pred.unseen_categories == []

    client = TestClient(create_app(run.run_dir, log_dir=str(tmp_path / "log")))

    def served(body: list[Any]) -> tuple[list[float], dict[str, Any]]:
        r = client.post("/predict", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        return [p["probabilities"]["1"] for p in out["predictions"]], out

    keyed, out = served([{"a": 0.0, "flag": False}, {"a": 0.0, "flag": True}])
    np.testing.assert_allclose(keyed, by_frame, atol=1e-6)
    assert "unseen_categories" not in out
    as_lists, _ = served([[0.0, False], [0.0, True]])
    assert as_lists == keyed
    wide = client.post("/predict", json=[[0.0, True, 1.0]])
    assert wide.status_code == 400
    assert wide.json()["error"].startswith(
        "input 0: 3 values; expected [N, 2] in the column order ['a', 'flag']"
    )
