"""Global magnitude pruning (``torch.nn.utils.prune``) of conv and linear weights, then a short fine-tune."""

from __future__ import annotations

import copy

import numpy as np
import torch.nn.utils.prune as tprune
from torch import nn


def prune_network(network: nn.Module, amount: float) -> tuple[nn.Module, float]:
    """A pruned copy of ``network`` (masks kept so a fine-tune keeps zeros at zero) and its sparsity."""
    net = copy.deepcopy(network)
    targets = [(m, "weight") for m in net.modules() if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear)]
    if not targets:
        return net, 0.0
    tprune.global_unstructured(targets, pruning_method=tprune.L1Unstructured, amount=amount)
    return net, sparsity(targets)


def finalize(network: nn.Module) -> nn.Module:
    """Make the pruning permanent (weights with zeros, no masks or hooks) so the network exports."""
    for m in network.modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear) and tprune.is_pruned(m):
            tprune.remove(m, "weight")
    return network


def sparsity(targets: list[tuple[nn.Module, str]]) -> float:
    zeros = total = 0
    for m, name in targets:
        w = getattr(m, name).detach().numpy()
        zeros += int(np.sum(w == 0))
        total += w.size
    return zeros / max(total, 1)
