"""Drift tests: one class per test, registered by key (like the audit's checks).

Every test compares a production window with the reference sample and returns a p-value under "the
window comes from the reference distribution", a statistic, effect sizes and the evidence (e.g. the
most drifted features). The monitor combines the p-values of the unlabeled tests with a min-p rule
whose threshold is calibrated on held-out in-distribution windows (see ``profile.calibrate``), so the
per-window false alarm rate is the configured one even though the tests are correlated.

A new test: subclass :class:`DriftTest`, set ``key`` and implement ``run``; the class registers
itself (an incomplete class fails when it is defined).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import special
from scipy import stats as sps

TESTS: dict[str, type[DriftTest]] = {}


@dataclass
class Sample:
    """What the tests look at for a set of inputs (reference or window)."""

    features: np.ndarray
    """(N, F) summary features (images: intensity statistics; tables: the columns)."""
    embeddings: np.ndarray | None = None
    """(N, d) penultimate-layer features after the profile's PCA."""
    proba: np.ndarray | None = None
    """(N, K) calibrated probabilities in the package convention."""
    labels: np.ndarray | None = None
    """Labels when they have arrived (class indices; multilabel (N, L))."""
    index: np.ndarray | None = None
    """Row numbers in a pool whose kernel matrix is precomputed (threshold calibration), else None."""

    def __len__(self) -> int:
        return len(self.features)

    def take(self, idx: np.ndarray) -> Sample:
        def sel(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Sample(
            self.features[idx], sel(self.embeddings), sel(self.proba), sel(self.labels), sel(self.index)
        )


@dataclass
class TestContext:
    """Settings and reference facts a test may use."""

    __test__ = False

    problem_type: str
    threshold: float
    feature_names: list[str]
    categorical: list[int]
    bandwidth: float = 1.0
    permutations: int = 200
    effects: bool = True
    """Compute effect sizes and evidence (off while calibrating, where only p-values matter)."""
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    pool_kernel: np.ndarray | None = None
    """Gaussian kernel over a pool of embeddings that both samples index into (``Sample.index``):
    calibration draws hundreds of (reference, window) splits of one pool, and slicing this matrix
    gives the same kernel values as recomputing them for every split."""


@dataclass
class TestResult:
    __test__ = False

    p_value: float
    statistic: float
    effect: dict[str, float] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)


class DriftTest:
    """Base class: set ``key`` (registry name), ``description``, and implement :meth:`run`."""

    key: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    """Label tests run only when labels arrive and do not enter the unlabeled alarm rule."""
    problem_types: ClassVar[tuple[str, ...]] = ("binary", "multiclass", "ordinal", "multilabel", "regression")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.key:
            raise TypeError(f"{cls.__qualname__}: a drift test needs a registry key")
        if cls.run is DriftTest.run:
            raise TypeError(f"{cls.__qualname__}: implement run(ref, win, ctx)")
        if not cls.description:
            raise TypeError(f"{cls.__qualname__}: describe the test in 'description'")
        if cls.key in TESTS and TESTS[cls.key].__qualname__ != cls.__qualname__:
            raise TypeError(
                f"drift test key {cls.key!r} is already registered to {TESTS[cls.key].__qualname__}"
            )
        TESTS[cls.key] = cls

    def applies(self, ref: Sample, ctx: TestContext) -> bool:
        return ctx.problem_type in self.problem_types

    def run(self, ref: Sample, win: Sample, ctx: TestContext) -> TestResult:
        raise NotImplementedError


# -- helpers ------------------------------------------------------------------------------------
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


def _ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    D, p = ks_columns(a, b)
    return float(D[0]), float(p[0])


def _chi2_counts(ref_codes: np.ndarray, win_codes: np.ndarray) -> tuple[float, float]:
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


# -- the tests ----------------------------------------------------------------------------------
class FeatureDrift(DriftTest):
    key = "features"
    description = (
        "univariate per feature: KS (numeric) or chi-squared (categorical), Holm-corrected; "
        "PSI and Wasserstein distance (in reference standard deviations) as effect sizes"
    )

    def run(self, ref: Sample, win: Sample, ctx: TestContext) -> TestResult:
        F = len(ctx.feature_names)
        if F == 0:
            return TestResult(1.0, 0.0)
        cat = set(ctx.categorical)
        num = [j for j in range(F) if j not in cat]
        stat = np.zeros(F)
        pv = np.ones(F)
        if num:
            stat[num], pv[num] = ks_columns(ref.features[:, num], win.features[:, num])
        for j in cat:
            stat[j], pv[j] = _chi2_counts(ref.features[:, j], win.features[:, j])
        adj = holm(pv)
        result = TestResult(p_value=float(adj.min()), statistic=float(stat.max()))
        if not ctx.effects:
            return result
        rows = []
        for j, name in enumerate(ctx.feature_names):
            a, b = ref.features[:, j], win.features[:, j]
            row = {
                "feature": name,
                "statistic": float(stat[j]),
                "p_value": float(pv[j]),
                "p_adjusted": float(adj[j]),
            }
            row["psi"] = psi(a, b)
            if j not in cat:
                fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
                sd = float(np.std(fa)) or 1.0
                row["wasserstein_sd"] = (
                    float(sps.wasserstein_distance(fa, fb) / sd) if len(fa) and len(fb) else 0.0
                )
            rows.append(row)
        rows.sort(key=lambda r: (r["p_value"], -r["statistic"]))
        result.effect = {
            "max_psi": float(max(r["psi"] for r in rows)),
            "n_drifted": int(np.sum(adj < 0.05)),
            "top_feature_psi": float(rows[0]["psi"]),
        }
        result.details = rows[:10]
        return result


def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0)


def median_bandwidth(X: np.ndarray, max_n: int = 500, seed: int = 0) -> float:
    """Median pairwise distance (the median heuristic for the Gaussian kernel)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) > max_n:
        X = X[np.random.default_rng(seed).choice(len(X), max_n, replace=False)]
    d = np.sqrt(_sqdist(X, X))
    vals = d[np.triu_indices(len(X), 1)]
    med = float(np.median(vals)) if len(vals) else 1.0
    return med if med > 0 else 1.0


def gaussian_kernel(Z: np.ndarray, bandwidth: float) -> np.ndarray:
    """``exp(-|z_i - z_j|^2 / (2 bandwidth^2))`` over the rows of ``Z`` (float32)."""
    Z = np.asarray(Z, dtype=np.float32)
    return np.exp(-_sqdist(Z, Z) / np.float32(2.0 * bandwidth**2))


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


class EmbeddingMMD(DriftTest):
    key = "embedding_mmd"
    description = (
        "multivariate: kernel MMD on PCA-reduced penultimate-layer embeddings, Gaussian kernel with the "
        "median-heuristic bandwidth, permutation p-value"
    )
    max_window: ClassVar[int] = 500
    """Larger windows are subsampled: the test is already powerful there and the cost is quadratic."""

    def applies(self, ref: Sample, ctx: TestContext) -> bool:
        return ref.embeddings is not None and ref.embeddings.shape[1] > 0

    def run(self, ref: Sample, win: Sample, ctx: TestContext) -> TestResult:
        assert ref.embeddings is not None and win.embeddings is not None
        Y = win.embeddings
        pick = None
        if len(Y) > self.max_window:
            pick = ctx.rng.choice(len(Y), self.max_window, replace=False)
            Y = Y[pick]
        K = None
        if ctx.pool_kernel is not None and ref.index is not None and win.index is not None:
            rows = np.concatenate([ref.index, win.index if pick is None else win.index[pick]])
            K = ctx.pool_kernel[np.ix_(rows, rows)]
        stat, p = mmd_permutation_test(ref.embeddings, Y, ctx.bandwidth, ctx.permutations, ctx.rng, K=K)
        return TestResult(p_value=p, statistic=stat, effect={"mmd2": stat})


def _prob_columns(proba: np.ndarray, problem_type: str) -> np.ndarray:
    return proba[:, 1:2] if problem_type == "binary" else proba


class BlackBoxShift(DriftTest):
    key = "bbsd"
    description = (
        "black-box shift detection: KS test on each calibrated softmax output (binary: P(positive)), "
        "Bonferroni over outputs"
    )
    problem_types = ("binary", "multiclass", "ordinal", "multilabel")

    def applies(self, ref: Sample, ctx: TestContext) -> bool:
        return super().applies(ref, ctx) and ref.proba is not None

    def run(self, ref: Sample, win: Sample, ctx: TestContext) -> TestResult:
        assert ref.proba is not None and win.proba is not None
        a, b = _prob_columns(ref.proba, ctx.problem_type), _prob_columns(win.proba, ctx.problem_type)
        D, pv = ks_columns(a, b)
        p = min(1.0, float(pv.min()) * len(pv))
        return TestResult(
            p_value=p,
            statistic=float(D.max()),
            effect={"mean_shift": float(np.abs(a.mean(0) - b.mean(0)).max())},
        )


def predicted_classes(proba: np.ndarray, problem_type: str, threshold: float) -> np.ndarray:
    if problem_type == "binary":
        return (proba[:, 1] >= threshold).astype(int)
    return proba.argmax(axis=1)


def confidences(proba: np.ndarray, problem_type: str, threshold: float) -> np.ndarray:
    """Probability of the predicted class (binary: of the side of the threshold taken)."""
    if problem_type == "binary":
        return np.where(proba[:, 1] >= threshold, proba[:, 1], proba[:, 0])
    if problem_type == "multilabel":
        return np.maximum(proba, 1 - proba).mean(axis=1)
    return proba.max(axis=1)


class PredictedClassDrift(DriftTest):
    key = "predicted_class"
    description = "prediction drift: chi-squared test on the distribution of predicted classes"
    problem_types = ("binary", "multiclass", "ordinal")

    def applies(self, ref: Sample, ctx: TestContext) -> bool:
        return super().applies(ref, ctx) and ref.proba is not None

    def run(self, ref: Sample, win: Sample, ctx: TestContext) -> TestResult:
        assert ref.proba is not None and win.proba is not None
        a = predicted_classes(ref.proba, ctx.problem_type, ctx.threshold)
        b = predicted_classes(win.proba, ctx.problem_type, ctx.threshold)
        s, p = _chi2_counts(a.astype(float), b.astype(float))
        k = ref.proba.shape[1]
        ra = np.bincount(a, minlength=k) / max(len(a), 1)
        rb = np.bincount(b, minlength=k) / max(len(b), 1)
        return TestResult(
            p_value=p,
            statistic=s,
            effect={"max_share_change": float(np.abs(ra - rb).max())},
            details=[
                {"class": i, "reference_share": float(ra[i]), "window_share": float(rb[i])} for i in range(k)
            ],
        )


class ConfidenceDrift(DriftTest):
    key = "confidence"
    description = "prediction drift: KS test on the confidence of the predicted class"
    problem_types = ("binary", "multiclass", "ordinal", "multilabel")

    def applies(self, ref: Sample, ctx: TestContext) -> bool:
        return super().applies(ref, ctx) and ref.proba is not None

    def run(self, ref: Sample, win: Sample, ctx: TestContext) -> TestResult:
        assert ref.proba is not None and win.proba is not None
        a = confidences(ref.proba, ctx.problem_type, ctx.threshold)
        b = confidences(win.proba, ctx.problem_type, ctx.threshold)
        s, p = _ks(a, b)
        return TestResult(
            p_value=p, statistic=s, effect={"mean_confidence_change": float(b.mean() - a.mean())}
        )


class LabelShift(DriftTest):
    key = "label_shift"
    description = "prior (label) shift once labels arrive: chi-squared test on class frequencies"
    needs_labels = True
    problem_types = ("binary", "multiclass", "ordinal")

    def applies(self, ref: Sample, ctx: TestContext) -> bool:
        return super().applies(ref, ctx) and ref.labels is not None

    def run(self, ref: Sample, win: Sample, ctx: TestContext) -> TestResult:
        assert ref.labels is not None and win.labels is not None
        a = np.asarray(ref.labels).reshape(-1).astype(float)
        b = np.asarray(win.labels).reshape(-1).astype(float)
        s, p = _chi2_counts(a, b)
        k = int(max(a.max(initial=0), b.max(initial=0))) + 1
        ra = np.bincount(a.astype(int), minlength=k) / max(len(a), 1)
        rb = np.bincount(b.astype(int), minlength=k) / max(len(b), 1)
        return TestResult(
            p_value=p,
            statistic=s,
            effect={"max_prior_change": float(np.abs(ra - rb).max())},
            details=[
                {"class": i, "reference_share": float(ra[i]), "window_share": float(rb[i])} for i in range(k)
            ],
        )


UNLABELED_DEFAULT = ["features", "embedding_mmd", "bbsd", "predicted_class", "confidence"]


def run_tests(keys: list[str], ref: Sample, win: Sample, ctx: TestContext) -> dict[str, TestResult]:
    """Run the named tests that apply (label tests only when the window has labels)."""
    out: dict[str, TestResult] = {}
    for key in keys:
        test = TESTS[key]()
        if test.needs_labels and win.labels is None:
            continue
        if test.applies(ref, ctx):
            out[key] = test.run(ref, win, ctx)
    return out
