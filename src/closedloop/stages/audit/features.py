"""Cheap representations shared by several checks (computed once per audit, in chunks).

* :func:`dup_embedding` - per-image (or per-row) standardized, downsampled vectors projected on a
  PCA fitted to train: robust to brightness/contrast changes and small noise; used for near-duplicates.
* :func:`model_features` - inputs for quick models (PCA of pixels, or imputed standardized columns).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from closedloop.data.bundle import Split

CHUNK = 8192


def downsample(X: np.ndarray, max_side: int = 16) -> np.ndarray:
    """(N,H,W,C) uint8 -> (N, h*w*C) float32 block means with h, w <= max_side."""
    n, h, w, c = X.shape
    f = max(1, math.ceil(max(h, w) / max_side))
    hh, ww = (h // f) * f, (w // f) * f
    out = np.empty((n, (hh // f) * (ww // f) * c), np.float32)
    for s in range(0, n, CHUNK):
        blk = X[s : s + CHUNK, :hh, :ww].astype(np.float32)
        blk = blk.reshape(len(blk), hh // f, f, ww // f, f, c).mean(axis=(2, 4))
        out[s : s + CHUNK] = blk.reshape(len(blk), -1)
    return out


def _standardize_rows(V: np.ndarray) -> np.ndarray:
    V = V - V.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(V, axis=1, keepdims=True)
    return V / np.maximum(norm, 1e-6)


def _raw_rows(
    split: Split, kind: str, col_center: np.ndarray | None, col_scale: np.ndarray | None, max_side: int = 16
) -> np.ndarray:
    if kind == "images":
        return _standardize_rows(downsample(split.X, max_side))  # type: ignore[arg-type]
    F = split.features()
    F = np.where(np.isnan(F), col_center, F) if col_center is not None else np.nan_to_num(F)
    return ((F - col_center) / col_scale).astype(np.float32) if col_scale is not None else F


def table_stats(train: Split) -> tuple[np.ndarray, np.ndarray]:
    import warnings

    F = train.features()
    with warnings.catch_warnings():  # all-missing columns are reported by feature_quality
        warnings.simplefilter("ignore", RuntimeWarning)
        return _table_stats(F)


def _table_stats(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    med = np.nanmedian(F, axis=0) if F.size else np.zeros(F.shape[1], np.float32)
    med = np.nan_to_num(med).astype(np.float32)
    sd = np.nanstd(F, axis=0) if F.size else np.ones(F.shape[1], np.float32)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0).astype(np.float32)
    return med, sd


def _fit_pca(V: np.ndarray, n_components: int, rng: np.random.Generator, max_fit: int = 20000) -> PCA | None:
    k = min(n_components, V.shape[1], max(1, len(V) - 1))
    if k >= V.shape[1] or len(V) < 3:
        return None
    idx = rng.choice(len(V), min(len(V), max_fit), replace=False)
    return PCA(n_components=k, svd_solver="randomized", random_state=0).fit(V[idx])


def _project(pca: PCA | None, V: np.ndarray) -> np.ndarray:
    if pca is None:
        return V.astype(np.float32)
    out = np.empty((len(V), pca.n_components_), np.float32)
    for s in range(0, len(V), CHUNK):
        out[s : s + CHUNK] = pca.transform(V[s : s + CHUNK])
    return out


def dup_embedding(
    ctx: Any, splits: dict[str, Split], kind: str, n_components: int = 32, max_side: int = 16
) -> dict[str, np.ndarray]:
    """Embeddings for near-duplicate search, one array per split (cached per audit)."""

    def build() -> dict[str, Any]:
        center = scale = None
        if kind == "table":
            center, scale = table_stats(splits["train"])
        return {"center": center, "scale": scale, "emb": {}, "pca": None, "fitted": False}

    state = ctx.cached(f"dup_embedding/{n_components}/{max_side}", build)
    for name, split in splits.items():
        if name in state["emb"]:
            continue
        V = _raw_rows(split, kind, state["center"], state["scale"], max_side)
        if not state["fitted"]:
            base = (
                V
                if name == "train"
                else _raw_rows(splits["train"], kind, state["center"], state["scale"], max_side)
            )
            state["pca"] = (
                _fit_pca(base, n_components, np.random.default_rng(0)) if kind == "images" else None
            )
            state["fitted"] = True
        state["emb"][name] = _project(state["pca"], V)
    return {k: state["emb"][k] for k in splits}


def model_features(
    ctx: Any, splits: dict[str, Split], kind: str, n_components: int = 50
) -> dict[str, np.ndarray]:
    """Standardized features for quick models: PCA of pixels for images, imputed columns for tables."""

    def build() -> dict[str, Any]:
        train = splits["train"]
        if kind == "images":
            V = downsample(train.X, max_side=32) / 255.0  # type: ignore[arg-type]
            pca = _fit_pca(V, n_components, np.random.default_rng(0))
            Z = _project(pca, V)
            mu, sd = Z.mean(0), Z.std(0) + 1e-6
            return {"pca": pca, "mu": mu, "sd": sd, "out": {}}
        med, sd = table_stats(train)
        return {"med": med, "sd": sd, "out": {}}

    state = ctx.cached(f"model_features/{n_components}", build)
    for name, split in splits.items():
        if name in state["out"]:
            continue
        if kind == "images":
            Z = _project(state["pca"], downsample(split.X, max_side=32) / 255.0)  # type: ignore[arg-type]
            state["out"][name] = ((Z - state["mu"]) / state["sd"]).astype(np.float32)
        else:
            F = split.features()
            F = np.where(np.isnan(F), state["med"], F)
            state["out"][name] = ((F - state["med"]) / state["sd"]).astype(np.float32)
    return {k: state["out"][k] for k in splits}


def class_labels(y: np.ndarray) -> np.ndarray | None:
    """Integer class labels for single-label classification, else None."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        return None
    if y.dtype.kind == "f" and not np.all(np.mod(y[np.isfinite(y)], 1) == 0):
        return None
    return y.astype(np.int64)
