"""torchvision ResNet-18/50 adapted to small images.

For inputs <= 64 px the stem is CIFAR-style (3x3 conv, stride 1, no max-pool), as in MedMNIST v2's
"(28)" rows; larger inputs keep the ImageNet stem. ``pretrained=True`` loads torchvision's ImageNet
weights (needs them in the torch hub cache: nothing is downloaded on machines without network) and
adapts the first convolution to the channel count (grayscale: the RGB kernels summed).
"""

from __future__ import annotations

import torch
from torch import nn

from closedloop.core.errors import ConfigError
from closedloop.models.registry import register_model


class ResNetNet(nn.Module):
    """Wraps a torchvision ResNet: ``features`` = pooled trunk, ``head`` = the new classifier."""

    def __init__(self, trunk: nn.Module, n_features: int, n_logits: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(n_features, n_logits)
        self.n_features = n_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def _build(
    arch: str,
    input_shape: list[int],
    n_logits: int,
    *,
    pretrained: bool = False,
    dropout: float = 0.0,
    cifar_stem: bool | None = None,
) -> ResNetNet:
    import torchvision

    if len(input_shape) != 3:
        raise ValueError(f"{arch} needs image inputs (H, W, C), got input shape {input_shape}")
    h, w, c = input_shape
    ctor = getattr(torchvision.models, arch)
    weights = None
    if pretrained:
        weights = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}[arch]
        weights = getattr(torchvision.models, weights).DEFAULT
    try:
        net = ctor(weights=weights)
    except Exception as exc:  # no network / no cached weights
        raise ConfigError(
            f"model.params.pretrained: cannot load ImageNet weights for {arch} ({type(exc).__name__}: {exc}). "
            "Put the file in the torch hub cache ($TORCH_HOME/hub/checkpoints) or set pretrained: false."
        ) from None
    old = net.conv1
    small = min(h, w) <= 64 if cifar_stem is None else cifar_stem
    if small:
        conv = nn.Conv2d(c, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    else:
        conv = nn.Conv2d(c, 64, 7, 2, 3, bias=False)
    if pretrained:
        with torch.no_grad():
            src = old.weight  # (64, 3, 7, 7)
            if small:
                src = nn.functional.interpolate(src, size=(3, 3), mode="bilinear", align_corners=False)
            src = src.sum(1, keepdim=True).repeat(1, c, 1, 1) / c if c != 3 else src
            conv.weight.copy_(src)
    net.conv1 = conv
    n_features = net.fc.in_features
    net.fc = nn.Identity()
    return ResNetNet(net, n_features, n_logits, dropout)


@register_model("resnet18")
def build_resnet18(input_shape: list[int], n_logits: int, **params: object) -> ResNetNet:
    """Params: pretrained (bool), dropout, cifar_stem (default: input <= 64 px)."""
    return _build("resnet18", input_shape, n_logits, **params)  # type: ignore[arg-type]


@register_model("resnet50")
def build_resnet50(input_shape: list[int], n_logits: int, **params: object) -> ResNetNet:
    """Params: pretrained (bool), dropout, cifar_stem (default: input <= 64 px)."""
    return _build("resnet50", input_shape, n_logits, **params)  # type: ignore[arg-type]
