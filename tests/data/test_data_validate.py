"""Checks every source runs before returning a bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop.core.errors import DataError
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.data.validate import validate_bundle


def _images(n=6, shape=(4, 4, 1), dtype=np.uint8):
    return np.zeros((n, *shape), dtype=dtype)


def _img_bundle(**splits):
    base = {s: Split(X=_images(), y=np.array([0, 1, 0, 1, 0, 1])) for s in ("train", "val", "test")}
    base.update(splits)
    meta = DatasetMeta(name="toy", source="test", kind="images", label_names=["a", "b"])
    return DatasetBundle(meta=meta, splits=base)


def _table(values):
    return pd.DataFrame({"x": values, "c": pd.Categorical(["u"] * len(values), categories=["u", "v"])})


def _tab_bundle(**splits):
    base = {
        s: Split(X=_table([1.0, 2.0, 3.0, 4.0]), y=np.array([0, 1, 0, 1])) for s in ("train", "val", "test")
    }
    base.update(splits)
    meta = DatasetMeta(name="tab", source="test", kind="table", label_names=["a", "b"])
    return DatasetBundle(meta=meta, splits=base)


def test_valid_bundles_pass():
    assert validate_bundle(_img_bundle()).meta.name == "toy"
    # NaN in table features is allowed (kept as missing)
    validate_bundle(_tab_bundle(val=Split(X=_table([1.0, np.nan, 3.0, 4.0]), y=np.array([0, 1, 0, 1]))))


def test_empty_split():
    with pytest.raises(DataError, match=r"dataset 'toy'.*split 'val' is empty"):
        validate_bundle(_img_bundle(val=Split(X=_images(0), y=np.zeros(0, np.int64))))


def test_single_class_train():
    with pytest.raises(DataError, match=r"split 'train'.*same class \('b'\).*at least two classes"):
        validate_bundle(_img_bundle(train=Split(X=_images(), y=np.ones(6, np.int64))))


def test_nan_in_float_images():
    X = _images(dtype=np.float32)
    X[2, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"split 'test'.*NaN or infinite.*rows 2"):
        validate_bundle(_img_bundle(test=Split(X=X, y=np.array([0, 1, 0, 1, 0, 1]))))


def test_inf_in_float_images():
    X = _images(dtype=np.float64)
    X[0, 1, 1, 0] = np.inf
    with pytest.raises(DataError, match="NaN or infinite"):
        validate_bundle(_img_bundle(train=Split(X=X, y=np.array([0, 1, 0, 1, 0, 1]))))


def test_non_uint8_images():
    with pytest.raises(DataError, match="expected uint8"):
        validate_bundle(_img_bundle(train=Split(X=_images(dtype=np.float32), y=np.array([0, 1, 0, 1, 0, 1]))))


def test_image_shape_differs_between_splits():
    with pytest.raises(DataError, match=r"split 'val'.*one image shape"):
        validate_bundle(_img_bundle(val=Split(X=_images(shape=(5, 5, 1)), y=np.array([0, 1, 0, 1, 0, 1]))))


def test_images_without_channel_axis():
    with pytest.raises(DataError, match=r"\(N, H, W, C\)"):
        validate_bundle(_img_bundle(train=Split(X=np.zeros((6, 4, 4), np.uint8), y=np.array([0, 1] * 3))))


def test_inf_in_table_features():
    with pytest.raises(DataError, match=r"dataset 'tab'.*split 'val'.*column 'x'.*infinite.*rows 1"):
        validate_bundle(_tab_bundle(val=Split(X=_table([1.0, np.inf, 3.0, 4.0]), y=np.array([0, 1, 0, 1]))))


def test_table_columns_differ_between_splits():
    other = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(DataError, match="same columns"):
        validate_bundle(_tab_bundle(test=Split(X=other, y=np.array([0, 1, 0, 1]))))


def test_labels_out_of_range():
    with pytest.raises(DataError, match=r"split 'val'.*out of range.*\[2\].*0\.\.1"):
        validate_bundle(_img_bundle(val=Split(X=_images(), y=np.array([0, 1, 2, 1, 0, 1]))))


def test_negative_labels():
    with pytest.raises(DataError, match="out of range"):
        validate_bundle(_img_bundle(train=Split(X=_images(), y=np.array([0, 1, -1, 1, 0, 1]))))


def test_length_mismatch():
    with pytest.raises(DataError, match=r"split 'train'.*X has 6 rows but y has 5"):
        validate_bundle(_img_bundle(train=Split(X=_images(), y=np.array([0, 1, 0, 1, 0]))))


def test_missing_labels():
    with pytest.raises(DataError, match="missing"):
        validate_bundle(_tab_bundle(val=Split(X=_table([1.0, 2, 3, 4]), y=np.array([0.0, np.nan, 1.0, 0.0]))))


def test_multilabel_values_and_width():
    meta = DatasetMeta(
        name="ml", source="test", kind="images", label_names=["a", "b"], task_hint="multi-label, binary-class"
    )
    good = np.array([[0, 1], [1, 0], [1, 1], [0, 0], [0, 1], [1, 0]])
    splits = {s: Split(X=_images(), y=good) for s in ("train", "val", "test")}
    validate_bundle(DatasetBundle(meta=meta, splits=splits))
    bad = good.copy()
    bad[3, 1] = 2
    with pytest.raises(DataError, match=r"outside \{0, 1\}"):
        validate_bundle(DatasetBundle(meta=meta, splits={**splits, "val": Split(X=_images(), y=bad)}))
    with pytest.raises(DataError, match="expected 2"):
        validate_bundle(
            DatasetBundle(meta=meta, splits={**splits, "val": Split(X=_images(), y=good[:, :1].repeat(3, 1))})
        )


def test_constant_regression_target():
    meta = DatasetMeta(name="reg", source="test", kind="table", task_hint="regression")
    y = np.full(4, 2.5)
    splits = {s: Split(X=_table([1.0, 2, 3, 4]), y=y) for s in ("train", "val", "test")}
    with pytest.raises(DataError, match="same target value"):
        validate_bundle(DatasetBundle(meta=meta, splits=splits))
