"""A small VGG-style CNN for 28-224 px images, grown by ``width`` and ``depth``.

Each stage is ``blocks`` x (conv3x3 - BatchNorm - ReLU) followed by a 2x2 max-pool; the channel count
doubles per stage starting at ``width``. Global average pooling gives the ``(N, D)`` features.
"""

from __future__ import annotations

import torch
from torch import nn

from closedloop.models.registry import register_model


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """``features(x) -> (N, D)``, ``head: nn.Linear``; input NCHW normalized floats."""

    def __init__(
        self,
        in_channels: int,
        n_logits: int,
        *,
        width: int = 16,
        depth: int = 3,
        blocks: int = 2,
        dropout: float = 0.0,
        max_channels: int = 512,
        min_size: int = 3,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1 or blocks < 1:
            raise ValueError(
                f"small_cnn: width, depth and blocks must be >= 1 (got {width}, {depth}, {blocks})"
            )
        layers: list[nn.Module] = []
        cin, size = in_channels, image_size
        for stage in range(depth):
            cout = min(width * 2**stage, max_channels)
            for b in range(blocks):
                layers.append(_conv(cin if b == 0 else cout, cout))
            cin = cout
            if size // 2 >= min_size:  # stop pooling once the map is tiny; deeper stages still add capacity
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, n_logits)
        self.n_features = cin

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


@register_model("small_cnn", ladder=[{"width": 8}, {"width": 16}, {"width": 32}, {"width": 48}])
def build_small_cnn(input_shape: list[int], n_logits: int, **params: object) -> SmallCNN:
    """``input_shape`` is (H, W, C). Params: width, depth, blocks, dropout."""
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn needs image inputs (H, W, C), got input shape {input_shape}")
    h, w, c = input_shape
    return SmallCNN(c, n_logits, image_size=min(h, w), **params)  # type: ignore[arg-type]
