"""Seeded stratified splitting."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.core.errors import ConfigError
from closedloop.data.sources.sklearn_datasets import SklearnSource
from closedloop.data.splits import stratified_split, stratified_subsample


def _check_partition(plan, n):
    allrows = np.concatenate([plan.indices[s] for s in ("train", "val", "test")])
    assert sorted(allrows.tolist()) == list(range(n))


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    y = np.repeat(np.arange(3), [50, 30, 20])
    a = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=7)
    b = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=7)
    c = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=8)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a.indices[s], b.indices[s])
    assert any(not np.array_equal(a.indices[s], c.indices[s]) for s in ("train", "val", "test"))
    _check_partition(a, len(y))


def test_split_keeps_class_shares():
    y = np.array([0] * 900 + [1] * 100)
    plan = stratified_split(y, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert plan.stratified_on == "class" and plan.note is None
    sizes = {k: len(v) for k, v in plan.indices.items()}
    assert sizes == {"train": 700, "val": 100, "test": 200}
    assert y[plan.indices["val"]].sum() == 10
    assert y[plan.indices["test"]].sum() == 20
    # split order is shuffled, not sorted by class
    assert not np.all(np.diff(y[plan.indices["train"]]) >= 0)


def test_small_class_gets_a_member_in_every_split():
    y = np.array([0] * 97 + [1] * 3)
    plan = stratified_split(y, val_fraction=0.1, test_fraction=0.1, seed=1)
    for s in ("train", "val", "test"):
        assert 1 in y[plan.indices[s]]


def test_regression_falls_back_to_plain_shuffle_with_note():
    y = np.random.default_rng(0).normal(size=200)
    plan = stratified_split(y, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert plan.stratified_on is None
    assert "regression" in plan.note and not plan.small_classes
    _check_partition(plan, 200)


def test_tiny_class_falls_back_with_note():
    y = np.array([0] * 40 + [1] * 2)
    plan = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert plan.stratified_on is None and plan.small_classes
    assert "fewer than 3" in plan.note
    _check_partition(plan, 42)


def test_multilabel_stratifies_on_rarest_usable_label():
    rng = np.random.default_rng(0)
    y = np.zeros((300, 3), dtype=np.int64)
    y[:, 0] = rng.random(300) < 0.5
    y[:30, 1] = 1  # rarest usable label
    y[0, 2] = 1  # too rare to stratify on
    plan = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=0, label_names=["a", "b", "c"])
    assert plan.stratified_on == "label b"
    assert y[plan.indices["val"], 1].sum() == 6 and y[plan.indices["test"], 1].sum() == 6


def test_multilabel_without_usable_label_is_not_stratified():
    y = np.zeros((20, 2), dtype=np.int64)
    y[0, 0] = 1
    plan = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert plan.stratified_on is None and "multi-label" in plan.note


def test_subsample_keeps_class_mix_and_order():
    y = np.array([0] * 800 + [1] * 200)
    keep = stratified_subsample(y, 100, seed=0)
    assert len(keep) == 100 and y[keep].sum() == 20
    assert np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(keep, stratified_subsample(y, 100, seed=0))
    assert len(stratified_subsample(y, 5000, seed=0)) == 1000


@pytest.mark.parametrize("params", [{"val_fraction": 0.5, "test_fraction": 0.5}, {"val_fraction": 0.0}])
def test_bad_fractions_are_config_errors(params):
    with pytest.raises(ConfigError, match="val_fraction"):
        SklearnSource(name="iris", **params)
