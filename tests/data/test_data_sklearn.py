"""The sklearn source (the quickstart's default data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop.core.errors import ConfigError
from closedloop.core.registry import SOURCES
from closedloop.data.bundle import DatasetBundle
from closedloop.data.sources.sklearn_datasets import SklearnSource


def test_registered_and_resolvable():
    assert SOURCES.resolve("sklearn") is SklearnSource


def test_digits_are_uint8_images():
    b = SklearnSource({"name": "digits"}).load(seed=0)
    assert b.kind == "images" and b.meta.split_origin == "seeded_stratified"
    assert b.train.X.dtype == np.uint8 and b.train.X.shape[1:] == (8, 8, 1)
    assert b.train.X.max() == 255  # 0..16 stretched to 0..255
    assert sum(b.sizes().values()) == 1797
    assert b.meta.label_names == [str(i) for i in range(10)]
    assert b.train.y.dtype == np.int64
    # stratified: every class appears in every split
    for s in ("train", "val"):
        assert set(b.splits[s].y.tolist()) == set(range(10))
    assert set(b.splits["test"].y.tolist()) == set(range(10))


@pytest.mark.parametrize(("name", "n_classes"), [("breast_cancer", 2), ("iris", 3), ("wine", 3)])
def test_tables_have_named_columns(name, n_classes):
    b = SklearnSource(name=name).load(seed=0)
    assert b.kind == "table" and isinstance(b.train.X, pd.DataFrame)
    assert list(b.train.X.columns) == b.meta.feature_names and len(b.meta.feature_names) > 3
    assert len(b.meta.label_names) == n_classes
    assert b.meta.provenance["splits"]["stratified_on"] == "class"


def test_diabetes_is_regression():
    b = SklearnSource(name="diabetes").load(seed=0)
    assert b.train.y.dtype == np.float64 and b.meta.label_names == []
    assert b.meta.task_hint == "regression"
    assert "regression" in b.meta.provenance["splits"]["note"]


def test_fractions_and_determinism():
    a = SklearnSource(name="iris", val_fraction=0.2, test_fraction=0.2).load(seed=3)
    b = SklearnSource(name="iris", val_fraction=0.2, test_fraction=0.2).load(seed=3)
    c = SklearnSource(name="iris", val_fraction=0.2, test_fraction=0.2).load(seed=4)
    assert a.sizes() == {"train": 90, "val": 30, "test": 30}
    pd.testing.assert_frame_equal(a.train.X, b.train.X)
    np.testing.assert_array_equal(a.val.y, b.val.y)
    assert not a.train.X.equals(c.train.X)


@pytest.mark.parametrize("name", ["digits", "wine"])
def test_round_trip(tmp_path, name):
    b = SklearnSource(name=name).load(seed=0)
    b.save(tmp_path)
    back = DatasetBundle.load(tmp_path)
    assert back.meta == b.meta and back.sizes() == b.sizes()
    np.testing.assert_array_equal(back.train.features(), b.train.features())
    np.testing.assert_array_equal(back.val.y, b.val.y)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"unknown key 'nmae' \(did you mean 'name'\?\)"):
        SklearnSource(nmae="digits")
    with pytest.raises(ConfigError, match="data.name"):
        SklearnSource(name="mnist")
