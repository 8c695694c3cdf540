"""Fine-tuning from the champion's weights on a few production labels (torch, seconds on a CPU).

The recalibration and last-layer challengers only re-map what the champion already computes, so
they cannot rank production cases better than the champion does (on PneumoniaMNIST's test
distribution even the best threshold, chosen with every answer known, stays short of the issue's
specificity and cost bars). Fine-tuning moves the features themselves:

1. **start** from the champion's network with its temperature folded in and a Platt recalibration
   fitted on the adaptation labels written into its head (so the fine-tune starts from the best
   re-mapping, not from a head that is off by the shift);
2. **train** the parameters of ``scope`` (``last_block``: the body's last layer and the head;
   ``all``: every parameter) for ``epochs`` passes over the adaptation labels with Adam at ``lr``,
   BatchNorm statistics and dropout frozen (eval mode: a few dozen images cannot re-estimate them),
   with
   - a **pull** toward the starting weights, ``pull * |theta - theta_0|^2`` (L2-SP: the fine-tune
     stays near the champion, so a few labels shift it rather than replace it), and
   - **replay** of the champion's own training data at the declared weight ``replay_weight``: each
     step mixes production images with as many random training images, whose loss counts
     ``replay_weight`` times as much in total, so the adapted model keeps working where the champion
     was trained and tested (the non-inferiority part of the promotion rule checks it);
3. **set the operating point out of fold**: the fine-tuned network is over-confident on the labels
   it trained on, so a threshold read off them would be optimistic. :func:`cross_fit` fine-tunes once
   per fold of the adaptation labels and scores the held-out fold; on those out-of-fold logits either
   a Platt map (then the Bayes threshold ``cost_fp / (cost_fp + cost_fn)``) or the threshold at the
   task's costs is fitted, and applied to the network fine-tuned on all adaptation labels (the two
   maps are two candidates of :func:`closedloop.adapt.challengers.choose_challenger`).

Everything is seeded; the result is a plain network of the champion's family, so the adapted model
is exported, served and monitored like any other (:func:`closedloop.adapt.challengers.adapted_model`).
Nothing here is used by the recalibration path, which stays torch-free.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from closedloop.stats.errors import StatsError

Scope = Literal["last_block", "all"]


class FinetuneSpec(BaseModel):
    """One fine-tuning recipe (a challenger candidate); declared, never tuned on evaluation labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Scope = "last_block"
    epochs: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    pull: float = Field(1e-2, ge=0)
    """L2-SP strength toward the starting weights (per parameter, summed)."""
    replay_weight: float = Field(1.0, ge=0)
    """Total weight of the champion's training images in each step, relative to the production
    images' (0: production labels only)."""
    batch_size: int = Field(32, ge=2)

    def name(self) -> str:
        return f"finetune({self.scope},pull={self.pull:g},replay={self.replay_weight:g})"


FINETUNE_GRID: tuple[FinetuneSpec, ...] = (FinetuneSpec(scope="all", pull=1e-2, replay_weight=0.3),)
"""The fine-tune recipe ``closedloop adapt --challengers finetune`` tries (with two operating-point
maps, chosen by cross-validation on the adaptation labels with the other candidates). Chosen on the
development half of bench_shift_recovery.py (docs/results/shift_recovery_dev.txt): the whole network
ranked better than the last block (AUC 0.961 vs 0.944), a larger learning rate or more epochs
over-fitted the 40 labels of a fold, and replay at 0.3 kept more of the production signal than at
1.0. One recipe, because each costs one fine-tune per fold plus the refit."""


class FinetuneFit(BaseModel):
    """What a fine-tune did (``challenger.json``); the weights themselves go into the adapted model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: FinetuneSpec
    threshold: float
    start_platt: tuple[float, float]
    """``(slope, intercept)`` of the Platt recalibration written into the head before training."""
    n_fit: int
    n_replay_per_epoch: int
    trained_parameters: int
    weight_change: float
    """``|theta - theta_0|`` of the trained parameters after fine-tuning."""


def _trainable(net: Any, scope: Scope) -> list[Any]:
    """The parameters ``scope`` trains: the head, plus the body's last Conv2d/Linear layer and the
    BatchNorm after it (``last_block``), or every parameter (``all``)."""
    import torch

    if scope == "all":
        return list(net.parameters())
    params = list(net.head.parameters())
    body = getattr(net, "body", None)
    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    layers = [m for m in body.modules() if isinstance(m, kinds)] if body is not None else []
    if not layers:
        raise StatsError("fine-tuning the last block needs a network with a 'body' of Conv2d/Linear layers")
    last = layers[-1]
    params += list(last.parameters())
    # the BatchNorm right after it (its affine weights, not its statistics)
    mods = list(body.modules())
    after = mods[mods.index(last) + 1 :]
    bn = next((m for m in after if isinstance(m, torch.nn.BatchNorm2d)), None)
    if bn is not None:
        params += list(bn.parameters())
    return params


def fine_tune(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    spec: FinetuneSpec,
    *,
    costs: tuple[float, float],
    replay: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[Any, FinetuneFit]:
    """(the fine-tuned :class:`~closedloop.models.trained.TrainedModel`, what was done): module docstring."""
    import torch

    from closedloop.models.loop import fit_epochs
    from closedloop.models.trained import TrainedModel, raw_array
    from closedloop.stats.recalibration import fit_recalibration

    y = np.asarray(y).reshape(-1).astype(int)
    if len(np.unique(y)) < 2:
        raise StatsError(f"fine-tuning needs both classes among the labels; all {len(y)} are {int(y[0])}")
    head = getattr(model.network, "head", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise StatsError("fine-tuning needs a binary network with a linear 'head'")
    g = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng([int(seed), 31])
    T = float(model.temperature)
    z0 = model.predict_logits(X).reshape(-1).astype(np.float64) / T
    platt = fit_recalibration(y, 1 / (1 + np.exp(-z0)), "platt", costs=costs)
    net = copy.deepcopy(model.network)
    with torch.no_grad():  # the temperature and the Platt map folded into the head: the starting point
        s, c = platt.slope / T, platt.intercept
        net.head.weight.mul_(s)
        if net.head.bias is None:
            net.head.bias = torch.nn.Parameter(torch.zeros(1))
        net.head.bias.mul_(s).add_(c)
    module = TrainedModel(
        spec=model.spec, network=net, preprocessing=model.preprocessing, problem_type=model.problem_type,
        n_outputs=model.n_outputs, label_names=model.label_names,
    ).raw_module()  # fmt: skip
    for p in module.parameters():
        p.requires_grad_(False)
    params = _trainable(net, spec.scope)
    for p in params:
        p.requires_grad_(True)
    start = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=spec.lr)
    xs = torch.from_numpy(np.ascontiguousarray(raw_array(X)))
    ys = torch.from_numpy(y.astype(np.float32))
    have_replay = replay is not None and spec.replay_weight > 0 and len(replay[1]) > 0
    n_rep = len(y) if have_replay else 0
    module.eval()  # BatchNorm statistics and dropout frozen (module docstring)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    epoch_replay: dict[str, Any] = {"rows": None, "at": 0}  # this epoch's replay rows, the next batch's start

    def draw_replay(epoch: int) -> None:
        if have_replay:
            epoch_replay["rows"] = rng.choice(len(replay[1]), n_rep, replace=len(replay[1]) < n_rep)
        epoch_replay["at"] = 0

    def batch_loss(bi: Any) -> Any:
        loss = bce(module(xs[bi]).reshape(-1), ys[bi])
        b0 = epoch_replay["at"]  # the batch's position in the epoch: its replay rows sit there
        epoch_replay["at"] = b0 + len(bi)
        if epoch_replay["rows"] is not None:
            ri = epoch_replay["rows"][b0 : b0 + spec.batch_size]
            xr = torch.from_numpy(np.ascontiguousarray(raw_array(replay[0][ri])))
            yr = torch.from_numpy(np.asarray(replay[1])[ri].reshape(-1).astype(np.float32))
            loss = loss + spec.replay_weight * bce(module(xr).reshape(-1), yr)
        if spec.pull > 0:
            loss = loss + spec.pull * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start, strict=True))
        return loss

    fit_epochs(  # the recipes' shared loop (closedloop.models.loop)
        len(y), epochs=spec.epochs, batch_size=spec.batch_size, generator=g, optimizer=opt,
        batch_loss=batch_loss, on_epoch=draw_replay,
    )  # fmt: skip
    for p in module.parameters():
        p.requires_grad_(False)
    net.eval()
    change = float(torch.sqrt(sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start, strict=True))))
    threshold = float(costs[0] / (costs[0] + costs[1]))
    tuned = TrainedModel(
        spec=model.spec, network=net, preprocessing=model.preprocessing, problem_type=model.problem_type,
        n_outputs=model.n_outputs, label_names=model.label_names, temperature=1.0, threshold=threshold,
        info={**model.info, "adapted_from": model.info.get("run_id"), "adaptation": spec.name()},
    )  # fmt: skip
    fit = FinetuneFit(
        spec=spec,
        threshold=threshold,
        start_platt=(float(platt.slope), float(platt.intercept)),
        n_fit=len(y),
        n_replay_per_epoch=n_rep,
        trained_parameters=int(sum(p.numel() for p in params)),
        weight_change=change,
    )
    return tuned, fit


def cross_fit(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    spec: FinetuneSpec,
    *,
    costs: tuple[float, float],
    replay: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold logits: for each fold, the network fine-tuned on the other folds scores it."""
    y = np.asarray(y).reshape(-1).astype(int)
    z = np.zeros(len(y))
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        tuned, _ = fine_tune(
            model, X[tr], y[tr], spec, costs=costs, replay=replay, seed=seed + 1000 * (int(f) + 1)
        )
        z[te] = tuned.predict_logits(X[te]).reshape(-1)
    return z
