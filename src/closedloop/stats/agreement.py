"""Agreement between annotators on nominal labels: Cohen's kappa per pair, Fleiss' kappa and
Krippendorff's alpha overall, the between-annotator confusion matrix, each with a percentile
bootstrap interval over items.

Labels come as a matrix ``L`` of shape ``(n_items, n_annotators)`` holding class indices, ``-1``
where an annotator did not label the item.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.agreement import cohen_kappa
    >>> round(cohen_kappa(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]), 2), 3)
    0.5
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from closedloop.stats.errors import StatsError

MISSING = -1


def _check(L: np.ndarray, n_classes: int) -> np.ndarray:
    L = np.asarray(L)
    if L.ndim != 2:
        raise StatsError(f"labels must be a (n_items, n_annotators) matrix, got shape {L.shape}")
    if L.dtype.kind not in "iu":
        raise StatsError(f"labels must be class indices (int), got dtype {L.dtype}")
    if ((L < MISSING) | (n_classes <= L)).any():
        raise StatsError(f"labels must be -1 (missing) or 0..{n_classes - 1}")
    return L.astype(np.int64)


def _kappa_from_counts(C: np.ndarray) -> np.ndarray:
    """Cohen's kappa of confusion matrices ``C`` (..., K, K) (counts or weights)."""
    n = C.sum(axis=(-2, -1))
    po = np.trace(C, axis1=-2, axis2=-1) / n
    pe = (C.sum(axis=-1) * C.sum(axis=-2)).sum(axis=-1) / n**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pe < 1, (po - pe) / (1 - pe), np.nan)


def confusion(a: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]``: items annotator ``a`` called ``i`` and ``b`` called ``j`` (both labeled)."""
    a, b = np.asarray(a), np.asarray(b)
    both = (a != MISSING) & (b != MISSING)
    return np.bincount(a[both] * n_classes + b[both], minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def cohen_kappa(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa of two annotators on the items both labeled."""
    return float(_kappa_from_counts(confusion(a, b, n_classes).astype(float)))


def _fleiss(counts: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Fleiss' kappa (items with varying numbers of raters, >= 2) for weight rows ``W`` (B, N)."""
    n_i = counts.sum(axis=1)
    P_i = ((counts**2).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    P_bar = (W * P_i).sum(axis=1) / W.sum(axis=1)  # each row of W weights the items (a bootstrap draw)
    p_j = (W @ counts) / (W @ n_i)[:, None]
    P_e = (p_j**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(P_e < 1, (P_bar - P_e) / (1 - P_e), np.nan)


def _alpha(counts: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Krippendorff's alpha (nominal) from per-item category counts, items weighted by rows of ``W``."""
    n_i = counts.sum(axis=1)
    # coincidence matrix contribution of each item: (n_ck n_ck' - [c == k] n_ck) / (n_i - 1)
    pair = counts[:, :, None] * counts[:, None, :]
    K = counts.shape[1]
    pair[:, np.arange(K), np.arange(K)] -= counts
    pair = pair / (n_i - 1)[:, None, None]
    O = np.einsum("bi,ijk->bjk", W, pair)  # noqa: E741 - O is the coincidence matrix's usual name
    n_c = O.sum(axis=2)
    n = n_c.sum(axis=1)
    d_o = n - np.trace(O, axis1=1, axis2=2)
    d_e = (n**2 - (n_c**2).sum(axis=1)) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d_e > 0, 1 - d_o / d_e, np.nan)


def _boot_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([int(seed), 0xA9EE])
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _ci(dist: np.ndarray) -> tuple[float, float]:
    d = dist[np.isfinite(dist)]
    if not len(d):
        return (float("nan"), float("nan"))
    return (float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975)))


@dataclass(frozen=True)
class Estimate:
    value: float
    ci95: tuple[float, float]
    n: int
    """Items it was computed on."""


def kappa_with_ci(
    a: np.ndarray, b: np.ndarray, n_classes: int, n_boot: int = 1000, seed: int = 0
) -> Estimate:
    """Cohen's kappa of two annotators with a percentile bootstrap interval over their shared items."""
    a, b = np.asarray(a), np.asarray(b)
    both = (a != MISSING) & (b != MISSING)
    a, b = a[both], b[both]
    n = len(a)
    if n < 2:
        raise StatsError(f"Cohen's kappa needs at least 2 items labeled by both annotators, got {n}")
    onehot = np.zeros((n, n_classes * n_classes))
    onehot[np.arange(n), a * n_classes + b] = 1.0
    W = _boot_weights(n, n_boot, seed)
    C = (W @ onehot).reshape(n_boot, n_classes, n_classes)
    value = cohen_kappa(a, b, n_classes)
    return Estimate(value, _ci(_kappa_from_counts(C)), n)


def category_counts(L: np.ndarray, n_classes: int) -> np.ndarray:
    """Per item, how many annotators chose each class: ``(n_items, n_classes)``."""
    L = _check(L, n_classes)
    out = np.zeros((L.shape[0], n_classes), dtype=np.int64)
    for j in range(L.shape[1]):
        col = L[:, j]
        ok = col != MISSING
        np.add.at(out, (np.flatnonzero(ok), col[ok]), 1)
    return out


def overall_with_ci(
    L: np.ndarray, n_classes: int, n_boot: int = 1000, seed: int = 0
) -> tuple[Estimate, Estimate]:
    """(Fleiss' kappa, Krippendorff's alpha) over the items with at least two labels, each with a
    percentile bootstrap interval over those items."""
    counts = category_counts(L, n_classes)
    multi = counts.sum(axis=1) >= 2
    c = counts[multi].astype(float)
    n = len(c)
    if n < 2:
        raise StatsError(f"overall agreement needs at least 2 items with two or more labels, got {n}")
    ones = np.ones((1, n))
    W = _boot_weights(n, n_boot, seed)
    fleiss = Estimate(float(_fleiss(c, ones)[0]), _ci(_fleiss(c, W)), n)
    alpha = Estimate(float(_alpha(c, ones)[0]), _ci(_alpha(c, W)), n)
    return fleiss, alpha


def disagreement(L: np.ndarray, n_classes: int) -> np.ndarray:
    """Per item: 1 - the share of its labels on the most chosen class (0 = unanimous; NaN with < 2 labels)."""
    counts = category_counts(L, n_classes)
    n_i = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_i >= 2, 1 - counts.max(axis=1) / n_i, np.nan)


def population_kappa(prior: np.ndarray, C1: np.ndarray, C2: np.ndarray) -> float:
    """The kappa two independent annotators reach in expectation: class prior ``prior`` (K,) and
    row-stochastic confusion matrices ``C[true, given]`` (for simulations: the truth an interval
    should cover)."""
    prior = np.asarray(prior, dtype=float)
    joint = np.einsum("t,ti,tj->ij", prior, C1, C2)
    return float(_kappa_from_counts(joint))
