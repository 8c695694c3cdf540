"""Batched augmentation on tensors: one random draw per sample, no per-sample Python.

Geometric changes (shift, flip, rotation, scale) are combined into one affine matrix per sample and
applied with a single ``grid_sample`` call; intensity jitter is a per-sample gain and offset; mixup
and cutmix mix a batch with a permutation of itself. (``torchvision.transforms.v2`` draws one set of
parameters per call, i.e. per batch, which is why the per-sample version lives here.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from closedloop.core.config import StageConfig


class AugmentSettings(StageConfig):
    """Augmentation amplitudes at strength 1 (the ``train.augment`` config section; tuning scales them
    by ``strength`` in [0, 1]). Declared once: :class:`AugmentParams` adds the two tuned values."""

    shift: float = Field(0.1, ge=0, le=0.5)
    """Largest translation as a fraction of the image side."""
    hflip: bool = True
    """Random horizontal flips (turn off when left/right matters)."""
    vflip: bool = False
    rotate: float = Field(10.0, ge=0, le=180)
    """Largest rotation in degrees."""
    scale: float = Field(0.1, ge=0, le=0.5)
    """Largest relative zoom in or out."""
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    cutmix: float = Field(0.0, ge=0)
    """CutMix Beta(alpha, alpha) parameter; 0 disables it (mixup and cutmix alternate when both are on).
    Mixup is a tuning knob."""


class AugmentParams(AugmentSettings):
    """The settings plus the tuned values: every amplitude is multiplied by ``strength``."""

    strength: float = 0.0
    mixup: float = 0.0
    """Mixup Beta(alpha, alpha) parameter; 0 disables it."""

    @property
    def geometric(self) -> bool:
        s = self.strength
        return s > 0 and (self.shift > 0 or self.hflip or self.vflip or self.rotate > 0 or self.scale > 0)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device="cpu").to(device) * (hi - lo) + lo


def augment_images(x: torch.Tensor, p: AugmentParams, g: torch.Generator) -> torch.Tensor:
    """``x``: float NCHW in [0, 1]. Returns an augmented copy (same shape)."""
    if p.strength <= 0:
        return x
    n, dev, s = x.shape[0], x.device, p.strength
    if p.geometric:
        angle = _uniform(n, -1, 1, g, dev) * math.radians(p.rotate * s)
        zoom = 1.0 + _uniform(n, -1, 1, g, dev) * p.scale * s
        sx = torch.ones(n, device=dev)
        sy = torch.ones(n, device=dev)
        if p.hflip:
            sx = torch.where(_uniform(n, 0, 1, g, dev) < 0.5 * min(1.0, 2 * s), -sx, sx)
        if p.vflip:
            sy = torch.where(_uniform(n, 0, 1, g, dev) < 0.5 * min(1.0, 2 * s), -sy, sy)
        tx = _uniform(n, -1, 1, g, dev) * 2 * p.shift * s  # grid coordinates span 2 per side
        ty = _uniform(n, -1, 1, g, dev) * 2 * p.shift * s
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos * sx, -sin, tx], 1), torch.stack([sin, cos * sy, ty], 1)], 1
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if p.brightness > 0 or p.contrast > 0:
        gain = 1.0 + _uniform(n, -1, 1, g, dev) * p.contrast * s
        offset = _uniform(n, -1, 1, g, dev) * p.brightness * s
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * gain.view(-1, 1, 1, 1) + mean + offset.view(-1, 1, 1, 1)).clamp_(0, 1)
    return x


def mix_batch(
    x: torch.Tensor, t: torch.Tensor, p: AugmentParams, g: torch.Generator, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup / CutMix on a batch: ``t`` are soft targets (N, K); returns mixed inputs and targets."""
    use_mix, use_cut = p.mixup > 0, p.cutmix > 0 and x.dim() == 4
    if not (use_mix or use_cut):
        return x, t
    cut = use_cut and (not use_mix or step % 2 == 1)
    alpha = p.cutmix if cut else p.mixup
    lam = _beta(alpha, g)
    perm = torch.randperm(x.shape[0], generator=g).to(x.device)
    if cut:
        h, w = x.shape[-2:]
        rh, rw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy = int(torch.randint(0, h, (1,), generator=g))
        cx = int(torch.randint(0, w, (1,), generator=g))
        y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
        x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / float(h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * t + (1 - lam) * t[perm]


def _beta(alpha: float, g: torch.Generator) -> float:
    # Beta(a, a) from two Gamma draws, using the explicit generator (deterministic, resumable)
    a = torch._standard_gamma(torch.full((2,), float(alpha)), generator=g)
    return float(a[0] / a.sum())
