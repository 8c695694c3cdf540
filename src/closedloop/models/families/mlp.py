"""A multilayer perceptron for tables (or flattened small images), grown by ``width`` and ``depth``."""

from __future__ import annotations

import math

import torch
from torch import nn

from closedloop.models.registry import register_model


class MLP(nn.Module):
    """``depth`` x (Linear - BatchNorm - ReLU - Dropout); ``features`` is the last hidden layer."""

    def __init__(
        self,
        n_in: int,
        n_logits: int,
        *,
        width: int = 128,
        depth: int = 2,
        dropout: float = 0.0,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"mlp: width and depth must be >= 1 (got {width}, {depth})")
        layers: list[nn.Module] = [nn.Flatten()]
        cin = n_in
        for _ in range(depth):
            layers += [
                nn.Linear(cin, width),
                nn.BatchNorm1d(width) if batchnorm else nn.Identity(),
                nn.ReLU(inplace=True),
            ]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            cin = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, n_logits)
        self.n_features = cin

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(
    "mlp",
    ladder=[
        {"width": 32, "depth": 1},
        {"width": 128, "depth": 2},
        {"width": 512, "depth": 2},
        {"width": 1024, "depth": 3},
    ],
)
def build_mlp(input_shape: list[int], n_logits: int, **params: object) -> MLP:
    """``input_shape`` is (F,) for tables or (H, W, C) for images (flattened). Params: width, depth, dropout."""
    return MLP(int(math.prod(input_shape)), n_logits, **params)  # type: ignore[arg-type]
