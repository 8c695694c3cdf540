"""Production's class mix, estimated from the model's decisions alone (no labels).

If production differs from the held-out rows only in its class mix (each class's inputs alike), the
share of each decision in a window is the held-out confusion matrix applied to production's class
shares: ``P'(ŷ = i) = Σ_j P(ŷ = i | y = j) π'(j)``. Solving that system gives ``π'`` (black-box shift
estimation, Lipton et al. 2018), and the accuracy the model would have at that mix: ``Σ_j π'(j) ×
recall(j)``. The label-free estimate (CBPE) assumes the held-out confidence-accuracy relation, which a
new class mix breaks: this says what the mix is, if the change is in the mix alone. The interval
resamples the held-out rows and the window (percentile bootstrap). Whether the decisions' shares moved at
all is the monitor's calibrated ``predicted_class`` test; the estimate is what they moved to. Other changes (a new scanner, new
inputs) break its assumption too: the drift tests and the domain flag still say whether the data
differ, and random labels (``closedloop adapt``) measure.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 3000)                         # held-out rows: an even mix
    >>> hit = rng.random(3000) < 0.8
    >>> pred = np.where(hit, y, (y + 1) % 3)                # 80% right, errors to the next class
    >>> y2 = rng.choice(3, 2000, p=[0.7, 0.2, 0.1])          # production: class 0 now common
    >>> pred2 = np.where(rng.random(2000) < 0.8, y2, (y2 + 1) % 3)
    >>> m = estimate_class_mix(np.eye(3)[pred], y, np.eye(3)[pred2], "multiclass", 0.5)
    >>> [round(v, 1) for v in m.estimated]
    [0.7, 0.2, 0.1]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.monitoring.drift.predictions import predicted_classes

MAX_CONDITION = 1e4
"""Above this condition number the confusion matrix cannot be inverted usefully (a class the model
never tells apart from another): no estimate."""
BOOTSTRAP = 200


class ClassMixEstimate(BaseModel):
    """The estimated class mix of a window and the accuracy at it, with percentile intervals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: list[float]
    """The held-out rows' class shares."""
    estimated: list[float]
    low: list[float]
    high: list[float]
    acc_at_mix: float
    """Accuracy at the estimated mix: the held-out per-class recalls weighted by it."""
    acc_low: float
    acc_high: float
    n_reference: int
    n_window: int
    method: str = (
        "black-box shift estimation (Lipton et al. 2018): the held-out confusion matrix inverted on the "
        "window's decision shares; valid when only the class mix changed"
    )

    def sentence(self, names: list[str]) -> str:
        """One line for a person: each class's share then and now, and the accuracy at the new mix."""
        names = names or [str(i) for i in range(len(self.estimated))]
        parts = ", ".join(
            f"{n} {r:.0%}->{e:.0%} [{lo:.0%}, {hi:.0%}]"
            for n, r, e, lo, hi in zip(
                names, self.reference, self.estimated, self.low, self.high, strict=True
            )
        )
        return (
            f"class mix estimated from decisions (if only the mix changed): {parts}; accuracy at that mix "
            f"{self.acc_at_mix:.3f} [{self.acc_low:.3f}, {self.acc_high:.3f}]"
        )


def _solve(joint: np.ndarray, ref_shares: np.ndarray, decided: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(production shares, accuracy at them) from ``P(ŷ=i, y=j)``, the reference shares and the window's
    decision shares; ``None`` when the matrix cannot be inverted."""
    if np.any(ref_shares <= 0) or np.linalg.cond(joint) > MAX_CONDITION:
        return None
    w = np.linalg.solve(joint, decided)  # production share / reference share, per class
    mix = np.clip(w * ref_shares, 0.0, None)
    if mix.sum() <= 0:
        return None
    mix = mix / mix.sum()
    recall = np.diag(joint) / ref_shares
    return mix, float(mix @ recall)


def _tables(y: np.ndarray, d_ref: np.ndarray, d_win: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    joint = np.zeros((k, k))
    np.add.at(joint, (d_ref, y), 1.0)
    joint /= len(y)
    return joint, np.bincount(y, minlength=k) / len(y), np.bincount(d_win, minlength=k) / len(d_win)


def estimate_class_mix(
    ref_proba: Any,
    ref_labels: Any,
    win_proba: Any,
    problem_type: str,
    threshold: float | None,
    *,
    seed: Any = 0,
) -> ClassMixEstimate | None:
    """The window's class mix (module docstring); ``None`` for other tasks, without held-out labels or
    when the held-out confusion matrix cannot be inverted."""
    if problem_type not in ("binary", "multiclass", "ordinal") or ref_labels is None or win_proba is None:
        return None
    t = 0.5 if threshold is None else float(threshold)
    rp, wp = np.asarray(ref_proba, np.float64), np.asarray(win_proba, np.float64)
    k = 2 if problem_type == "binary" else rp.shape[1]
    y = np.asarray(ref_labels).reshape(-1).astype(int)
    d_ref, d_win = predicted_classes(rp, problem_type, t), predicted_classes(wp, problem_type, t)
    if len(y) < 10 or len(d_win) < 10:
        return None
    point = _solve(*_tables(y, d_ref, d_win, k))
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    mixes, accs = [], []
    for _ in range(BOOTSTRAP):
        i, j = rng.integers(0, len(y), len(y)), rng.integers(0, len(d_win), len(d_win))
        b = _solve(*_tables(y[i], d_ref[i], d_win[j], k))
        if b is not None:
            mixes.append(b[0])
            accs.append(b[1])
    if len(mixes) < BOOTSTRAP // 2:
        return None
    m, a = np.array(mixes), np.array(accs)
    ref_shares = np.bincount(y, minlength=k) / len(y)
    low, high = np.quantile(m, 0.025, axis=0), np.quantile(m, 0.975, axis=0)
    return ClassMixEstimate(
        reference=ref_shares.tolist(),
        estimated=point[0].tolist(),
        low=low.tolist(),
        high=high.tolist(),
        acc_at_mix=point[1],
        acc_low=float(np.quantile(a, 0.025)),
        acc_high=float(np.quantile(a, 0.975)),
        n_reference=len(y),
        n_window=len(d_win),
    )
