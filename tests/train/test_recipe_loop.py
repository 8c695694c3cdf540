"""The fixed recipes' shared loop (closedloop.models.loop.fit_epochs): its walk over a permutation, and
that it trains bit for bit as the distillation loop it replaced (a copy of that loop is the reference)."""

from __future__ import annotations

import numpy as np
import torch

from closedloop.models.loop import fit_epochs
from closedloop.stages.export.distill import fit, hard_loss


def _replaced_distill_loop(module, X, y, problem, *, epochs, lr, batch_size, seed):
    """stages/export/distill.py:fit before the shared loop (session 8), without a teacher."""
    g = torch.Generator().manual_seed(seed)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(Xt), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:
                continue
            loss = hard_loss(module(Xt[idx]), yt[idx], problem)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return module.eval()


def _net() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
        )


def test_the_shared_loop_trains_as_the_loop_it_replaced() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(41, 4)).astype(np.float32), rng.integers(0, 3, size=41)  # a last batch of 1
    a, b = _net(), _net()
    torch.manual_seed(7)
    _replaced_distill_loop(a, X, y, "multiclass", epochs=3, lr=1e-2, batch_size=10, seed=5)
    torch.manual_seed(7)
    fit(b, X, y, "multiclass", epochs=3, lr=1e-2, batch_size=10, seed=5)
    for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), name


def test_fit_epochs_walks_a_seeded_permutation_in_batches() -> None:
    seen: list[list[int]] = []
    epochs_started: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.steps = 0

        def step(self) -> None:
            self.steps += 1

    w = torch.zeros(1, requires_grad=True)
    opt, sched = torch.optim.SGD([w], lr=0.1), Counting()

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        seen.append(idx.tolist())
        return (w * len(idx)).sum()

    steps = fit_epochs(
        7, epochs=2, batch_size=3, generator=torch.Generator().manual_seed(1), optimizer=opt,
        batch_loss=batch_loss, scheduler=sched, on_epoch=epochs_started.append, min_batch=2,
    )  # fmt: skip
    assert epochs_started == [0, 1]
    assert [len(b) for b in seen] == [3, 3, 3, 3]  # the last batch of each epoch (1 row) is skipped
    assert steps == sched.steps == 4
    g = torch.Generator().manual_seed(1)
    first, second = torch.randperm(7, generator=g).tolist(), torch.randperm(7, generator=g).tolist()
    assert seen == [first[:3], first[3:6], second[:3], second[3:6]]
