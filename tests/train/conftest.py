"""Small bundles for the training tests (sklearn digits as 8x8 uint8 images)."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split


def digits_bundle(classes: tuple[int, ...] = (0, 1), n_per_split: tuple[int, int, int] = (240, 80, 80), seed: int = 0) -> DatasetBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.isin(d.target, classes)
    X = (d.images[keep] * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    y = np.searchsorted(np.array(classes), d.target[keep]).astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(y))
    a, b, c = n_per_split
    parts = {"train": idx[:a], "val": idx[a : a + b], "test": idx[a + b : a + b + c]}
    splits = {k: Split(X=X[v], y=y[v]) for k, v in parts.items()}
    names = [str(k) for k in classes]
    meta = DatasetMeta(name="digits", source="sklearn", kind="images", label_names=names, n_channels=1)
    return DatasetBundle(meta=meta, splits=splits)


@pytest.fixture
def binary_digits() -> DatasetBundle:
    return digits_bundle((3, 8))


@pytest.fixture
def multiclass_digits() -> DatasetBundle:
    return digits_bundle((0, 1, 2), (150, 60, 60))
