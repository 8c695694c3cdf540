"""The tree family (``family: lgbm``) through the loop: train stage (ladder, tree knobs, k-fold, class
weights, ledgers, contract battery), export (ONNX parity, no int8), the served predictor on rows with
missing values and an unseen category, and the monitor's table reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

from closedloop.core.checks import GivenArtifacts, check_stage  # noqa: E402
from closedloop.core.pipeline import Pipeline, RunResult  # noqa: E402
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split  # noqa: E402
from closedloop.models.trained import TrainedModel  # noqa: E402
from closedloop.stages.train import TrainModel  # noqa: E402

TREE_TRAIN: dict[str, Any] = {
    "preset": "quick",
    "family": "lgbm",
    "budget_minutes": 30,  # the trial count, not the clock, ends each phase (deterministic)
    "ladder": [{"num_leaves": 4}, {"num_leaves": 16}],
    "ladder_epochs": 3,
    "n_trials": 3,
    "max_epochs": 4,
    "cv_candidates": 2,
    "class_weight": "balanced",
    "n_bootstrap": 200,
}


def tree_table(n: int = 600, seed: int = 0) -> DatasetBundle:
    """Numeric columns, one with 15% missing values, and a categorical column that matters."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])
    a, b = rng.normal(size=n), rng.normal(size=n)
    c = rng.normal(size=n)
    c[rng.random(n) < 0.15] = np.nan
    z = 1.5 * a - b + np.where(color == "blue", 1.5, 0.0) + np.nan_to_num(c) * 0.5
    y = (z + rng.normal(0, 0.7, n) > 0.8).astype(np.int64)  # imbalanced: about a third positive
    X = pd.DataFrame(
        {
            "a": a,
            "b": b,
            "c": c,
            "noise": rng.normal(size=n),
            "color": pd.Categorical(color, categories=["blue", "green", "red"]),
        }
    )
    return binary_table_bundle("trees", X, y, categorical=["color"])


def binary_table_bundle(name: str, X: pd.DataFrame, y: np.ndarray, categorical: list[str]) -> DatasetBundle:
    """A no/yes table split 60/20/20 in row order into train, val and test."""
    parts = np.split(np.arange(len(X)), [int(len(X) * 0.6), int(len(X) * 0.8)])
    splits = {
        k: Split(X.iloc[p].reset_index(drop=True), y[p])
        for k, p in zip(("train", "val", "test"), parts, strict=True)
    }
    meta = DatasetMeta(
        name=name, source="test", kind="table", label_names=["no", "yes"], categorical_features=categorical
    )
    return DatasetBundle(meta=meta, splits=splits)


def task_train_export(data: DatasetBundle, train: dict[str, Any], runs: Path, name: str) -> RunResult:
    """The task, train and export stages on ``data``; every stage must end ok."""
    from closedloop.core.registry import STAGES

    given = GivenArtifacts.of({"data": data}, runs / "given")
    stages = [STAGES.resolve("task")(), TrainModel(**train), STAGES.resolve("export")()]
    result = Pipeline([given, *stages], name=name, runs_dir=runs).run(progress=False)
    failed = {k: v.get("error") for k, v in result.summary["stages"].items() if v["status"] != "ok"}
    assert not failed, failed
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    from closedloop.core.registry import STAGES

    runs = tmp_path_factory.mktemp("tree_runs")
    given = GivenArtifacts.of({"data": tree_table()}, runs / "given")
    stages = [
        STAGES.resolve("task")(),
        STAGES.resolve("baseline")(knn=False, n_resamples=200),
        TrainModel(**TREE_TRAIN),
        STAGES.resolve("export")(),
        STAGES.resolve("monitor")(calibration_windows=40, permutations=50, window_sizes=[30]),
    ]
    result = Pipeline([given, *stages], name="trees", runs_dir=runs).run(progress=False)
    failed = {k: v.get("error") for k, v in result.summary["stages"].items() if v["status"] != "ok"}
    assert not failed, failed
    return result


def test_tree_family_through_the_train_stage(run: RunResult) -> None:
    s = run.summary["stages"]["train"]
    assert s["model"]["family"] == "lgbm"
    phases = {d["phase"] for d in s["decisions"]}
    assert {"sanity", "scale_up", "tune", "final"} <= phases
    ev = run.artifact("evaluation")
    # tree knobs were searched; the network knobs do not apply to trees
    space = ev.phases["tune"]["space"]
    assert {"learning_rate", "min_child_samples", "reg_lambda", "feature_fraction"} <= set(space)
    assert not {"lr", "weight_decay", "dropout", "l1", "label_smoothing"} & set(space)
    # small table: cross-validation re-ranks the candidates, each at the round count of its best
    # out-of-fold score, which the final fit takes
    cv = ev.phases.get("cross_validate")
    assert cv is not None and cv["skipped"] is None and len(cv["candidates"]) == 2, cv
    chosen = next(r for r in cv["candidates"] if r["candidate"] == cv["chosen"])
    assert cv["tuned"]["best_epoch"] == chosen["epochs"]
    assert chosen["cv_mean"] == max(r["cv_mean"] for r in cv["candidates"])
    assert s["test"]["auc"]["value"] > 0.8
    assert s["evaluated_on"]["test"] == "test"
    assert s["n_configs"] >= 1 + 1 + TREE_TRAIN["n_trials"]
    model = run.artifact("model")
    assert model.info["hparams"]["class_weight"] == "balanced"
    imp = s["feature_importance"]
    assert imp["evaluated_on"] == {"gain": "trained_on", "permutation": "calibration"} and imp["n_rows"] == 60
    by = {f["feature"]: f for f in imp["features"]}
    assert abs(sum(f["gain"] for f in by.values()) - 1) < 1e-4
    assert imp["features"][0]["feature"] == "a"  # the strongest signal ranks first on held-out rows
    lo, hi = by["a"]["permutation_ci95"]
    assert lo > 0 and by["noise"]["permutation_ci95"][0] <= 0 <= by["noise"]["permutation_ci95"][1] + 1e-9
    report = (run.run_dir / "report.html").read_text()
    assert "Feature importance" in report and "held-out rows" in report
    assert model.preprocessing.native_missing and model.preprocessing.impute is None
    # tree_extend (default 8) is in the decision log, so in summary.json and the report
    extend = [d for d in s["decisions"] if "tree_extend" in (d.get("evidence") or {})]
    assert len(extend) == 1 and "up to 8x its planned epochs" in extend[0]["decision"], extend
    assert "tree_extend: 8" in report
    # a given ladder overrides tree_ladder_size, and the decision log says so
    ladder = [d["decision"] for d in s["decisions"] if "tree_ladder_size" in (d.get("evidence") or {})]
    assert ladder == [
        "tree_ladder_size: 3 has no effect: the ladder is given (2 rung(s): num_leaves=4; num_leaves=16)"
    ]


@pytest.mark.slow
def test_tree_train_stage_passes_the_contract_battery(run: RunResult, tmp_path: Path) -> None:
    inputs = {k: run.artifact(k) for k in ("data", "task", "baseline")}
    check_stage(TrainModel(**TREE_TRAIN), inputs, tmp_path)  # save/load, same seed -> same artifacts


def test_tree_model_saves_and_loads_without_unpickling(run: RunResult, tmp_path: Path) -> None:
    model = run.artifact("model")
    model.save(tmp_path / "m")
    back = TrainedModel.load(tmp_path / "m")
    X = run.artifact("data").val.X
    np.testing.assert_array_equal(model.predict_proba(X), back.predict_proba(X))


def test_tree_export_parity_and_served_rows(run: RunResult) -> None:
    m = run.summary["stages"]["export"]
    assert m["shipped"] == "fp32" and m["parity_max_abs_diff"] <= 1e-5
    from closedloop.stages.export.bundle import ExportBundle

    bundle = ExportBundle.load(run.run_dir / m["artifacts"]["exported"])
    meas = json.loads((bundle.directory / "measurements.json").read_text())
    assert "int8" not in meas["variants"]
    model = run.artifact("model")
    pred = bundle.predictor()  # the folder's own standalone, torch-free predictor
    X = run.artifact("data").val.X
    rows = X.iloc[:20].copy()
    feats = model.preprocessing.feature_names
    arr = np.stack(
        [pd.to_numeric(rows[c], errors="coerce") if c != "color" else rows[c].cat.codes for c in feats], 1
    )
    arr = arr.astype(np.float32)
    arr[0, feats.index("c")] = np.nan  # a missing value
    arr[1, feats.index("color")] = 7.0  # a category code the model never saw
    p_onnx = pred.predict_proba(arr)
    p_torch = model.predict_proba(pd.DataFrame(arr, columns=feats))
    assert np.isfinite(p_onnx).all()
    assert np.abs(p_onnx - p_torch).max() <= 1e-5


def test_tree_monitor_reference_on_table_features(run: RunResult) -> None:
    ref = run.summary["stages"]["monitor"]["reference"]
    assert ref["kind"] == "table" and ref["n_features"] == 5 and "features" in ref["tests"]


def test_ship_int8_is_refused_for_trees(run: RunResult, tmp_path: Path) -> None:
    from closedloop.core.errors import ClosedLoopError
    from closedloop.core.registry import STAGES

    from .conftest import make_ctx

    ctx = make_ctx(tmp_path / "export")
    ctx.stage_name = "export"
    inputs = {k: run.artifact(k) for k in ("data", "task", "model")}
    with pytest.raises(
        ClosedLoopError, match=r"export.ship: int8 .* tree ensemble \(lgbm\).* nothing to quantize"
    ):
        STAGES.resolve("export")(ship="int8").execute(inputs, ctx)


def test_served_tree_model_takes_feature_rows(run: RunResult, tmp_path: Path) -> None:
    """``closedloop serve``'s /predict on a table model: rows keyed by feature name with null for a
    missing value, category codes (an unseen code is answered, not refused), and the errors."""
    from fastapi.testclient import TestClient

    from closedloop.serving.app import create_app

    client = TestClient(create_app(run.run_dir, log_dir=str(tmp_path / "log")))
    row = {"a": 0.5, "b": -1.0, "c": None, "noise": 0.0, "color": 0.0}
    ok = client.post("/predict", json=[row, {**row, "color": 9.0}])
    assert ok.status_code == 200, ok.text
    preds = ok.json()["predictions"]
    assert len(preds) == 2 and all(abs(sum(p["probabilities"].values()) - 1) < 1e-6 for p in preds)
    wide = client.post("/predict", json=[[0.0] * 6])
    assert wide.status_code == 400 and "expected [N, 5]" in wide.json()["error"]
    unknown = client.post("/predict", json=[{**row, "extra": 1.0}])
    assert (
        unknown.status_code == 400
        and "input 0: unknown feature(s) ['extra']; expected" in unknown.json()["error"]
    )
    assert "missing feature" not in unknown.json()["error"]  # only what is wrong is named
    text = client.post("/predict", json=[{**row, "a": "blue"}])  # text in a numeric column
    assert text.status_code == 400
    assert text.json()["error"].startswith("input 0: feature 'a' is 'blue', not a number")


def test_categories_by_name_through_the_http_server(run: RunResult, tmp_path: Path) -> None:
    """``closedloop serve`` in its own process, a real HTTP client: a categorical feature by name gives
    the answer of its code; a name the model never saw is answered as a missing value and listed in
    ``unseen_categories``; predictor.json carries the names."""
    import sys

    import httpx

    sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
    from serve_helpers import ServerProcess

    exported = run.run_dir / run.summary["stages"]["export"]["artifacts"]["exported"]
    meta = json.loads((exported / "predictor.json").read_text())
    assert meta["input"]["categories"] == {"color": ["blue", "green", "red"]}
    server = ServerProcess([str(run.run_dir), "--log-dir", str(tmp_path / "log")], tmp_path)
    try:
        server.wait_ready()
        row = {"a": 0.5, "b": -1.0, "c": None, "noise": 0.0}
        body = [
            {**row, "color": "green"},
            {**row, "color": 1.0},
            {**row, "color": "purple"},
            {**row, "color": None},
        ]
        r = httpx.post(f"{server.url}/predict", json=body, timeout=30)
        assert r.status_code == 200, r.text
        out = r.json()
        probs = [p["probabilities"] for p in out["predictions"]]
        assert probs[0] == probs[1]  # "green" is code 1
        assert probs[2] == probs[3]  # an unseen name is a missing value
        assert out["unseen_categories"] == [{"index": 2, "feature": "color", "value": "purple"}]
        lists = [[0.5, -1.0, 0.7, 0.0, "green"], [0.5, -1.0, 0.7, 0.0, 1.0]]  # rows in column order
        as_lists = httpx.post(f"{server.url}/predict", json=lists, timeout=30)
        assert as_lists.status_code == 200, as_lists.text
        p_lists = [p["probabilities"] for p in as_lists.json()["predictions"]]
        assert p_lists[0] == p_lists[1]
        known = httpx.post(f"{server.url}/predict", json=body[:2], timeout=30).json()
        assert "unseen_categories" not in known
        _v2_infer_by_name(server.url, p_lists[0])
    finally:
        server.stop()


def _v2_infer_by_name(url: str, want: dict[str, float]) -> None:
    """The OIP route takes the same names: the model's input as a BYTES tensor [N, F] in column order,
    or one input per feature (MLServer's pandas-codec shape); unseen names in ``parameters``."""
    import httpx

    infer = f"{url}/v2/models/trees/infer"  # the served model is named after the run
    name = httpx.get(infer.removesuffix("/infer"), timeout=10).json()["inputs"][0]["name"]
    rows = {"name": name, "datatype": "BYTES", "shape": [2, 5], "data": [0.5, -1.0, 0.7, 0.0, "green", 0.5, -1.0, 0.7, 0.0, "purple"]}  # fmt: skip
    r = httpx.post(infer, json={"inputs": [rows]}, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    proba = next(o for o in out["outputs"] if o["name"] == "proba")["data"]
    assert abs(proba[1] - want["yes"]) < 1e-9  # "green" as by /predict with its code
    assert out["parameters"]["unseen_categories"] == [{"index": 1, "feature": "color", "value": "purple"}]
    cols = [
        {"name": f, "datatype": "FP32", "shape": [2], "data": [v, v]}
        for f, v in (("a", 0.5), ("b", -1.0), ("c", 0.7), ("noise", 0.0))
    ] + [{"name": "color", "datatype": "BYTES", "shape": [2], "data": ["green", "green"]}]
    r = httpx.post(infer, json={"inputs": cols}, timeout=30)
    assert r.status_code == 200, r.text
    by_col = next(o for o in r.json()["outputs"] if o["name"] == "proba")["data"]
    assert abs(by_col[1] - want["yes"]) < 1e-6 and "parameters" not in r.json()
    bad = [
        ({"inputs": cols[1:]}, "inputs by feature: missing ['a']"),
        ({"inputs": [{**rows, "shape": [2, 5], "data": ["x"] + rows["data"][1:]}]}, "feature 'a' is 'x', not a number"),
        ({"inputs": [{**rows, "shape": [1, 10]}]}, "expected [N, 5] in the column order"),
    ]  # fmt: skip
    for body, message in bad:
        r = httpx.post(infer, json=body, timeout=30)
        assert r.status_code == 400 and message in r.json()["error"], r.text


def test_the_trees_config_validates() -> None:
    from closedloop.core.pipeline import Pipeline

    root = Path(__file__).resolve().parents[2]
    p = Pipeline.from_yaml(root / "configs" / "tabular_trees.yaml")
    train = next(s for s in p.stages if s.name == "train")
    assert train.config.family == "lgbm"


def test_monitor_and_labeling_on_served_tree_rows(run: RunResult, tmp_path: Path) -> None:
    """Served table rows -> request log -> ``closedloop monitor --review`` -> the labeling page's rows."""
    from fastapi.testclient import TestClient

    from closedloop.cli import main
    from closedloop.labeling.app import create_app as labeling_app
    from closedloop.serving.app import create_app

    log = tmp_path / "log"
    client = TestClient(create_app(run.run_dir, log_dir=str(log)))
    test = run.artifact("data").splits["test"]
    rows, names = test.features(), list(test.X.columns)
    for i in range(0, 60, 10):  # rows keyed by feature name, null for missing (the table request form)
        body = [
            {n: None if np.isnan(v) else float(v) for n, v in zip(names, r, strict=True)}
            for r in rows[i : i + 10]
        ]
        assert client.post("/predict", json=body).status_code == 200
    out, queue = tmp_path / "monitor.json", tmp_path / "queue"
    code = main(
        [
            "monitor",
            str(run.run_dir),
            str(log),
            "--window",
            "30",
            "--out",
            str(out),
            "--review",
            "5",
            "--review-dir",
            str(queue),
        ]
    )
    assert code in (0, 1)  # 1: an alarm (not expected here, but a verdict, not an error)
    result = json.loads(out.read_text())
    assert result["windows"] and len(result["windows"]) == 2
    assert (queue / "rows.csv").is_file()
    items = TestClient(labeling_app(queue)).get("/api/queue").json()["items"]
    assert len(items) == 5 and set(items[0]["features"]) == {"a", "b", "c", "noise", "color"}


def test_standalone_predictor_takes_category_names(run: RunResult, tmp_path: Path) -> None:
    """The export folder's own predictor.py (numpy + onnxruntime only): objects keyed by feature, a
    DataFrame or rows with category names give the answer of their codes; an unseen name is a missing
    value listed in ``unseen_categories``; its command line reads a .json list of rows."""
    import subprocess
    import sys

    from closedloop.stages.export.bundle import ExportBundle

    m = run.summary["stages"]["export"]
    bundle = ExportBundle.load(run.run_dir / m["artifacts"]["exported"])
    pred = bundle.predictor()
    PredictorError = sys.modules[type(pred).__module__].PredictorError  # the folder's own module
    row = {"a": 0.5, "b": -1.0, "c": None, "noise": 0.0}
    names = [{**row, "color": "green"}, {**row, "color": "purple"}]
    codes = np.array([[0.5, -1.0, np.nan, 0.0, 1.0], [0.5, -1.0, np.nan, 0.0, np.nan]], np.float32)
    p_names = pred.predict_proba(names)
    assert pred.unseen_categories == [{"index": 1, "feature": "color", "value": "purple"}]
    assert np.array_equal(p_names, pred.predict_proba(codes)) and pred.unseen_categories == []
    assert np.array_equal(p_names, pred.predict_proba(pd.DataFrame(names)))
    assert np.array_equal(
        p_names, pred.predict_proba([[0.5, -1.0, None, 0.0, "green"], [0.5, -1.0, None, 0.0, "purple"]])
    )
    with pytest.raises(
        PredictorError, match=r"row 0: missing feature\(s\) \['color'\]; unknown feature\(s\) \['colour'\]"
    ):
        pred.predict_proba([{**row, "colour": "green"}])
    with pytest.raises(PredictorError, match="row 0: feature 'a' is 'high', not a number"):
        pred.predict_proba([{**row, "a": "high", "color": "red"}])
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(names))
    out = subprocess.run(
        [sys.executable, "predictor.py", str(bundle.directory), str(rows)],
        cwd=bundle.directory, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert np.allclose(answer["proba"], p_names) and answer["unseen_categories"][0]["value"] == "purple"
