"""Per-sample summary features the univariate drift tests compare.

Images: intensity statistics that react to acquisition changes (brightness, contrast, gamma, noise,
blur, compression) plus a coarse 4x4 grid of mean intensities (reacts to rotation, cropping and
framing). Compression is caught by ``blockiness``: JPEG-like codecs quantize 8x8 blocks
independently, so intensity steps across block boundaries grow relative to steps inside blocks (the
classic no-reference blockiness measure); the other statistics barely move at moderate quality. Tables: the columns themselves (categoricals as codes, missing as NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

GRID = 4
IMAGE_STATS = (
    "mean",
    "std",
    "p05",
    "p50",
    "p95",
    "sharpness",
    "high_freq",
    "blockiness",
    "dark_frac",
    "bright_frac",
)
BLOCK = 8
"""Block size of JPEG-like codecs (the DCT grid starts at the top-left pixel)."""


def image_feature_names(n_channels: int) -> list[str]:
    names = [f"intensity_{s}" for s in IMAGE_STATS]
    if n_channels > 1:
        names += [f"channel{c}_mean" for c in range(n_channels)]
    names += [f"grid_{i}_{j}_mean" for i in range(GRID) for j in range(GRID)]
    return names


def image_features(X: np.ndarray) -> np.ndarray:
    """``(N, H, W, C)`` pixel values in [0, 255] -> ``(N, F)`` float32 (see :func:`image_feature_names`)."""
    x = np.asarray(X, dtype=np.float32)
    n, h, w, c = x.shape
    gray = x.mean(axis=3) if c > 1 else x[..., 0]
    flat = gray.reshape(n, -1)
    q = np.percentile(flat, [5, 50, 95], axis=1) if n else np.zeros((3, 0), np.float32)
    dx = np.abs(np.diff(gray, axis=2)).mean(axis=(1, 2)) if w > 1 else np.zeros(n, np.float32)
    dy = np.abs(np.diff(gray, axis=1)).mean(axis=(1, 2)) if h > 1 else np.zeros(n, np.float32)
    if h > 2 and w > 2:
        # discrete Laplacian: pixel noise raises it, blur lowers it
        lap = (
            4 * gray[:, 1:-1, 1:-1]
            - gray[:, :-2, 1:-1]
            - gray[:, 2:, 1:-1]
            - gray[:, 1:-1, :-2]
            - gray[:, 1:-1, 2:]
        )
        high = np.abs(lap).mean(axis=(1, 2))
    else:
        high = np.zeros(n, np.float32)
    cols = [
        flat.mean(axis=1),
        flat.std(axis=1),
        q[0],
        q[1],
        q[2],
        dx + dy,
        high,
        blockiness(gray),
        (flat < 16).mean(axis=1),
        (flat > 239).mean(axis=1),
    ]
    if c > 1:
        cols += [x[..., k].mean(axis=(1, 2)) for k in range(c)]
    hs = np.linspace(0, h, GRID + 1).astype(int)
    ws = np.linspace(0, w, GRID + 1).astype(int)
    for i in range(GRID):
        for j in range(GRID):
            block = gray[:, hs[i] : max(hs[i + 1], hs[i] + 1), ws[j] : max(ws[j + 1], ws[j] + 1)]
            cols.append(block.mean(axis=(1, 2)))
    return np.stack(cols, axis=1).astype(np.float32)


def blockiness(gray: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Mean absolute step across ``block``-pixel boundaries over the mean step inside blocks (plus one
    grey level, so flat images stay finite): about 1 for natural images, larger after block coding.
    ``(N, H, W)`` -> ``(N,)``; 0 when the image is too small to hold a boundary."""
    n, h, w = gray.shape
    across, within = np.zeros(n, np.float32), np.zeros(n, np.float32)
    parts = 0
    for axis, size in ((2, w), (1, h)):
        if size <= block:
            continue
        d = np.abs(np.diff(gray, axis=axis))
        edge = np.zeros(size - 1, bool)
        edge[block - 1 :: block] = True
        sel = (slice(None), slice(None), edge) if axis == 2 else (slice(None), edge, slice(None))
        rest = (slice(None), slice(None), ~edge) if axis == 2 else (slice(None), ~edge, slice(None))
        across += d[sel].mean(axis=(1, 2))
        within += d[rest].mean(axis=(1, 2))
        parts += 1
    if parts == 0:
        return np.zeros(n, np.float32)
    return (across / parts) / (within / parts + 1.0)


def table_features(df: pd.DataFrame, columns: list[str], categories: dict[str, list[Any]]) -> np.ndarray:
    """Columns in profile order as float32; categoricals as codes of the reference categories
    (an unseen category becomes code ``len(categories)``, so it shows up in the chi-squared test)."""
    out = []
    for name in columns:
        col = df[name]
        if name in categories:
            cats = categories[name]
            index = {str(v): i for i, v in enumerate(cats)}
            vals = col.astype(object).to_numpy()
            codes = np.array(
                [np.nan if _missing(v) else index.get(str(v), len(cats)) for v in vals], dtype=np.float32
            )
            out.append(codes)
        else:
            out.append(pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan))
    return np.stack(out, axis=1) if out else np.zeros((len(df), 0), np.float32)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA
