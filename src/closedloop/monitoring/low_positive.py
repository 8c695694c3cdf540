"""Does the window hold more barely-positive calls than the reference? (rule W20, session 20)

On weak networks PneumoniaMNIST's test split moves normal images just over the decision threshold: the
share of rows the model calls positive with a score among the lowest ``quantile`` of the reference's
positive calls doubles (training 20: about 7 % of the unseen rows, 14 % of the test split's), while the
drift tests and the domain check see little, and the label-free estimate, which reads those rows' own
scores, is off by 0.12-0.19. The check counts, in the window and in the held-out reference, the rows
at or above the threshold with a score at or below the reference's ``quantile`` of its positive calls
(the cut), and tests one-sided whether the window's share is larger: Fisher's exact test on the 2x2
table (``p_fisher``) and the pooled two-proportion z-test (``p_z``). The cut comes from the reference, so
neither is exact; their false-flag rate is what the benchmarks measure (``benchmarks/
tune_monitor_weak_w20.py``). Binary tasks only; the counts are unchanged by a monotone recalibration.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import fisher_exact, norm


class LowPositiveCheck(BaseModel):
    """The window's barely-positive calls against the reference's."""

    model_config = ConfigDict(frozen=True)
    quantile: float
    cut: float
    window_share: float
    reference_share: float
    n_window: int
    n_reference: int
    p_fisher: float
    p_z: float


def positive_scores(proba: np.ndarray) -> np.ndarray:
    """The positive-class score of binary probabilities (one column, or two with the positive second)."""
    p = np.asarray(proba, dtype=float)
    if p.ndim == 2:
        if p.shape[1] != 2:
            raise ValueError(f"low-positive check: binary probabilities expected, got {p.shape[1]} columns")
        p = p[:, 1]
    return p


def low_positive_check(
    reference_proba: np.ndarray, window_proba: np.ndarray, threshold: float, quantile: float = 0.1
) -> LowPositiveCheck | None:
    """Compare the share of barely-positive calls (score >= ``threshold`` and <= the reference's
    ``quantile`` of its positive calls) in the window with the reference's. None when the reference
    makes fewer than 10 positive calls (no cut to speak of)."""
    if not 0 < quantile < 1:
        raise ValueError(f"low-positive check: quantile must be in (0, 1), got {quantile}")
    ref, win = positive_scores(reference_proba), positive_scores(window_proba)
    pos = ref[ref >= threshold]
    if len(pos) < 10 or len(win) == 0:
        return None
    cut = float(np.quantile(pos, quantile))
    a = int(np.sum((win >= threshold) & (win <= cut)))
    b = int(np.sum((ref >= threshold) & (ref <= cut)))
    n1, n0 = len(win), len(ref)
    p_fisher = float(fisher_exact([[a, n1 - a], [b, n0 - b]], alternative="greater")[1])
    pooled = (a + b) / (n1 + n0)
    se = np.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n0))
    p_z = float(norm.sf((a / n1 - b / n0) / se))
    return LowPositiveCheck(
        quantile=quantile,
        cut=cut,
        window_share=a / n1,
        reference_share=b / n0,
        n_window=n1,
        n_reference=n0,
        p_fisher=p_fisher,
        p_z=p_z,
    )


class LowPositiveFlag(BaseModel):
    """The low-positive flag's settings (monitor option ``low_positive_flag``): the window's label-free
    estimate is flagged when its check's one-sided p-value (``test``) is at or under ``level``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    quantile: float = Field(0.1, gt=0, lt=1)
    """The cut: this quantile of the held-out rows' positive calls' scores."""
    test: Literal["fisher", "z"] = "fisher"
    """Fisher's exact test or the pooled two-proportion z-test."""
    level: float = Field(0.002, gt=0, lt=0.5)
    """The flag's p-value level (in-distribution windows flagged at about this rate; measured, not exact)."""


def low_positive_reason(
    flag: LowPositiveFlag | None,
    reference_proba: np.ndarray | None,
    window_proba: np.ndarray | None,
    threshold: float,
) -> str | None:
    """The flag's reason when ``flag`` is on and the window holds more barely-positive calls than the reference
    at its level; None otherwise (off, no probabilities, too few positive calls in the reference)."""
    if flag is None or reference_proba is None or window_proba is None:
        return None
    c = low_positive_check(reference_proba, window_proba, threshold, flag.quantile)
    if c is None:
        return None
    p = c.p_fisher if flag.test == "fisher" else c.p_z
    if p > flag.level:
        return None
    return (
        f"more barely-positive calls than the reference ({c.window_share:.0%} of the window's rows called positive "
        f"at a score <= {c.cut:.3g}, against {c.reference_share:.0%} of the held-out rows; {flag.test} p={p:.2g} <= "
        f"{flag.level:g})"
    )
