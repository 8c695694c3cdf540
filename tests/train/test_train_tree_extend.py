"""A tree fit still improving at its last planned epoch boosts on (``train.tree_extend``, issue #25)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("lightgbm")

from closedloop.core.errors import ConfigError  # noqa: E402
from closedloop.models.families.lgbm import TreeEnsemble  # noqa: E402
from closedloop.stages.train.config import TrainConfig  # noqa: E402
from closedloop.stages.train.engine import HParams, TensorSet  # noqa: E402
from closedloop.stages.train.tree_engine import TreeEngine  # noqa: E402


def _data(n: int, seed: int) -> TensorSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return TensorSet(torch.from_numpy(x), torch.from_numpy(y).float().reshape(-1, 1), y)


def _fit(
    extend: int, lr: float, epochs: int, patience: int | None = 2
) -> tuple[TreeEngine, TreeEnsemble, object]:
    eng = TreeEngine("binary", 2, metric="loss", higher_is_better=False, device="cpu", extend=extend)
    net = TreeEnsemble(6, 1, num_leaves=8, learning_rate=lr, rounds_per_epoch=5)
    res = eng.fit(net, _data(600, 0), _data(400, 1), HParams(epochs=epochs, patience=patience), seed=0)
    return eng, net, res


def test_a_fit_still_improving_at_its_plan_boosts_on_and_keeps_its_best_round() -> None:
    # a slow learner planned for 2 epochs of 5 rounds is far from done: it boosts on, up to 4 x 2 epochs
    _, _, capped = _fit(1, 0.02, 2)
    _, net, res = _fit(4, 0.02, 2)
    assert capped.best_epoch == 2 and len(capped.history) == 2
    assert 2 < res.best_epoch <= 8 and len(res.history) > 2
    assert res.best_score > capped.best_score  # higher is better: minus the validation loss
    # the kept round, as with early stopping
    assert net.lgb_booster().current_iteration() == 5 * res.best_epoch
    # the same rounds with the cap raised by hand: the same trees
    _, same, _ = _fit(1, 0.02, res.best_epoch, patience=None)
    x = _data(50, 2).x.numpy()
    np.testing.assert_array_equal(
        net.lgb_booster().predict(x, raw_score=True), same.lgb_booster().predict(x, raw_score=True)
    )


def test_a_fit_that_stopped_improving_within_its_plan_is_unchanged() -> None:
    # a fast learner over 6 epochs peaks early: extending changes nothing (same history, same trees)
    _, a, ra = _fit(1, 0.5, 6)
    _, b, rb = _fit(4, 0.5, 6)
    assert ra.best_epoch < 6 and ra.history == rb.history and ra.best_epoch == rb.best_epoch
    # the trees only: the stored parameters name the rounds asked for (num_iterations), not those kept
    assert a.lgb_booster().dump_model()["tree_info"] == b.lgb_booster().dump_model()["tree_info"]


def test_without_early_stopping_or_validation_the_plan_is_a_cap() -> None:
    _, _, res = _fit(4, 0.02, 2, patience=None)  # the ladder's and the final fit's setting
    assert len(res.history) == 2


def test_bad_tree_extend_value_names_the_field() -> None:
    with pytest.raises((ConfigError, ValueError), match="tree_extend"):
        TrainConfig(tree_extend=0)
    assert TrainConfig().tree_extend == 8  # session 15's declared rule (docs/training.md)


def test_the_one_batch_check_does_not_crash_lightgbm_on_categorical_columns() -> None:
    """nwtco split seed 1 (session 14): with no minimum hessian in a leaf, LightGBM stopped the sanity
    check with "Check failed: (best_split_info.left_count) > (0)" on a batch of 32 rows with categorical
    columns; random batches like this one hit it most of the time. LightGBM's own minimum (1e-3) keeps it."""
    import time

    rng = np.random.default_rng(0)
    x = np.stack(
        [
            rng.integers(0, 4, 32),
            rng.integers(0, 3, 32),
            np.round(rng.uniform(0, 10, 32)),
            rng.integers(0, 2, 32),
        ],
        1,
    ).astype(np.float32)
    y = rng.integers(0, 2, 32)
    batch = TensorSet(torch.from_numpy(x), torch.from_numpy(y).float().reshape(-1, 1), y)
    eng = TreeEngine("binary", 2, metric="auc", higher_is_better=True, device="cpu", categorical=[0, 1])
    net = TreeEnsemble(4, 1, num_leaves=16)
    losses = eng.overfit_batch(net, batch, steps=100, lr=3e-3, deadline=time.time() + 3600, label="sanity")
    assert losses[-1] < losses[0] / 3  # and it still learns the batch (random labels: not to 5% here)


def test_the_one_batch_check_allows_for_identical_rows_with_different_labels() -> None:
    """A table that repeats rows (nwtco split seed 1) can hold the same inputs under both labels: no model
    fits those, so the check's target adds their entropy; rows told apart by a category alone are fitted."""
    from closedloop.stages.train.phases.sanity import loss_floor

    x = np.array([[0, 1.0], [0, 1.0], [1, 1.0], [2, np.nan], [2, np.nan]], np.float32)
    y = np.array([0, 1, 1, 0, 0])
    batch = TensorSet(torch.from_numpy(x), torch.from_numpy(y).float().reshape(-1, 1), y)
    assert loss_floor(batch, "binary") == pytest.approx(2 * np.log(2) / 5)  # one tied pair, 50/50
    assert loss_floor(batch, "regression") == 0.0
    # 32 rows that differ only in a categorical column with 16 levels, the label a function of it
    import time

    codes = np.repeat(np.arange(16), 2)
    x = np.stack([codes, np.ones(32)], 1).astype(np.float32)
    y = (codes % 2).astype(np.int64)
    batch = TensorSet(torch.from_numpy(x), torch.from_numpy(y).float().reshape(-1, 1), y)
    assert loss_floor(batch, "binary") == 0.0
    eng = TreeEngine("binary", 2, metric="auc", higher_is_better=True, device="cpu", categorical=[0])
    losses = eng.overfit_batch(
        TreeEnsemble(2, 1, num_leaves=16), batch, steps=100, lr=3e-3, deadline=time.time() + 3600, label="s"
    )
    assert losses[-1] <= max(0.05 * losses[0], 0.02)
