"""The built-in drift tests: on the inputs (features, embedding MMD), on the model's outputs (BBSD,
predicted classes, confidence) and on the labels once they arrive (prior shift). Each is one class;
defining it registers it. ``DEFAULT_TESTS`` is the monitor's default unlabeled set, in order (the
order fixes how the tests share the window's random generator, so it is part of the numbers)."""

from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy import stats as sps

from closedloop.monitoring.drift.base import DriftContext, DriftResult, DriftTest, DriftTestConfig, Sample
from closedloop.monitoring.drift.predictions import confidences, predicted_classes, prob_columns
from closedloop.monitoring.drift.stats import (
    chi2_counts,
    gaussian_kernel,
    holm,
    ks,
    ks_columns,
    mmd_permutation_test,
    psi,
)

DEFAULT_TESTS = ["features", "embedding_mmd", "bbsd", "predicted_class", "confidence"]
"""Unlabeled tests combined into the calibrated alert when the monitor config names none."""
DEFAULT_LABEL_TESTS = ["label_shift"]
"""Label tests run when labels arrive and the config names no label test."""

_CLASSIFY = ("binary", "multiclass", "ordinal", "multilabel")
_SINGLE_LABEL = ("binary", "multiclass", "ordinal")


class FeatureDrift(DriftTest):
    name = "features"
    description = (
        "univariate per feature: KS (numeric) or chi-squared (categorical), Holm-corrected; "
        "PSI and Wasserstein distance (in reference standard deviations) as effect sizes"
    )
    covariate = True

    class Config(DriftTestConfig):
        psi_bins: int = Field(10, ge=2)
        """Reference-quantile bins of the population stability index."""
        top: int = Field(10, ge=1)
        """Most drifted features listed as evidence."""

    def run(self, ref: Sample, win: Sample, ctx: DriftContext) -> DriftResult:
        F = len(ctx.feature_names)
        if F == 0:
            return DriftResult(1.0, 0.0)
        cat = set(ctx.categorical)
        num = [j for j in range(F) if j not in cat]
        stat = np.zeros(F)
        pv = np.ones(F)
        if num:
            stat[num], pv[num] = ks_columns(ref.features[:, num], win.features[:, num])
        for j in cat:
            stat[j], pv[j] = chi2_counts(ref.features[:, j], win.features[:, j])
        adj = holm(pv)
        result = DriftResult(p_value=float(adj.min()), statistic=float(stat.max()))
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
            row["psi"] = psi(a, b, self.config.psi_bins)
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
        result.details = rows[: self.config.top]
        drifted = [r for r in rows if r["p_adjusted"] <= 0.05][:3]  # Holm-corrected, as the p-value above
        if drifted:
            result.said = "most drifted: " + ", ".join(
                f"{r['feature']} (PSI {r['psi']:.2f})" for r in drifted
            )
        return result


class EmbeddingMMD(DriftTest):
    name = "embedding_mmd"
    uses = frozenset({"embeddings"})
    description = (
        "multivariate: kernel MMD on PCA-reduced penultimate-layer embeddings, Gaussian kernel with the "
        "median-heuristic bandwidth, permutation p-value"
    )
    covariate = True

    class Config(DriftTestConfig):
        max_window: int = Field(500, ge=10)
        """Larger windows are subsampled: the test is already powerful there and the cost is quadratic."""

    def applies(self, ref: Sample, ctx: DriftContext) -> bool:
        return ref.embeddings is not None and ref.embeddings.shape[1] > 0

    def prepare_pool(self, pool: Sample, ctx: DriftContext) -> np.ndarray | None:
        """The kernel over the whole calibration pool (one matrix for all its splits)."""
        if pool.embeddings is None or not pool.embeddings.shape[1]:
            return None
        return gaussian_kernel(pool.embeddings, ctx.bandwidth)

    def run(self, ref: Sample, win: Sample, ctx: DriftContext) -> DriftResult:
        assert ref.embeddings is not None and win.embeddings is not None
        Y = win.embeddings
        pick = None
        if len(Y) > self.config.max_window:
            pick = ctx.rng.choice(len(Y), self.config.max_window, replace=False)
            Y = Y[pick]
        K = None
        pool_kernel = ctx.pool.get(self.name)
        if pool_kernel is not None and ref.index is not None and win.index is not None:
            rows = np.concatenate([ref.index, win.index if pick is None else win.index[pick]])
            K = pool_kernel[np.ix_(rows, rows)]
        stat, p = mmd_permutation_test(ref.embeddings, Y, ctx.bandwidth, ctx.permutations, ctx.rng, K=K)
        return DriftResult(p_value=p, statistic=stat, effect={"mmd2": stat})


class _OnPredictions(DriftTest):
    """Tests on the model's calibrated probabilities (need a classifier's outputs)."""

    __abstract__ = True
    problem_types = _CLASSIFY
    uses = frozenset({"proba"})


class BlackBoxShift(_OnPredictions):
    name = "bbsd"
    description = (
        "black-box shift detection: KS test on each calibrated softmax output (binary: P(positive)), "
        "Bonferroni over outputs"
    )

    def run(self, ref: Sample, win: Sample, ctx: DriftContext) -> DriftResult:
        assert ref.proba is not None and win.proba is not None
        a, b = prob_columns(ref.proba, ctx.problem_type), prob_columns(win.proba, ctx.problem_type)
        D, pv = ks_columns(a, b)
        p = min(1.0, float(pv.min()) * len(pv))
        return DriftResult(
            p_value=p,
            statistic=float(D.max()),
            effect={"mean_shift": float(np.abs(a.mean(0) - b.mean(0)).max())},
        )


def _shares(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:
    """Class shares of two samples of class indices, and the per-class evidence rows."""
    ra = np.bincount(a, minlength=k) / max(len(a), 1)
    rb = np.bincount(b, minlength=k) / max(len(b), 1)
    rows = [{"class": i, "reference_share": float(ra[i]), "window_share": float(rb[i])} for i in range(k)]
    return ra, rb, rows


class PredictedClassDrift(_OnPredictions):
    name = "predicted_class"
    description = "prediction drift: chi-squared test on the distribution of predicted classes"
    problem_types = _SINGLE_LABEL

    def run(self, ref: Sample, win: Sample, ctx: DriftContext) -> DriftResult:
        assert ref.proba is not None and win.proba is not None
        a = predicted_classes(ref.proba, ctx.problem_type, ctx.threshold)
        b = predicted_classes(win.proba, ctx.problem_type, ctx.threshold)
        s, p = chi2_counts(a.astype(float), b.astype(float))
        ra, rb, rows = _shares(a, b, ref.proba.shape[1])
        return DriftResult(
            p_value=p, statistic=s, effect={"max_share_change": float(np.abs(ra - rb).max())}, details=rows
        )


class ConfidenceDrift(_OnPredictions):
    name = "confidence"
    description = "prediction drift: KS test on the confidence of the predicted class"

    def run(self, ref: Sample, win: Sample, ctx: DriftContext) -> DriftResult:
        assert ref.proba is not None and win.proba is not None
        a = confidences(ref.proba, ctx.problem_type, ctx.threshold)
        b = confidences(win.proba, ctx.problem_type, ctx.threshold)
        s, p = ks(a, b)
        return DriftResult(
            p_value=p, statistic=s, effect={"mean_confidence_change": float(b.mean() - a.mean())}
        )


class LabelShift(DriftTest):
    name = "label_shift"
    uses = frozenset({"labels"})
    description = "prior (label) shift once labels arrive: chi-squared test on class frequencies"
    label_evidence = "the class frequencies changed (prior shift)"
    needs_labels = True
    problem_types = _SINGLE_LABEL

    def run(self, ref: Sample, win: Sample, ctx: DriftContext) -> DriftResult:
        assert ref.labels is not None and win.labels is not None
        a = np.asarray(ref.labels).reshape(-1).astype(float)
        b = np.asarray(win.labels).reshape(-1).astype(float)
        s, p = chi2_counts(a, b)
        k = int(max(a.max(initial=0), b.max(initial=0))) + 1
        ra, rb, rows = _shares(a.astype(int), b.astype(int), k)
        return DriftResult(
            p_value=p, statistic=s, effect={"max_prior_change": float(np.abs(ra - rb).max())}, details=rows
        )
