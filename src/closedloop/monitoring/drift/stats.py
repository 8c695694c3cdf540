"""Two-sample statistics the drift tests share (vectorized KS, chi-squared on counts, PSI, Holm,
the Gaussian-kernel MMD with a permutation test)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special
from scipy import stats as sps

_BLAS: Any = None


def single_threaded_blas() -> Any:
    """Context manager limiting BLAS to one thread. The tests' matrix products are small (a few
    hundred rows), where a second BLAS thread gains little on a quiet machine and loses several-fold
    when the cores are shared (threads spin waiting for each other)."""
    global _BLAS
    try:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        return _BLAS.limit(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing or unable to inspect the libraries: leave BLAS alone
        import contextlib

        return contextlib.nullcontext()


def ks_columns(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS statistic and asymptotic p-value for every column at once.

    Columns without missing values are done in one vectorized pass (ties handled by evaluating the
    ECDF difference only at the last of equal values); columns with NaN drop them one by one.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim == 1:
        A, B = A[:, None], B[:, None]
    F = A.shape[1]
    D = np.zeros(F)
    en = np.zeros(F)
    finite = np.isfinite(A).all(axis=0) & np.isfinite(B).all(axis=0)
    cols = np.flatnonzero(finite)
    if len(cols):
        n, m = len(A), len(B)
        Z = np.concatenate([A[:, cols], B[:, cols]])
        order = np.argsort(Z, axis=0, kind="stable")
        zs = np.take_along_axis(Z, order, axis=0)
        step = np.where(order < n, 1.0 / n, -1.0 / m)
        diff = np.cumsum(step, axis=0)
        last = np.ones_like(zs, dtype=bool)
        last[:-1] = zs[1:] != zs[:-1]
        D[cols] = np.abs(np.where(last, diff, 0.0)).max(axis=0)
        en[cols] = n * m / (n + m)
    for j in np.flatnonzero(~finite):
        a = A[:, j][np.isfinite(A[:, j])]
        b = B[:, j][np.isfinite(B[:, j])]
        if len(a) >= 2 and len(b) >= 2:
            Dj, _ = ks_columns(a, b)
            D[j] = Dj[0]
            en[j] = len(a) * len(b) / (len(a) + len(b))
    with np.errstate(invalid="ignore"):
        p = np.where(en > 0, special.kolmogorov(np.sqrt(en) * D), 1.0)
    return D, np.clip(p, 0.0, 1.0)


def ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    D, p = ks_columns(a, b)
    return float(D[0]), float(p[0])


def chi2_counts(ref_codes: np.ndarray, win_codes: np.ndarray) -> tuple[float, float]:
    ref_codes = ref_codes[np.isfinite(ref_codes)].astype(int)
    win_codes = win_codes[np.isfinite(win_codes)].astype(int)
    if len(ref_codes) == 0 or len(win_codes) == 0:
        return 0.0, 1.0
    k = int(max(ref_codes.max(initial=0), win_codes.max(initial=0))) + 1
    table = np.stack([np.bincount(ref_codes, minlength=k), np.bincount(win_codes, minlength=k)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    chi2, p, _, _ = sps.chi2_contingency(table, correction=False)
    return float(chi2), float(p)


def psi(ref: np.ndarray, win: np.ndarray, bins: int = 10) -> float:
    """Population stability index on reference-quantile bins (a common effect size: >0.25 is large)."""
    ref = ref[np.isfinite(ref)]
    win = win[np.isfinite(win)]
    if len(ref) == 0 or len(win) == 0:
        return 0.0
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    w = np.bincount(np.searchsorted(edges, win, side="right"), minlength=len(edges) + 1) / len(win)
    r = np.clip(r, 1e-4, None)
    w = np.clip(w, 1e-4, None)
    return float(np.sum((w - r) * np.log(w / r)))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control without independence)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0)


def median_bandwidth(X: np.ndarray, max_n: int = 500, seed: int = 0) -> float:
    """Median pairwise distance (the median heuristic for the Gaussian kernel)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) > max_n:
        X = X[np.random.default_rng(seed).choice(len(X), max_n, replace=False)]
    d = np.sqrt(sqdist(X, X))
    vals = d[np.triu_indices(len(X), 1)]
    med = float(np.median(vals)) if len(vals) else 1.0
    return med if med > 0 else 1.0


def gaussian_kernel(Z: np.ndarray, bandwidth: float) -> np.ndarray:
    """``exp(-|z_i - z_j|^2 / (2 bandwidth^2))`` over the rows of ``Z`` (float32)."""
    Z = np.asarray(Z, dtype=np.float32)
    return np.exp(-sqdist(Z, Z) / np.float32(2.0 * bandwidth**2))


def mmd_permutation_test(
    X: np.ndarray,
    Y: np.ndarray,
    bandwidth: float,
    permutations: int,
    rng: np.random.Generator,
    K: np.ndarray | None = None,
) -> tuple[float, float]:
    """Biased MMD^2 with a Gaussian kernel and a vectorized permutation test: (statistic, p-value).

    All permutations are evaluated at once as quadratic forms ``w^T K w`` over the pooled kernel matrix,
    so the cost is one (P x N) @ (N x N) product. ``K``: the kernel over ``[X; Y]`` when already known.
    """
    n, m = len(X), len(Y)
    if K is None:
        K = gaussian_kernel(np.vstack([X, Y]), bandwidth)
    w_obs = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)]).astype(np.float32)
    W = np.vstack([w_obs[None, :], rng.permuted(np.tile(w_obs, (permutations, 1)), axis=1)])
    stats_ = ((W @ K) * W).sum(axis=1)
    obs = float(stats_[0])
    p = (1.0 + float(np.sum(stats_[1:] >= obs - 1e-12))) / (1.0 + permutations)
    return obs, p
