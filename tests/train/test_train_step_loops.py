"""The engine's two one-purpose loops (the sanity check's overfit on one batch, the LR range test) run
on the fixed recipes' step loop (closedloop.models.loop.train_steps): the same losses, learning rates
and weights, bit for bit, as the loops they replaced (copies of those loops are the references), and the
step loop's stop rules."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from closedloop.models.loop import train_steps
from closedloop.models.registry import build_network
from closedloop.models.trained import ModelSpec, Preprocessing
from closedloop.stages.train.engine import Engine, HParams, make_tensor_set

from .conftest import digits_bundle


def _replaced_overfit_batch(eng: Engine, net, batch, *, steps: int, lr: float) -> list[float]:
    """Engine.overfit_batch before the shared step loop (session 9), without a deadline."""
    net.to(eng.device).train()
    hp = HParams(label_smoothing=0.0, ordinal_loss="ce")
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    xb = eng.to_input(batch.x, None, None)
    t = eng.soft_targets(batch.y, hp)
    losses: list[float] = []
    target = None
    for _ in range(steps):
        loss = eng.loss(net(xb), t)
        v = float(loss.detach())
        losses.append(v)
        if target is None:
            target = max(0.05 * v, 0.02) if eng.problem_type != "regression" else 0.05 * v
        if not math.isfinite(v) or v <= target:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def _replaced_lr_range_test(eng: Engine, net, train, hp: HParams, *, seed: int, steps: int, lr_max: float):
    """Engine.lr_range_test before the shared step loop (session 9)."""
    lr_min = 1e-5
    net = net.to(eng.device).train()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr_min, weight_decay=hp.weight_decay)
    lrs, losses, smooth = [], [], None
    bs = min(hp.batch_size, len(train))
    for i in range(steps):
        lr = lr_min * (lr_max / lr_min) ** (i / max(steps - 1, 1))
        for grp in opt.param_groups:
            grp["lr"] = lr
        idx = torch.randint(0, len(train), (bs,), generator=g)
        xb = eng.to_input(train.x[idx], None, None)
        loss = eng.loss(net(xb), eng.soft_targets(train.y[idx], hp))
        if not torch.isfinite(loss):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        v = float(loss.detach())
        smooth = v if smooth is None else 0.7 * smooth + 0.3 * v
        lrs.append(lr)
        losses.append(smooth)
        if smooth > 4 * min(losses):
            break
    best = lrs[int(np.argmin(losses))] if losses else hp.lr
    return lrs, losses, float(best / 10)


@pytest.fixture(scope="module")
def sets():
    b = digits_bundle((3, 8))
    pre = Preprocessing(input_kind="images", input_shape=[8, 8, 1], mean=[0.3], std=[0.35])
    tr = make_tensor_set(b.train.X, b.train.y, pre, "binary")
    eng = Engine("binary", 2, mean=[0.3], std=[0.35], metric="auc", higher_is_better=True)
    return tr, eng


def _net(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(ModelSpec(family="small_cnn", params={"width": 4, "depth": 1}), [8, 8, 1], 1)


def _weights(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([v.detach().flatten().float() for v in net.state_dict().values()])


@pytest.mark.parametrize("steps", [3, 40])  # 3: stopped by the step count; 40: by the loss target
def test_overfit_batch_on_the_step_loop_equals_the_replaced_loop(sets, steps: int) -> None:
    tr, eng = sets
    batch = tr.subset(np.arange(16))
    ref_net, new_net = _net(), _net()
    ref = _replaced_overfit_batch(eng, ref_net, batch, steps=steps, lr=3e-2)
    new = eng.overfit_batch(new_net, batch, steps=steps, lr=3e-2, deadline=time.time() + 3600, label="t")
    assert new == ref and len(new) <= steps
    assert torch.equal(_weights(new_net), _weights(ref_net))
    if steps == 40:  # the target stopped it before the step count: the last loss is the one at target
        assert len(new) < steps and new[-1] <= max(0.05 * new[0], 0.02)


def test_overfit_batch_stops_by_its_deadline(sets) -> None:
    tr, eng = sets
    losses = eng.overfit_batch(
        _net(), tr.subset(np.arange(16)), steps=50, lr=3e-2, deadline=time.time() - 1, label="t"
    )
    assert len(losses) == 1  # the first loss is measured, no step is taken past the deadline


@pytest.mark.parametrize("lr_max", [1.0, 1e4])  # 1e4: the loss diverges and the sweep stops early
def test_lr_range_test_on_the_step_loop_equals_the_replaced_loop(sets, lr_max: float) -> None:
    tr, eng = sets
    hp = HParams(batch_size=32, weight_decay=1e-3)
    ref_net, new_net = _net(1), _net(1)
    ref = _replaced_lr_range_test(eng, ref_net, tr, hp, seed=4, steps=40, lr_max=lr_max)
    new = eng.lr_range_test(new_net, tr, hp, seed=4, steps=40, lr_max=lr_max)
    assert new == ref
    assert torch.equal(_weights(new_net), _weights(ref_net))
    assert (len(new[0]) < 40) == (lr_max > 1.0)  # the stop rule read after a step ended it early


def test_train_steps_stops_before_a_step_when_the_loss_says_so() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.25)  # each step halves w
    seen: list[int] = []

    def loss(i: int) -> torch.Tensor | None:
        seen.append(i)
        return None if i == 3 else (w**2).sum()

    assert train_steps(range(10), optimizer=opt, batch_loss=loss) == 3
    assert seen == [0, 1, 2, 3] and float(w.detach()) == pytest.approx(0.125)  # three halvings, none at i=3
