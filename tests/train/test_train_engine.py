"""Engine: batched augmentation, learning, exact resume from a checkpoint, non-finite loss, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from closedloop.models.registry import build_network
from closedloop.models.trained import ModelSpec, Preprocessing
from closedloop.stages.train.augment import AugmentParams, augment_images, mix_batch
from closedloop.stages.train.calibration import (
    choose_threshold,
    fit_bias_temperature,
    fit_temperature,
    fold_logit_bias,
)
from closedloop.stages.train.engine import Engine, HParams, NonFiniteLossError, make_tensor_set

from .conftest import digits_bundle


@pytest.fixture(scope="module")
def sets():
    b = digits_bundle((3, 8))
    pre = Preprocessing(input_kind="images", input_shape=[8, 8, 1], mean=[0.3], std=[0.35])
    tr = make_tensor_set(b.train.X, b.train.y, pre, "binary")
    va = make_tensor_set(b.val.X, b.val.y, pre, "binary")
    eng = Engine("binary", 2, mean=[0.3], std=[0.35], metric="auc", higher_is_better=True)
    return tr, va, eng


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return build_network(ModelSpec(family="small_cnn", params={"width": 4, "depth": 1}), [8, 8, 1], 1)


def test_train_augment_is_per_sample_and_seeded() -> None:
    x = torch.rand(6, 1, 8, 8)
    p = AugmentParams(strength=1.0)
    a = augment_images(x, p, torch.Generator().manual_seed(1))
    b = augment_images(x, p, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    same = augment_images(x[:1].repeat(6, 1, 1, 1), p, torch.Generator().manual_seed(2))
    assert not torch.allclose(same[0], same[1])  # each sample gets its own draw
    assert torch.equal(augment_images(x, AugmentParams(strength=0.0), torch.Generator()), x)
    xm, tm = mix_batch(
        x,
        torch.eye(2)[torch.tensor([0, 1, 0, 1, 0, 1])],
        AugmentParams(mixup=0.4),
        torch.Generator().manual_seed(0),
        0,
    )
    assert xm.shape == x.shape and torch.allclose(tm.sum(1), torch.ones(6))


def test_train_engine_learns(sets) -> None:
    tr, va, eng = sets
    res = eng.fit(_net(), tr, va, HParams(epochs=4, batch_size=32, lr=1e-2), seed=0)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.best_score > 0.9 and res.val_logits.shape == (len(va), 1)


def test_train_engine_resume_equals_uninterrupted(sets, tmp_path) -> None:
    tr, va, eng = sets
    hp = HParams(
        epochs=4, batch_size=32, lr=1e-2, augment=AugmentParams(strength=0.5, mixup=0.2), patience=10
    )
    full = eng.fit(_net(), tr, va, hp, seed=3, checkpoint=tmp_path / "a.pt")

    class Killed(Exception):
        pass

    def kill(epoch, rec):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        eng.fit(_net(), tr, va, hp, seed=3, checkpoint=tmp_path / "b.pt", on_epoch=kill)
    torch.manual_seed(999)  # the resumed process starts from a different global RNG state
    resumed = eng.fit(_net(5), tr, va, hp, seed=3, checkpoint=tmp_path / "b.pt")
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    np.testing.assert_array_equal(resumed.val_logits, full.val_logits)
    ck = torch.load(
        tmp_path / "b.pt", weights_only=True
    )  # everything in the checkpoint is plain tensors/lists
    assert ck["epoch"] == 4


def test_train_engine_deadline_stops_inside_an_epoch(sets, tmp_path) -> None:
    tr, va, eng = sets
    hp = HParams(epochs=4, batch_size=8, lr=1e-2)
    steps = len(tr) // 8
    # a deadline already past: one step (so there are weights to score), the part-epoch scored
    res = eng.fit(_net(), tr, va, hp, seed=0, deadline=0.0, checkpoint=tmp_path / "c.pt")
    assert res.stopped == "time_budget" and len(res.history) == 1
    assert res.history[0]["epoch_fraction"] == pytest.approx(8 / len(tr), abs=1e-3)
    assert 0 < res.epochs_done < 1 and res.val_logits.shape == (len(va), 1)
    assert not (tmp_path / "c.pt").exists()  # a part-epoch is never checkpointed: a resume redoes it
    # a deadline that never binds changes nothing, and no record says epoch_fraction
    free = eng.fit(_net(), tr, va, hp, seed=0, deadline=float("inf"))
    plain = eng.fit(_net(), tr, va, hp, seed=0)
    assert free.stopped == "completed" and steps > 1
    assert free.history == plain.history and "epoch_fraction" not in free.history[-1]
    np.testing.assert_array_equal(free.val_logits, plain.val_logits)


def test_train_engine_non_finite_loss_is_reported(sets) -> None:
    tr, va, eng = sets

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _net()
            self.head = self.inner.head

        def features(self, x):
            return self.inner.features(x)

        def forward(self, x):
            return self.inner(x) * float("nan")

    with pytest.raises(NonFiniteLossError, match="non-finite"):
        eng.fit(Broken(), tr, va, HParams(epochs=1, batch_size=32), seed=0)


def test_train_temperature_recovers_known_scale() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    t = fit_temperature((z * 3)[:, None], y, "binary")  # logits 3x too confident -> T ~ 3
    assert 2.6 < t < 3.4


def test_train_bias_temperature_undoes_a_prior_shift() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    # what class re-weighting does: every logit shifted (here by -1.5) and over-confident (x2)
    t, b = fit_bias_temperature((2 * z - 1.5)[:, None], y, "binary")
    assert 1.7 < t < 2.3 and 1.2 < b[0] < 1.8
    # temperature alone cannot remove the shift: bias-corrected NLL is lower
    from closedloop.stages.train.calibration import _nll

    zs = (2 * z - 1.5)[:, None]
    assert _nll(zs + b, y, "binary", t) < _nll(zs, y, "binary", fit_temperature(zs, y, "binary")) - 0.01


def test_train_bias_temperature_multiclass_and_fold() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, (3000, 3))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    shift = np.array([1.0, 0.0, -1.0])
    t, b = fit_bias_temperature(z + shift, y, "multiclass")
    assert 0.85 < t < 1.15
    np.testing.assert_allclose(b, -shift, atol=0.2)  # centred offsets undo the centred shift
    net = _net()
    x = torch.rand(4, 1, 8, 8)
    before = net(x).detach()
    assert fold_logit_bias(net, np.array([0.75]))
    torch.testing.assert_close(net(x).detach(), before + 0.75)
    assert not fold_logit_bias(net, np.array([1.0, 2.0]))  # wrong size: left alone


def test_train_threshold_rules() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    thr, why = choose_threshold(y, p, rule="youden")
    assert 0.3 < thr <= 0.7 and "Youden" in why
    assert choose_threshold(y, p, rule="fixed")[0] == 0.5
    thr_cost, _ = choose_threshold(y, p, rule="cost", cost_fp=1, cost_fn=100)
    assert thr_cost <= 0.7  # missing a positive is expensive: no positive may fall below it
