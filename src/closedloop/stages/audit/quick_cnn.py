"""A small CNN cross-fitted for out-of-fold class probabilities (the label-issue check on images).

Pixels through PCA lose what makes a chest X-ray "pneumonia"; a three-block CNN trained for a few
epochs on each k-1 folds ranks mislabeled images far better (PneumoniaMNIST, 10% flipped, see
benchmarks/bench_audit_label_noise.py). Few epochs on purpose: a network trained long enough
memorizes the flipped labels and stops disagreeing with them.

Speed on a small, shared CPU: each fold trains with one intra-op thread and the folds run side by
side in ``jobs`` Python threads (torch releases the GIL in its kernels). Measured on a 2-core machine
under load, two threads of one process each synchronizing their OpenMP workers ran ~6x slower per
image than one thread; whole folds in parallel never wait on each other. All five folds at once beat
two at a time on 2 cores (PneumoniaMNIST 31 s vs 39 s): with two, the fifth fold ran alone.

The recipe (16 epochs of batch 128 with mixup) was chosen on PneumoniaMNIST with 10% flipped labels
over 3 flip seeds, against 8 epochs of batch 64 without mixup, 16 epochs without mixup, a generalized
cross-entropy loss, and a second round trained without the first round's suspects (which did not help).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from closedloop.core.killpoints import kill_point
from closedloop.core.seeds import derive_seed
from closedloop.models.loop import fit_epochs

MAX_SIDE = 32
"""Larger images are block-averaged down to at most this side before the CNN (speed)."""


def _to_tensor_input(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, C, h, w) float32, block-averaged to ``MAX_SIDE``, standardized per channel."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    n, h, w, c = x.shape
    f = max(1, math.ceil(max(h, w) / MAX_SIDE))
    hh, ww = (h // f) * f, (w // f) * f
    out = np.empty((n, c, hh // f, ww // f), np.float32)
    for s in range(0, n, 4096):  # chunks: a 100k-image set never needs a float copy of itself
        blk = x[s : s + 4096, :hh, :ww].astype(np.float32) / 255.0
        blk = blk.reshape(len(blk), hh // f, f, ww // f, f, c).mean(axis=(2, 4))
        out[s : s + 4096] = blk.transpose(0, 3, 1, 2)
    mu = out.mean(axis=(0, 2, 3), keepdims=True)
    sd = out.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return (out - mu) / sd


def _network(in_ch: int, n_classes: int, width: int) -> Any:
    import torch.nn as nn

    def block(cin: int, cout: int) -> list[Any]:
        # batch norm costs ~1.7x per image on CPU, but without it 4 epochs left the net far from converged
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    w = width
    return nn.Sequential(
        *block(in_ch, w),
        nn.MaxPool2d(2),
        *block(w, 2 * w),
        nn.MaxPool2d(2),
        *block(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, n_classes),
    )


def cnn_oof_probabilities(
    images: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    n_classes: int,
    *,
    epochs: int = 16,
    min_steps: int = 150,
    width: int = 8,
    batch_size: int = 128,
    lr: float = 6e-3,
    hflip: bool = True,
    mixup: float = 0.4,
    jobs: int = 5,
    seed: int = 0,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold class probabilities of a small CNN trained on each fold's complement.

    Args:
        images: (N, H, W, C) or (N, H, W) uint8.
        y: (N,) class indices in ``0..n_classes-1``.
        folds: (train_idx, held_out_idx) pairs covering every sample once as held out.
        epochs, width, batch_size, lr: the training recipe (AdamW, one-cycle schedule).
        min_steps: small sets train for more epochs until each fold takes this many optimizer steps
            (BreastMNIST's ~500 training images make 4 steps an epoch: 16 epochs would not converge).
        hflip: random horizontal flips (and flip test-time averaging); off where left/right matters.
        mixup: Beta(a, a) parameter of mixup (Zhang et al. 2018: blended image pairs with blended
            targets slow the memorization of wrong labels); 0 turns it off.
        jobs: folds trained at the same time (one torch thread each).
        seed: the run's seed; fold ``f`` draws its weights, batch order and augmentation from
            ``derive_seed(seed, "audit", "cnn", "fold", f)`` alone (:mod:`closedloop.core.seeds`).
        exclude: (N,) bool, samples left out of every fold's training part (suspected label errors
            found by quicker models); they are still predicted by the fold that holds them out.
    """
    import torch

    x = torch.from_numpy(_to_tensor_input(images))
    yt = torch.from_numpy(np.asarray(y, np.int64))
    seeds = [derive_seed(seed, "audit", "cnn", "fold", f) for f in range(len(folds))]
    nets = []
    for f in range(len(folds)):  # built in this thread, on a forked global RNG left as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds[f])
            nets.append(_network(x.shape[1], n_classes, width))
    out = np.zeros((len(y), n_classes), np.float64)

    def fit_one(f: int) -> None:
        torch.set_num_threads(1)
        tr_idx, te_idx = folds[f]
        if exclude is not None:
            tr_idx = tr_idx[~exclude[tr_idx]]
        tr, te = (
            torch.from_numpy(np.asarray(tr_idx, np.int64)),
            torch.from_numpy(np.asarray(te_idx, np.int64)),
        )
        net, gen = nets[f], torch.Generator().manual_seed(seeds[f])
        mix_rng = np.random.default_rng(seeds[f])
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        per_epoch = math.ceil(len(tr) / batch_size)
        n_epochs = max(epochs, min(50, math.ceil(min_steps / per_epoch)))
        steps = n_epochs * per_epoch
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
        pad = max(1, x.shape[-1] // 14)  # random shifts of up to ~7% of the side
        ce = torch.nn.functional.cross_entropy

        def batch_loss(pos: Any) -> Any:
            idx = tr[pos]
            xb = x[idx]
            if hflip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            dy, dx = torch.randint(-pad, pad + 1, (2,), generator=gen).tolist()
            xb = torch.roll(xb, (dy, dx), (2, 3))
            yb = yt[idx]
            if mixup <= 0:
                return ce(net(xb), yb)
            lam = float(mix_rng.beta(mixup, mixup))
            perm = torch.randperm(len(idx), generator=gen)
            logits = net(lam * xb + (1 - lam) * xb[perm])
            return lam * ce(logits, yb) + (1 - lam) * ce(logits, yb[perm])

        net.train()
        fit_epochs(  # the recipes' shared loop (closedloop.models.loop)
            len(tr),
            epochs=n_epochs,
            batch_size=batch_size,
            generator=gen,
            optimizer=opt,
            scheduler=sched,
            batch_loss=batch_loss,
            on_epoch=lambda epoch: kill_point(f"audit/label_issues/cnn/fold{f}/epoch{epoch}"),
        )
        net.eval()
        with torch.no_grad():
            for s in range(0, len(te), 1024):
                xb = x[te[s : s + 1024]]
                p = torch.softmax(net(xb), 1)
                if hflip:
                    p = (p + torch.softmax(net(xb.flip(3)), 1)) / 2
                out[te[s : s + 1024].numpy()] = p.double().numpy()

    previous = torch.get_num_threads()
    try:
        if jobs <= 1:
            for f in range(len(folds)):
                fit_one(f)
        else:
            with ThreadPoolExecutor(max_workers=min(jobs, len(folds))) as pool:
                list(pool.map(fit_one, range(len(folds))))  # list(): re-raise a fold's error
    finally:
        torch.set_num_threads(previous)
    return out
