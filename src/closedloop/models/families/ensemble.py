"""An ensemble of seeds as one network of the standard shape: ``features`` concatenates the members'
features and ``head`` averages their logits exactly (its weight is the members' heads side by side,
divided by the number of members; its bias their mean)."""

from __future__ import annotations

import torch
from torch import nn

from closedloop.models.registry import register_model


class EnsembleNet(nn.Module):
    def __init__(self, members: list[nn.Module], n_logits: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        dims = [m.head.in_features for m in members]
        self.head = nn.Linear(sum(dims), n_logits)
        with torch.no_grad():
            self.head.weight.copy_(torch.cat([m.head.weight for m in members], dim=1) / len(members))
            self.head.bias.copy_(torch.stack([m.head.bias for m in members]).mean(0))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.features(x) for m in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("ensemble")
def build_ensemble(input_shape: list[int], n_logits: int, *, member: dict, n: int) -> EnsembleNet:
    """Params: member = {family, params} of each member, n = number of members."""
    from closedloop.models.registry import build_network
    from closedloop.models.trained import ModelSpec

    spec = ModelSpec.model_validate(member)
    return EnsembleNet([build_network(spec, input_shape, n_logits) for _ in range(int(n))], n_logits)
