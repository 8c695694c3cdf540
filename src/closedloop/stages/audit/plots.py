"""Matplotlib (Agg) helpers for audit figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def new_figure(w: float, h: float) -> tuple[Any, Any]:
    return plt.subplots(figsize=(w, h))


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def montage(
    images: list[np.ndarray], titles: list[str], rows: list[str], ncols: int, path: Path, title: str
) -> None:
    """A grid of images: ``len(rows)`` rows of ``ncols``; empty cells stay blank."""
    nrows = max(1, len(rows))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols + 1.2, 1.25 * nrows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (img, t) in enumerate(zip(images, titles, strict=True)):
        r, c = divmod(k, ncols)
        if r >= nrows:
            break
        ax = axes[r][c]
        im = img[..., 0] if img.shape[-1] == 1 else img
        ax.imshow(im, cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255)
        ax.set_title(t, fontsize=7)
    for r, label in enumerate(rows):
        axes[r][0].text(
            -0.15, 0.5, label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=7
        )
    fig.suptitle(title, fontsize=9)
    save(fig, path)
