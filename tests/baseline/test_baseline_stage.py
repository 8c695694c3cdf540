"""The baseline stage on small synthetic images and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.core.ledger import ValidationLedger
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.baseline import BaselineReport, FitBaselines
from closedloop.stages.task import DefineTaskConfig, Reference, build_task_spec


def _images(n: int = 120, k: int = 2, seed: int = 0) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    splits = {}
    for s, m in (("train", n), ("val", n // 2), ("test", n // 2)):
        y = rng.integers(0, k, m)
        X = rng.integers(0, 120, (m, 8, 8, 1)).astype(np.int64)
        X[:, :4] += (y * 60)[:, None, None, None]  # a learnable signal in the top half
        splits[s] = Split(X=X.clip(0, 255).astype(np.uint8), y=y)
    return DatasetBundle(meta=DatasetMeta(name="synth", source="test", kind="images"), splits=splits)


def _table(n: int = 200, regression: bool = False, seed: int = 0) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    splits = {}
    t0 = 0
    for s, m in (("train", n), ("val", n // 2), ("test", n // 2)):
        x = rng.normal(size=(m, 3))
        x[rng.random((m, 3)) < 0.05] = np.nan
        df = pd.DataFrame(x, columns=["a", "b", "c"])
        df["t"] = np.arange(t0, t0 + m)
        t0 += m
        sig = np.nan_to_num(df["a"].to_numpy())
        y = (
            sig * 2 + rng.normal(scale=0.3, size=m)
            if regression
            else (sig + rng.normal(scale=0.5, size=m) > 0).astype(int)
        )
        splits[s] = Split(X=df, y=y)
    return DatasetBundle(meta=DatasetMeta(name="tab", source="test", kind="table"), splits=splits)


def _run(bundle: DatasetBundle, tmp: Path, task_cfg: DefineTaskConfig | None = None, **cfg):
    task = build_task_spec(task_cfg or DefineTaskConfig(), bundle)
    led = ValidationLedger(tmp / "validation_ledger.jsonl")
    stage = FitBaselines(n_resamples=200, **cfg)
    ctx = RunContext(stage_name="baseline", stage_dir=tmp / "stage", seed=0, validation_ledger=led)
    return stage, task, stage.execute({"data": bundle, "task": task}, ctx), led


def test_binary_images(tmp_path: Path) -> None:
    b = _images()
    refs = [Reference(name="radiologist", level="human", metrics={"auc": 0.9})]
    stage, task, out, led = _run(b, tmp_path, DefineTaskConfig(references=refs))
    r = out.baseline
    names = [x.name for x in r.results]
    assert names == ["most_frequent", "prior", "stratified", "logistic", "knn"]
    assert r.result("prior").val["auc"].value == pytest.approx(0.5)
    assert r.best in ("logistic", "knn") and r.bar["auc"] > 0.8
    for x in r.results:
        for m in task.metrics:
            v = x.val[m]
            assert v.ci95[0] <= v.value <= v.ci95[1]
    # every baseline is in the validation ledger
    assert led.count("baseline") == 5
    s = stage.summarize(out)
    assert s["best"]["name"] == r.best and s["best"]["val"][task.primary_metric] == r.bar[task.primary_metric]
    # save/load, then the report works from the saved artifact alone (fresh folder: figure redrawn)
    r.save(tmp_path / "art")
    loaded = BaselineReport.load(tmp_path / "art")
    blocks = stage.report(type(out)(baseline=loaded), tmp_path / "other")
    assert (tmp_path / "other" / "figures" / "baselines.png").is_file()
    text = repr(blocks)
    assert "radiologist" in text and "Figure" in text
    # deterministic refit of the best baseline
    p1 = loaded.fit_best(b, task).predict_proba(b.val.X)
    p2 = loaded.fit_best(b, task).predict_proba(b.val.X)
    assert p1.shape == (60, 2) and np.array_equal(p1, p2)
    assert loaded.fit_best(b, task, on="train+val").predict_proba(b.val.X).shape == (60, 2)


def test_multiclass_and_medmnist_majority(tmp_path: Path) -> None:
    b = _images(k=3, seed=1)
    _, task, out, _ = _run(b, tmp_path, knn=False)
    r = out.baseline
    assert r.result("logistic").val["acc"].value > r.result("most_frequent").val["acc"].value
    majority = np.bincount(b.train.y).argmax()
    assert r.result("most_frequent").val["acc"].value == pytest.approx(np.mean(b.val.y == majority))
    assert r.fit_best(b, task).predict_proba(b.val.X).shape == (60, 3)


def test_table_with_time_column_and_regression(tmp_path: Path) -> None:
    b = _table()
    _, task, out, _ = _run(b, tmp_path, time_column="t")
    names = [x.name for x in out.baseline.results]
    assert "persistence" in names and "logistic" in names
    r = _run(_table(regression=True), tmp_path / "reg", tree_ensemble=True)[2].baseline
    assert [x.name for x in r.results] == ["mean", "median", "ridge", "knn", "tree_ensemble"]
    assert r.best in ("ridge", "tree_ensemble", "knn") and r.bar["rmse"] < r.result("mean").val["rmse"].value
    assert not r.higher_is_better


def test_multilabel(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    splits = {}
    for s, m in (("train", 150), ("val", 80), ("test", 80)):
        Y = rng.integers(0, 2, (m, 3))
        X = rng.integers(0, 100, (m, 6, 6, 1)) + (Y[:, 0] * 100)[:, None, None, None]
        splits[s] = Split(X=X.astype(np.uint8), y=Y)
    b = DatasetBundle(meta=DatasetMeta(name="ml", source="test", kind="images"), splits=splits)
    _, task, out, _ = _run(b, tmp_path)
    assert task.problem_type == "multilabel"
    assert out.baseline.fit_best(b, task).predict_proba(b.val.X).shape == (80, 3)


def test_one_class_validation_gives_a_clear_message(tmp_path: Path) -> None:
    b = _images()
    b.splits["val"] = Split(X=b.val.X, y=np.ones(len(b.val.y), dtype=int))
    from closedloop.core.errors import DataError

    with pytest.raises(DataError, match="undefined.*single class"):
        _run(b, tmp_path)
