"""Multiple comparisons: Holm's step-down adjustment.

Use it over the hypotheses actually tested on the same data (several metrics or baselines compared
on test; many features tested in one monitoring window). It is not the correction for a search over
configurations on validation: the test split never saw that search (see
:mod:`closedloop.stats.selection` for the search's own optimism).

Example:
    >>> from closedloop.stats.multiple import holm
    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from closedloop.stats.errors import StatsError


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (controls the family-wise error rate)."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise StatsError(f"p-values must be finite numbers in [0, 1], got {p.tolist()[:10]}")
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="mergesort")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()
