"""Recalibrating a multi-class model from a few labels: the class mix and the confidence.

When production's class mix differs from training's (label shift), a calibrated model's probabilities are
off by one factor per class, ``p'(y|x) ∝ p(y|x) π'(y) / π(y)``: adding one offset per class to its logits
undoes it. With one temperature too that is bias-corrected temperature scaling (Alexandari et al., 2020,
"Maximum likelihood with bias-corrected calibration is hard-to-beat at label shift adaptation"). Each
method maps the champion's logits ``z`` (after its temperature) to ``scale * z + bias`` and decides by the
largest probability:

* ``bias`` - one offset per class (the class mix), scale 1;
* ``bcts`` - one temperature and one offset per class;
* ``vector`` - one scale and one offset per class (vector scaling, Guo et al., 2017).

Fitted by maximum likelihood with a weak Gaussian prior (sd 1 on each offset and log-scale) so that a class
the labels rarely show keeps a finite offset.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.choice(3, 600, p=[0.7, 0.2, 0.1])            # production: class 0 now common
    >>> z = 2.0 * np.eye(3)[y] + rng.normal(size=(600, 3))   # logits of a model trained on a 1/3 mix
    >>> z[:, 0] -= 1.0                                       # ... that learned class 0 was rarer
    >>> r = fit_class_recalibration(y, z, "bias")
    >>> bool(np.mean(r.predict(z) == y) > np.mean(z.argmax(1) == y))
    True
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from closedloop.stats.errors import StatsError

ClassMethod = Literal["bias", "bcts", "vector"]
CLASS_METHODS: tuple[ClassMethod, ...] = ("bias", "bcts", "vector")
PRIOR_SD = 1.0
"""Prior sd of each offset and log-scale: worth about one labeled sample per parameter."""


class ClassRecalibration(BaseModel):
    """``P'(y | x) = softmax(scale * z + bias)`` from the champion's logits ``z``; decision: the largest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: ClassMethod
    scale: list[float]
    """One per class (``bias``/``bcts``: the same value repeated)."""
    bias: list[float]
    n: int
    """Labels it was fitted on."""

    def logits(self, z: Any) -> np.ndarray:
        z = _as_logits(z, len(self.bias))
        return z * np.asarray(self.scale) + np.asarray(self.bias)

    def apply(self, z: Any) -> np.ndarray:
        """Recalibrated probabilities ``(N, K)``."""
        return softmax(self.logits(z), axis=1)

    def predict(self, z: Any) -> np.ndarray:
        """Class indices: the largest recalibrated probability."""
        return self.logits(z).argmax(axis=1)

    def describe(self) -> str:
        s = np.asarray(self.scale)
        scale = f"temperature {1 / s[0]:.3f}" if np.allclose(s, s[0]) else f"scales {np.round(s, 3).tolist()}"
        return f"{self.method} recalibration ({scale}, class offsets {np.round(self.bias, 3).tolist()})"


def _as_logits(z: Any, k: int | None = None) -> np.ndarray:
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or z.shape[1] < 3 or (k is not None and z.shape[1] != k):
        want = "K >= 3" if k is None else f"K = {k}"
        raise StatsError(f"class recalibration needs logits of shape (N, {want}); got {z.shape}")
    return z


def fit_class_recalibration(y_true: Any, z: Any, method: ClassMethod) -> ClassRecalibration:
    """Fit ``method`` (module docstring) to labels ``y_true`` (class indices) and logits ``z`` ``(N, K)``."""
    if method not in CLASS_METHODS:
        raise StatsError(f"unknown class recalibration {method!r}; expected one of {CLASS_METHODS}")
    z = _as_logits(z)
    n, k = z.shape
    y = np.asarray(y_true).reshape(-1).astype(int)
    if len(y) != n or n == 0 or y.min() < 0 or y.max() >= k:
        raise StatsError(
            f"class recalibration: {len(y)} labels in 0..{k - 1} expected for {n} rows of logits"
        )
    onehot = np.eye(k)[y]
    n_scale = {"bias": 0, "bcts": 1, "vector": k}[method]

    def unpack(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = w[:n_scale] if n_scale else np.zeros(1)
        return np.exp(u), w[n_scale:]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s, b = unpack(w)
        logits = z * s + b
        lp = log_softmax(logits, axis=1)
        nll = -float(np.sum(lp * onehot))
        d = np.exp(lp) - onehot  # d nll / d logits
        g_b = d.sum(axis=0)
        g_s = (d * z).sum(axis=0) if n_scale == k else np.array([float(np.sum(d * z))])
        g_u = g_s * s if n_scale else np.zeros(0)
        penalty = 0.5 * float(np.sum(w**2)) / PRIOR_SD**2
        grad = np.concatenate([g_u[:n_scale], g_b]) + w / PRIOR_SD**2
        return nll + penalty, grad

    res = minimize(loss, np.zeros(n_scale + k), jac=True, method="L-BFGS-B")
    s, b = unpack(res.x)
    scale = np.broadcast_to(s, (k,)) if n_scale <= 1 else s
    return ClassRecalibration(
        method=method, scale=[float(v) for v in scale], bias=[float(v) for v in b - b.mean()], n=int(n)
    )
