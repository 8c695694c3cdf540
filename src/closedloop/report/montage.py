"""A grid of images with a title above each, in one picture: the audit's samples, duplicate pairs and
suspected label errors, and the export's most confident errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def montage(
    images: list[np.ndarray], titles: list[str], rows: list[str], ncols: int, path: Path, title: str
) -> Path:
    """A grid of images: ``len(rows)`` rows of ``ncols`` (a row's label left of it, "" for none); empty
    cells stay blank; ``title`` above the grid ("" for none). ``images`` are (H, W, C) pixels in 0-255.

    The tiles are pasted into one picture drawn by one ``imshow``: an Axes per tile made a montage of
    60 tiny images cost ~4 s of matplotlib layout, half the audit of a small image set.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = max(1, len(rows))
    shown = list(zip(images, titles, strict=True))[: nrows * ncols]
    H = max((img.shape[0] for img, _ in shown), default=1)
    W = max((img.shape[1] for img, _ in shown), default=1)
    lines = max((t.count("\n") + 1 for _, t in shown if t), default=0)
    band, gap = int(np.ceil(0.22 * H * lines)), max(1, W // 8)  # room for the titles; between tiles
    cell_h, cell_w = band + H + gap, W + gap
    canvas = np.full((nrows * cell_h, ncols * cell_w, 3), 255, dtype=np.uint8)
    left = 1.2 if any(rows) else 0.1  # inches for the row labels
    top = 0.5 if title else 0.1  # inches for the title
    width = 1.2 * ncols  # inches for the grid: 1.2 a tile, titles included
    height = width * canvas.shape[0] / canvas.shape[1]
    fig = plt.figure(figsize=(left + width + 0.1, height + top + 0.1))
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left / fw, 0.1 / fh, width / fw, height / fh))
    for k, (img, t) in enumerate(shown):
        r, c = divmod(k, ncols)
        y0, x0 = r * cell_h + band, c * cell_w
        tile = np.clip(np.asarray(img, dtype=np.float64), 0, 255).astype(np.uint8)
        if tile.ndim == 2:
            tile = tile[..., None]
        rgb = np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile[..., :3]
        canvas[y0 : y0 + rgb.shape[0], x0 : x0 + rgb.shape[1]] = rgb
        if t:
            ax.text(x0 + W / 2, y0 - 0.5, t, ha="center", va="bottom", fontsize=7)
    for r, label in enumerate(rows):
        if label:
            ax.text(-gap, r * cell_h + band + H / 2, label, ha="right", va="center", fontsize=7)
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
