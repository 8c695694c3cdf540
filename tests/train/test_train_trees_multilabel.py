"""Multi-label trees (``family: lgbm`` on a multilabel task): one logistic booster per label, grown in
lockstep as one LightGBM model. Each label's trees are the binary booster of that label alone; the train
stage, the ONNX export (per-label probabilities, parity on test rows), ``closedloop serve`` (/predict and
/v2 infer through a real server and client) and the standalone predictor.py all give the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

from closedloop.core.pipeline import RunResult  # noqa: E402
from closedloop.data.bundle import DatasetBundle, Split  # noqa: E402

from .test_train_trees import TREE_TRAIN, task_train_export, tree_table  # noqa: E402

LABELS = ["p", "q", "rare"]
#: the binary tree tests' settings, smaller: one multi-label stage is several boosters' work
ML_TRAIN: dict[str, Any] = {
    **TREE_TRAIN,
    "ladder_epochs": 2,
    "n_trials": 2,
    "max_epochs": 3,
    "cv_candidates": 0,
    "n_bootstrap": 100,
}


def multilabel_table(n: int = 600, seed: int = 0) -> DatasetBundle:
    """The tree table with three labels: one from a numeric column, one from a numeric and the
    categorical column, and a rare one (about 10%) from another numeric column."""
    d = tree_table(n, seed)
    rng = np.random.default_rng(seed + 1)

    def labels(X: pd.DataFrame) -> np.ndarray:
        p = X["a"].to_numpy() + 0.3 * rng.normal(size=len(X)) > 0.2
        q = X["b"].to_numpy() + 1.5 * (X["color"] == "blue").to_numpy() + 0.3 * rng.normal(size=len(X)) > 0.5
        rare = X["noise"].to_numpy() > 1.3
        return np.stack([p, q, rare], 1).astype(np.float32)

    parts = {k: Split(v.X, labels(v.X)) for k, v in d.splits.items()}
    return DatasetBundle(meta=d.meta.model_copy(update={"label_names": LABELS}), splits=parts)


def test_each_label_column_is_that_labels_own_binary_booster() -> None:
    """The lockstep fit's column k equals LightGBM's own binary booster fitted on label k alone
    (same start, same gradients): K independent boosters, held as one model."""
    import lightgbm as lgb

    from closedloop.models.families.lgbm_multilabel import (
        PerLabelLogistic,
        label_log_odds,
        one_vs_rest_booster,
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = np.stack([x[:, 0] > 0.3, x[:, 1] + x[:, 2] > 0, x[:, 3] > 1.2], 1).astype(np.float64)
    common = {"num_leaves": 8, "learning_rate": 0.2, "verbosity": -1, "num_threads": 1, "deterministic": True}
    objective, init = PerLabelLogistic(y), label_log_odds(y)
    data = lgb.Dataset(x, label=np.zeros(len(x)), init_score=np.tile(init, (len(x), 1)))
    joint = lgb.train({**common, "objective": objective, "num_class": 3}, data, num_boost_round=15)
    model = one_vs_rest_booster(joint, init)
    raw = model.predict(x, raw_score=True)
    assert raw.shape == (400, 3)
    np.testing.assert_allclose(model.predict(x), 1 / (1 + np.exp(-raw)), atol=1e-12)  # per-label sigmoid
    for k in range(3):
        alone = lgb.train(
            {**common, "objective": "binary"}, lgb.Dataset(x, label=y[:, k]), num_boost_round=15
        )
        np.testing.assert_allclose(raw[:, k], alone.predict(x, raw_score=True), atol=1e-9)


def test_one_vs_rest_text_predicts_bit_for_bit_what_set_leaf_output_gave() -> None:
    """The text edit that folds each label's start into its first tree (one write, one parse per fit)
    gives the very doubles the ``Booster.set_leaf_output`` path gave (session 11's code, written out
    here), on trees of one leaf and of many; and the in-place objective the very gradients of
    ``p - y`` and ``max(p (1 - p), 1e-16)`` times the class weights."""
    import lightgbm as lgb

    from closedloop.models.families.lgbm_multilabel import PerLabelLogistic, label_log_odds, one_vs_rest_text

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4))
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0.5, np.zeros(300) > 1], 1).astype(np.float64)  # label 3: no split
    w = np.array([[0.7, 1.0, 0.5], [1.8, 1.2, 2.0]])
    objective, init = PerLabelLogistic(y, w), label_log_odds(y, w)
    z = rng.normal(scale=40, size=y.shape)
    p = 0.5 * (1.0 + np.tanh(0.5 * z))
    grad, hess = objective(z.reshape(-1), None)
    weights = y * w[1] + (1 - y) * w[0]
    assert np.array_equal(grad, (p - y) * weights)
    assert np.array_equal(hess, np.maximum(p * (1.0 - p), 1e-16) * weights)
    data = lgb.Dataset(x, label=np.zeros(len(x)), init_score=np.tile(init, (len(x), 1)))
    params = {"objective": objective, "num_class": 3, "num_leaves": 6, "verbosity": -1, "num_threads": 1}
    fit = lgb.train(params, data, num_boost_round=5)
    old = lgb.Booster(model_str=fit.model_to_string())
    for tree, info in enumerate(old.dump_model(num_iteration=1)["tree_info"][:3]):
        for leaf in range(info["num_leaves"]):
            old.set_leaf_output(tree, leaf, old.get_leaf_output(tree, leaf) + float(init[tree]))
    text = one_vs_rest_text(fit.model_to_string(), init)
    assert "objective=multiclassova num_class:3 sigmoid:1" in text and "tree_sizes=" not in text
    new = lgb.Booster(model_str=text)
    assert np.array_equal(new.predict(x, raw_score=True), old.predict(x, raw_score=True))
    assert np.array_equal(new.predict(x, raw_score=True)[:, 2], np.full(300, init[2]))


def test_seed_members_of_a_multilabel_fit_average_into_one_booster() -> None:
    """``final_seeds``: multi-label members (bagging, different seeds) ship as one booster whose per-label
    raw scores are the members' mean, still a one-vs-rest model."""
    import lightgbm as lgb

    from closedloop.models.families.lgbm import average_boosters
    from closedloop.models.families.lgbm_multilabel import (
        PerLabelLogistic,
        label_log_odds,
        one_vs_rest_booster,
    )

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0.5], 1).astype(np.float64)
    init = label_log_odds(y)
    members = []
    for seed in (1, 2):
        params = {
            "objective": PerLabelLogistic(y),
            "num_class": 2,
            "bagging_fraction": 0.6,
            "bagging_freq": 1,
        }
        params |= {"seed": seed, "num_leaves": 4, "verbosity": -1, "num_threads": 1}
        data = lgb.Dataset(x, label=np.zeros(len(x)), init_score=np.tile(init, (len(x), 1)))
        members.append(one_vs_rest_booster(lgb.train(params, data, num_boost_round=8), init))
    raws = [m.predict(x, raw_score=True) for m in members]
    assert not np.allclose(raws[0], raws[1])  # the seeds drew different rows
    merged = lgb.Booster(model_str=average_boosters([m.model_to_string() for m in members]))
    np.testing.assert_allclose(merged.predict(x, raw_score=True), (raws[0] + raws[1]) / 2, atol=1e-9)
    assert "objective=multiclassova num_class:2 sigmoid:1" in merged.model_to_string()


def test_a_one_label_multilabel_task_is_refused_naming_the_count() -> None:
    from closedloop.core.errors import ConfigError
    from closedloop.stages.train.tree_engine import TreeEngine

    with pytest.raises(ConfigError, match=r"multilabel task needs at least 2 labels .*\(got 1\)"):
        TreeEngine("multilabel", 1, metric="auc", higher_is_better=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return task_train_export(multilabel_table(), ML_TRAIN, tmp_path_factory.mktemp("ml_tree_runs"), "mltrees")


def test_multilabel_trees_train_and_export_with_parity(run: RunResult) -> None:
    s = run.summary["stages"]
    assert s["task"]["problem_type"] == "multilabel"
    train = s["train"]
    assert train["model"]["family"] == "lgbm"
    assert {"sanity", "scale_up", "tune", "final"} <= {d["phase"] for d in train["decisions"]}
    assert train["test"]["auc"]["value"] > 0.7
    model = run.artifact("model")
    assert (
        "\nobjective=multiclassova num_class:3 sigmoid:1\n" in bytes(model.network.booster.numpy()).decode()
    )
    exp = s["export"]
    assert exp["shipped"] == "fp32" and exp["parity_max_abs_diff"] <= 1e-5
    from closedloop.stages.export.bundle import ExportBundle

    bundle = ExportBundle.load(run.run_dir / exp["artifacts"]["exported"])
    meta = json.loads((bundle.directory / "predictor.json").read_text())
    assert meta["problem_type"] == "multilabel" and meta["label_names"] == LABELS
    X = run.artifact("data").val.X
    feats = model.preprocessing.feature_names
    arr = np.stack(
        [pd.to_numeric(X[c], errors="coerce") if c != "color" else X[c].cat.codes for c in feats], 1
    ).astype(np.float32)
    p_onnx = bundle.predictor().predict_proba(arr)
    p_native = model.predict_proba(pd.DataFrame(arr, columns=feats))
    assert p_onnx.shape == (len(X), 3) and np.abs(p_onnx - p_native).max() <= 1e-5
    assert not np.allclose(p_onnx.sum(1), 1.0)  # per-label probabilities, not a distribution


def test_multilabel_trees_served_and_in_the_standalone_predictor(run: RunResult, tmp_path: Path) -> None:
    """``closedloop serve`` in its own process and httpx: /predict gives each label's probability and
    the labels over the threshold; /v2 infer's ``proba`` is (N, 3); both equal predictor.py's answer."""
    import httpx

    sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
    from serve_helpers import ServerProcess

    from closedloop.stages.export.bundle import ExportBundle

    bundle = ExportBundle.load(run.run_dir / run.summary["stages"]["export"]["artifacts"]["exported"])
    rows = [
        {"a": 1.5, "b": -1.0, "c": None, "noise": 0.0, "color": "blue"},
        {"a": -1.5, "b": 2.0, "c": 0.3, "noise": 2.5, "color": "red"},
    ]
    want = bundle.predictor().predict_proba(rows)
    file = tmp_path / "rows.json"
    file.write_text(json.dumps(rows))
    out = subprocess.run(
        [sys.executable, "predictor.py", str(bundle.directory), str(file)],
        cwd=bundle.directory, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert np.allclose(json.loads(out.stdout)["proba"], want, atol=1e-7)
    server = ServerProcess([str(run.run_dir), "--log-dir", str(tmp_path / "log")], tmp_path)
    try:
        server.wait_ready()
        r = httpx.post(f"{server.url}/predict", json=rows, timeout=30)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        got = np.array([[p["probabilities"][n] for n in LABELS] for p in preds])
        assert np.abs(got - want).max() <= 1e-6
        assert preds[0]["label"] == [n for n, v in zip(LABELS, want[0], strict=True) if v >= 0.5]
        infer = f"{server.url}/v2/models/mltrees/infer"
        name = httpx.get(infer.removesuffix("/infer"), timeout=10).json()["inputs"][0]["name"]
        flat = [v for row in rows for v in row.values()]
        body = {"inputs": [{"name": name, "datatype": "BYTES", "shape": [2, 5], "data": flat}]}
        r = httpx.post(infer, json=body, timeout=30)
        assert r.status_code == 200, r.text
        proba = next(o for o in r.json()["outputs"] if o["name"] == "proba")
        assert proba["shape"] == [2, 3]
        assert np.abs(np.array(proba["data"]).reshape(2, 3) - want).max() <= 1e-6
    finally:
        server.stop()
