"""Metrics in the package's prediction convention, vectorized over bootstrap resamples.

Prediction convention (see :mod:`closedloop.models.trained`):

* binary: ``proba`` ``(N, 2)`` = [P(neg), P(pos)], or ``(N,)`` / ``(N, 1)`` = P(pos); ``y_true`` ``(N,)`` 0/1
* multiclass / ordinal: ``(N, K)`` probabilities; ``y_true`` ``(N,)`` ints in 0..K-1
* multilabel: ``(N, L)`` independent probabilities; ``y_true`` ``(N, L)`` 0/1
* regression: ``(N,)`` or ``(N, 1)`` values; ``y_true`` ``(N,)`` floats

``convention="medmnist"`` reproduces ``medmnist.evaluator.getAUC`` / ``getACC`` exactly: binary AUC
and ACC on the positive-class score (ACC: ``score > 0.5``), multi-class / ordinal AUC as the mean
of one-vs-rest AUCs over the K columns and ACC as argmax accuracy, multi-label AUC and ACC as the
mean over labels (ACC at ``score > 0.5``). ``"standard"`` uses the same definitions except that the
decision threshold is ``score >= threshold`` (default 0.5). Multi-label ``acc`` is the mean per-label
accuracy in both conventions (not subset accuracy).

Every metric is computed as a *weighted* statistic with a weight matrix ``W`` of shape ``(B, N)``:
one row per bootstrap resample holding how often each example was drawn. The point estimate is the
one-row case ``W = 1``, so the bootstrap and the reported value share one implementation.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.metrics import compute_metrics
    >>> y = np.array([0, 0, 1, 1])
    >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.35, 0.65], [0.2, 0.8]])
    >>> compute_metrics(["auc", "acc"], y, p, "binary")
    {'auc': 1.0, 'acc': 1.0}

Over 400 lines but one idea: the one metrics implementation of the package (every metric, vectorized).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from closedloop.stats.errors import StatsError

Convention = Literal["standard", "medmnist"]
ProblemType = Literal["binary", "multiclass", "ordinal", "multilabel", "regression"]
PROBLEM_TYPES = ("binary", "multiclass", "ordinal", "multilabel", "regression")

METRICS: dict[str, str] = {
    "auc": "ROC AUC (multi-class: macro one-vs-rest; multi-label: mean per label)",
    "acc": "accuracy (binary/multi-label at the threshold; multi-class: argmax)",
    "pr_auc": "area under the precision-recall curve (average precision; macro for several classes)",
    "f1": "F1 score of the positive class (macro over classes / labels)",
    "precision": "precision of the positive class (macro over classes / labels)",
    "recall": "recall (sensitivity) of the positive class (macro over classes / labels)",
    "balanced_accuracy": "mean of per-class recalls",
    "rmse": "root mean squared error (ordinal: of the predicted class index)",
    "mae": "mean absolute error (ordinal: of the predicted class index)",
    "qwk": "quadratic weighted kappa of the predicted class index (ordinal: an error costs its distance in ranks squared; 0 is chance, 1 perfect)",
    "ece": "expected calibration error, 15 equal-width bins of top-label confidence",
    "log_loss": "cross-entropy of the predicted probabilities",
}

LOWER_IS_BETTER = frozenset({"rmse", "mae", "ece", "log_loss"})
# rank distances (rmse, mae, qwk) mean something only where the classes have an order
_RANKED = frozenset({"rmse", "mae", "qwk"})
ORDINAL_METRICS = ("qwk", "mae")
"""What an ordinal task is scored by besides the classification metrics: the quadratic weighted kappa and
the mean absolute rank error (the task's rule, the monitor's estimate, a person's comparison)."""
_ALLOWED: dict[str, frozenset[str]] = {
    "binary": frozenset(METRICS) - _RANKED,
    "multiclass": frozenset(METRICS) - _RANKED,
    "ordinal": frozenset(METRICS),
    "multilabel": frozenset(METRICS) - _RANKED,
    "regression": frozenset({"rmse", "mae"}),
}
ECE_BINS = 15
_EPS = float(np.finfo(np.float64).eps)  # what scikit-learn clips log_loss at


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better."""
    check_metric_name(name)
    return name not in LOWER_IS_BETTER


def check_metric_name(name: str) -> None:
    """Raise :class:`StatsError` listing the valid names when ``name`` is unknown."""
    if name not in METRICS:
        import difflib

        hint = difflib.get_close_matches(str(name), METRICS, n=1)
        raise StatsError(
            f"unknown metric {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
            f"valid metrics: {', '.join(METRICS)}"
        )


def metrics_for(problem_type: str) -> list[str]:
    """The metrics defined for ``problem_type``, in :data:`METRICS` order.

    >>> metrics_for("regression")
    ['rmse', 'mae']
    """
    _check_problem(problem_type)
    return [m for m in METRICS if m in _ALLOWED[problem_type]]


def _check_problem(problem_type: str) -> None:
    if problem_type not in PROBLEM_TYPES:
        raise StatsError(f"unknown problem type {problem_type!r}; expected one of {', '.join(PROBLEM_TYPES)}")


# -- input checking -----------------------------------------------------------------------------


def prepare(y_true: Any, proba: Any, problem_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and values; return ``(y, P)`` in canonical form.

    binary: ``y`` (N,) int 0/1, ``P`` (N,) P(pos); multiclass/ordinal: (N,) int, (N, K);
    multilabel: (N, L) int, (N, L); regression: (N,) float, (N,) float.
    """
    _check_problem(problem_type)
    y = np.asarray(y_true)
    P = np.asarray(proba)
    if P.dtype.kind not in "fiub":
        raise StatsError(f"predictions must be numeric, got dtype {P.dtype}")
    if y.dtype.kind not in "fiub":
        raise StatsError(f"y_true must be numeric, got dtype {y.dtype}")
    P = P.astype(np.float64, copy=False)
    n = len(y) if y.ndim else 0
    if n == 0:
        raise StatsError("cannot score an empty set of predictions (y_true has no rows)")
    if P.ndim == 0 or P.shape[0] != n:
        raise StatsError(
            f"predictions have shape {P.shape} but y_true has {n} rows; expected one prediction row per example"
        )
    if not np.all(np.isfinite(P)):
        bad = int((~np.isfinite(P)).reshape(n, -1).any(axis=1).sum())
        raise StatsError(f"predictions contain NaN or infinite values ({bad} of {n} rows)")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise StatsError("y_true contains NaN or infinite values")

    if problem_type == "regression":
        if P.ndim > 2 or (P.ndim == 2 and P.shape[1] != 1):
            raise StatsError(f"regression predictions must be (N,) or (N, 1), got shape {P.shape}")
        if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
            raise StatsError(f"regression y_true must be (N,) or (N, 1), got shape {y.shape}")
        return y.reshape(n).astype(np.float64), P.reshape(n)

    if problem_type == "multilabel":
        if y.ndim != 2 or P.ndim != 2 or y.shape != P.shape:
            raise StatsError(
                f"multi-label needs y_true and predictions of the same shape (N, L); got {y.shape} and {P.shape}"
            )
        _check_01(y, "multi-label y_true")
        return y.astype(np.int64), P

    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(n)
    if y.ndim != 1:
        raise StatsError(f"{problem_type} y_true must be (N,) class indices, got shape {y.shape}")
    if y.dtype.kind == "f" and np.any(np.mod(y, 1) != 0):
        raise StatsError(f"{problem_type} y_true must hold integer class indices, found non-integers")
    y = y.astype(np.int64)

    if problem_type == "binary":
        if P.ndim == 2 and P.shape[1] == 2:
            P = P[:, 1]
        elif P.ndim == 2 and P.shape[1] == 1:
            P = P[:, 0]
        elif P.ndim != 1:
            raise StatsError(
                f"binary predictions must be (N, 2) [P(neg), P(pos)], (N,) or (N, 1) P(pos); got shape {P.shape}"
            )
        _check_01(y, "binary y_true")
        return y, P

    if P.ndim != 2 or P.shape[1] < 2:
        raise StatsError(
            f"{problem_type} predictions must be (N, K) class probabilities, got shape {P.shape}"
        )
    k = P.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise StatsError(
            f"{problem_type} y_true has class {int(y.max()) if y.max() >= k else int(y.min())}, "
            f"outside 0..{k - 1} (predictions have {k} columns)"
        )
    return y, P


def _check_01(y: np.ndarray, what: str) -> None:
    if not np.all((y == 0) | (y == 1)):
        vals = np.unique(y)[:10].tolist()
        raise StatsError(f"{what} must be 0/1, found values {vals}")


# -- weighted kernels: y, scores (N,), W (B, N) -> (B,) ----------------------------------------


def _div(num: np.ndarray, den: np.ndarray, fill: float = np.nan) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, fill, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _auc_w(y: np.ndarray, s: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC (Mann-Whitney, ties counted half) for every row of W.

    For each positive, the weight of negatives scored below it (plus half the tied ones) is read
    from a cumulative sum over the sorted negatives: one sort, one cumsum, two gathers.
    """
    pos = y > 0.5
    neg_idx = np.flatnonzero(~pos)
    order = np.argsort(s[neg_idx], kind="mergesort")
    s_neg = s[neg_idx][order]
    cum = np.zeros((W.shape[0], len(neg_idx) + 1))
    np.cumsum(W[:, neg_idx[order]], axis=1, out=cum[:, 1:])
    s_pos = s[pos]
    lo = np.searchsorted(s_neg, s_pos, "left")
    hi = np.searchsorted(s_neg, s_pos, "right")
    w_pos = W[:, pos]
    num = 0.5 * (w_pos * (cum[:, lo] + cum[:, hi])).sum(axis=1)
    return _div(num, w_pos.sum(axis=1) * cum[:, -1])


def _ap_w(y: np.ndarray, s: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted average precision: sum over distinct thresholds of (R_k - R_{k-1}) * P_k."""
    order = np.argsort(-s, kind="mergesort")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    Ws = W[:, order]
    tot = np.add.reduceat(Ws, starts, axis=1)
    pos = np.add.reduceat(Ws * y[order], starts, axis=1)
    tp = np.cumsum(pos, axis=1)
    called = np.cumsum(tot, axis=1)
    prec = _div(tp, called, fill=0.0)
    total_pos = tp[:, -1:]
    return _div((pos * prec).sum(axis=1), total_pos[:, 0])


def _confusion_w(y: np.ndarray, pred: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, ...]:
    yb = y.astype(bool)
    pb = pred.astype(bool)
    tp = W @ (yb & pb).astype(np.float64)
    fp = W @ (~yb & pb).astype(np.float64)
    fn = W @ (yb & ~pb).astype(np.float64)
    tn = W @ (~yb & ~pb).astype(np.float64)
    return tp, fp, fn, tn


def _ece_w(conf: np.ndarray, correct: np.ndarray, W: np.ndarray) -> np.ndarray:
    bins = np.minimum((conf * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    onehot = np.zeros((len(conf), ECE_BINS))
    onehot[np.arange(len(conf)), bins] = 1.0
    s_conf = W @ (onehot * conf[:, None])
    s_corr = W @ (onehot * correct[:, None].astype(np.float64))
    return _div(np.abs(s_conf - s_corr).sum(axis=1), W.sum(axis=1))


def _mean_w(values: np.ndarray, W: np.ndarray) -> np.ndarray:
    return _div(W @ values.astype(np.float64), W.sum(axis=1))


def _binary_w(name: str, y: np.ndarray, p: np.ndarray, W: np.ndarray, pred: np.ndarray) -> np.ndarray:
    if name == "auc":
        return _auc_w(y, p, W)
    if name == "pr_auc":
        return _ap_w(y, p, W)
    if name == "ece":
        top = p >= 0.5
        return _ece_w(np.where(top, p, 1 - p), top == y.astype(bool), W)
    if name == "log_loss":
        q = np.clip(p, _EPS, 1 - _EPS)
        return _mean_w(-(y * np.log(q) + (1 - y) * np.log(1 - q)), W)
    tp, fp, fn, tn = _confusion_w(y, pred, W)
    if name == "acc":
        return _div(tp + tn, tp + fp + fn + tn)
    if name == "precision":
        return _div(tp, tp + fp, fill=0.0)
    if name == "recall":
        return _div(tp, tp + fn, fill=0.0)
    if name == "f1":
        return _div(2 * tp, 2 * tp + fp + fn, fill=0.0)
    if name == "balanced_accuracy":
        tpr = _div(tp, tp + fn)
        tnr = _div(tn, tn + fp)
        return np.nanmean(np.stack([tpr, tnr]), axis=0)
    raise StatsError(f"metric {name!r} is not defined for binary tasks")  # pragma: no cover


def _multiclass_w(name: str, y: np.ndarray, P: np.ndarray, W: np.ndarray) -> np.ndarray:
    k = P.shape[1]
    if name == "auc":
        return np.mean([_auc_w((y == c).astype(np.float64), P[:, c], W) for c in range(k)], axis=0)
    if name == "pr_auc":
        return np.mean([_ap_w((y == c).astype(np.float64), P[:, c], W) for c in range(k)], axis=0)
    pred = np.argmax(P, axis=1)
    if name == "acc":
        return _mean_w(pred == y, W)
    if name in ("rmse", "mae"):
        err = pred.astype(np.float64) - y
        return np.sqrt(_mean_w(err**2, W)) if name == "rmse" else _mean_w(np.abs(err), W)
    if name == "qwk":
        return _qwk_w(y, pred, k, W)
    if name == "ece":
        return _ece_w(P.max(axis=1), pred == y, W)
    if name == "log_loss":
        q = np.clip(P[np.arange(len(y)), y] / P.sum(axis=1), _EPS, 1.0)
        return _mean_w(-np.log(q), W)
    eye = np.eye(k)
    true_oh, pred_oh = eye[y], eye[pred]
    tp = W @ (true_oh * pred_oh)
    n_true = W @ true_oh
    n_pred = W @ pred_oh
    if name == "balanced_accuracy":
        return np.nanmean(_div(tp, n_true), axis=1)
    # macro over classes seen in y_true or predictions, as scikit-learn does
    present = (n_true + n_pred) > 0
    if name == "precision":
        per = _div(tp, n_pred, fill=0.0)
    elif name == "recall":
        per = _div(tp, n_true, fill=0.0)
    elif name == "f1":
        per = _div(2 * tp, n_true + n_pred, fill=0.0)
    else:  # pragma: no cover
        raise StatsError(f"metric {name!r} is not defined for multi-class tasks")
    return _div(np.where(present, per, 0.0).sum(axis=1), present.sum(axis=1).astype(np.float64))


def _qwk_w(y: np.ndarray, pred: np.ndarray, k: int, W: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa, ``1 - sum(w O) / sum(w E)`` with ``w = (i - j)^2``: ``O`` the weighted
    confusion matrix of each row of W, ``E`` the one its margins give by chance. NaN where every
    example (and prediction) is one class, as then chance cannot be told from skill."""
    pair = np.zeros((len(y), k * k))
    pair[np.arange(len(y)), y * k + pred] = 1.0
    observed = (W @ pair).reshape(-1, k, k)
    total = np.where(observed.sum(axis=(1, 2)) > 0, observed.sum(axis=(1, 2)), 1.0)
    chance = np.einsum("bi,bj->bij", observed.sum(axis=2), observed.sum(axis=1)) / total[:, None, None]
    cost = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2.0
    return 1.0 - _div((observed * cost).sum(axis=(1, 2)), (chance * cost).sum(axis=(1, 2)))


def _regression_w(name: str, y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    err = p - y
    if name == "rmse":
        return np.sqrt(_mean_w(err**2, W))
    return _mean_w(np.abs(err), W)


# -- metric objects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric bound to a problem type, threshold and convention.

    Call it as ``metric(y_true, proba) -> float``; :meth:`weighted` gives the vectorized form used
    by the bootstrap.
    """

    name: str
    problem_type: str
    threshold: float | None = None
    convention: Convention = "standard"

    def __post_init__(self) -> None:
        check_metric_name(self.name)
        _check_problem(self.problem_type)
        if self.convention not in ("standard", "medmnist"):
            raise StatsError(
                f"unknown metric convention {self.convention!r}; expected 'standard' or 'medmnist'"
            )
        if self.name not in _ALLOWED[self.problem_type]:
            raise StatsError(
                f"metric {self.name!r} is not defined for {self.problem_type} tasks; "
                f"valid there: {', '.join(metrics_for(self.problem_type))}"
            )
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise StatsError(f"threshold must be within [0, 1], got {self.threshold}")

    @property
    def higher_is_better(self) -> bool:
        return self.name not in LOWER_IS_BETTER

    def prepare(self, y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
        return prepare(y_true, proba, self.problem_type)

    def _pred(self, p: np.ndarray) -> np.ndarray:
        """Thresholded decisions for binary / multi-label scores."""
        if self.convention == "medmnist":
            # MedMNIST's getACC: strictly above 0.5 (its ACC ignores any tuned threshold)
            t = 0.5 if self.name == "acc" or self.threshold is None else self.threshold
            return p > t
        return p >= (0.5 if self.threshold is None else self.threshold)

    def weighted(self, y: np.ndarray, P: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Metric for each row of the weight matrix ``W`` (B, N); ``y, P`` from :meth:`prepare`."""
        pt = self.problem_type
        if pt == "regression":
            return _regression_w(self.name, y, P, W)
        if pt == "binary":
            return _binary_w(self.name, y.astype(np.float64), P, W, self._pred(P))
        if pt == "multilabel":
            pred = self._pred(P)
            cols = [
                _binary_w(self.name, y[:, j].astype(np.float64), P[:, j], W, pred[:, j])
                for j in range(P.shape[1])
            ]
            return np.mean(cols, axis=0)
        return _multiclass_w(self.name, y, P, W)

    def check_defined(self, y: np.ndarray, P: np.ndarray) -> None:
        """Raise :class:`StatsError` where the metric is undefined on these labels (one class)."""
        if self.name not in ("auc", "pr_auc"):
            return
        what = "ROC AUC" if self.name == "auc" else "PR AUC"
        if self.problem_type == "binary":
            present = np.unique(y).tolist()
            if len(present) < 2 and (self.name != "pr_auc" or present == [0]):
                raise StatsError(
                    f"{what} is undefined: y_true has a single class ({present[0]}) in all {len(y)} rows; "
                    "it needs both positives and negatives (use a larger or stratified split)"
                )
        elif self.problem_type == "multilabel":
            for j in range(y.shape[1]):
                col = y[:, j]
                if col.min() == col.max() and (self.name != "pr_auc" or col.max() == 0):
                    raise StatsError(
                        f"{what} is undefined for label {j}: y_true is {int(col[0])} in all {len(col)} rows"
                    )
        elif self.problem_type in ("multiclass", "ordinal") and self.name in ("auc", "pr_auc"):
            counts = np.bincount(y, minlength=P.shape[1])
            missing = np.flatnonzero(counts == 0).tolist()
            if missing:
                raise StatsError(
                    f"{what} (one-vs-rest over {P.shape[1]} classes) is undefined: class(es) {missing} "
                    f"have no example among the {len(y)} rows"
                )

    def __call__(self, y_true: Any, proba: Any) -> float:
        y, P = self.prepare(y_true, proba)
        self.check_defined(y, P)
        return float(self.weighted(y, P, np.ones((1, len(y))))[0])


def make_metric(
    name: str,
    problem_type: str,
    *,
    threshold: float | None = None,
    convention: Convention = "standard",
) -> Metric:
    """A :class:`Metric` usable as ``metric_fn`` in :func:`closedloop.stats.bootstrap.bootstrap_ci`."""
    return Metric(name, problem_type, threshold, convention)


def compute_metric(
    name: str,
    y_true: Any,
    proba: Any,
    problem_type: str,
    *,
    threshold: float | None = None,
    convention: Convention = "standard",
) -> float:
    """One metric value; raises :class:`StatsError` on bad input or an undefined metric."""
    return make_metric(name, problem_type, threshold=threshold, convention=convention)(y_true, proba)


def compute_metrics(
    names: Sequence[str],
    y_true: Any,
    proba: Any,
    problem_type: str,
    *,
    threshold: float | None = None,
    convention: Convention = "standard",
) -> dict[str, float]:
    """Several metrics at once (inputs checked once)."""
    metrics = [make_metric(n, problem_type, threshold=threshold, convention=convention) for n in names]
    y, P = prepare(y_true, proba, problem_type)
    ones = np.ones((1, len(y)))
    out = {}
    for m in metrics:
        m.check_defined(y, P)
        out[m.name] = float(m.weighted(y, P, ones)[0])
    return out


MetricFn = Callable[[Any, Any], float]
