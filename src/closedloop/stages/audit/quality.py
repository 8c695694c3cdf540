"""Check 5, feature quality: missing values, constant and near-constant features, outliers, columns
that look like identifiers, timestamps or free text;
feature histograms (tables) and pixel-intensity histograms per split (images)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult, Severity
from closedloop.stages.audit.plots import new_figure, plt, save


class FeatureQualityConfig(CheckConfig):
    missing_warning: float = Field(0.5, gt=0, le=1)
    """A column missing in more than this share of train rows is a warning (all-missing always is)."""
    near_constant: float = Field(0.99, gt=0.5, lt=1)
    """A column whose most frequent value covers more than this share is near-constant (info)."""
    outlier_z: float = Field(6.0, gt=0)
    """Robust z-score (median/MAD) beyond which a value (table) or image statistic is an outlier. A
    table column is judged on the scale where its own bulk is symmetric (:func:`column_scale`): a
    heavy right tail (prices, expenses, areas) is the column's shape, not a share of errors."""
    skew_rule: bool = True
    """Judge a skewed column on a log-like scale (False: every column on its raw scale, the rule
    before; on scikit-learn's breast_cancer it warned on 5 of 30 clean columns)."""
    identifier_rule: bool = True
    """Warn on columns that look like identifiers, timestamps or free text (:func:`identifier_like`);
    False: never (a table whose unique codes are meant as features)."""
    outlier_warning: float = Field(0.01, gt=0, lt=1)
    """An outlier share above this is a warning."""
    max_hist_features: int = Field(12, ge=1)
    """Histograms drawn at most (tables)."""


def identifier_like(s: pd.Series) -> str | None:
    """Why a column looks like a row identifier, a timestamp or free text, judged on its own values; None
    when it does not. Two shapes, no dataset-scale constant:

    * text or categories where most rows (at least half) have their own value: as a category it cannot
      generalize, and at serving nearly every value is new (an unseen category is a missing value);
    * integers, a different one in every row, filling at least half of their range: a running number,
      from which a model can learn only the rows' order.

    >>> identifier_like(pd.Series(range(1000, 1300)))
    'integers, a different one in every train row (300), filling 100% of the range 1000-1299: a running number'
    >>> identifier_like(pd.Series([f"2024-01-{d:02d}" for d in range(1, 29)]))
    'a different value in 28 of 28 train rows (100%), and they parse as dates'
    >>> identifier_like(pd.Series([3, 1, 2] * 10)) is None
    True
    """
    v = s.dropna()
    n = len(v)
    if n < 20:  # too few rows to tell an identifier from a small table's natural spread
        return None
    unique = int(v.nunique())
    textual = isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s)
    if textual:
        if unique < 20 or unique / n < 0.5:
            return None
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas warns when it cannot infer one format
            dates = pd.to_datetime(v.astype(str), errors="coerce", format="mixed")
        what = ", and they parse as dates" if dates.notna().mean() >= 0.9 else ""
        return f"a different value in {unique} of {n} train rows ({unique / n:.0%}){what}"
    if pd.api.types.is_bool_dtype(s) or unique < n:
        return None
    x = v.to_numpy(float)
    if not np.all(np.isfinite(x)) or not np.all(x == np.round(x)):
        return None
    lo, hi = int(x.min()), int(x.max())
    fill = n / (hi - lo + 1)
    if fill < 0.5:
        return None
    return (
        f"integers, a different one in every train row ({n}), filling {fill:.0%} of the range {lo}-{hi}: "
        "a running number"
    )


def robust_z(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
    med = np.nanmedian(ref)
    mad = np.nanmedian(np.abs(ref - med)) * 1.4826
    scale = mad if mad > 0 else (np.nanstd(ref) or 1.0)
    return np.abs(v - med) / scale


SKEW_BOWLEY = 0.2
"""Quantile (Bowley) skewness of the 10-90% bulk above which a column is judged on the asinh scale.
Bowley skewness uses quantiles only, so a few sentinel values (-999, 99999) cannot choose the scale
that would hide them; a symmetric bulk (|skew| <= 0.2: normal-like, uniform) keeps the raw scale."""


def bowley_skew(v: np.ndarray) -> float:
    q10, q50, q90 = np.nanquantile(v, [0.1, 0.5, 0.9])
    return float((q90 + q10 - 2 * q50) / (q90 - q10)) if q90 > q10 else 0.0


def column_scale(v: np.ndarray) -> tuple[np.ndarray, str]:
    """The values on the scale where the column's bulk is symmetric: raw, or ``asinh`` of the
    distance from the median in units of the bulk's spread (log-like in the tails, linear near the
    median, defined for zero and negative values) when the 10-90% bulk is skewed."""
    if abs(bowley_skew(v)) <= SKEW_BOWLEY:
        return v, "raw"
    med = float(np.nanmedian(v))
    spread = float(np.nanmedian(np.abs(v - med))) or float(np.nanstd(v)) or 1.0
    t = np.arcsinh((v - med) / spread)
    return t, "asinh"


class FeatureQuality(AuditCheck):
    """Missing, constant and outlying values; histograms per split."""

    name = "feature_quality"
    applies_to = frozenset({"images", "table"})
    Config = FeatureQualityConfig
    needs_test = True

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        splits = ctx.splits(with_test=True, reason="pixel/feature histograms of test inputs")
        return self._table(splits, ctx) if data.kind == "table" else self._images(splits, ctx)

    def _table(self, splits: dict[str, Any], ctx: AuditContext) -> CheckResult:
        cfg: FeatureQualityConfig = self.config  # type: ignore[assignment]
        res = CheckResult()
        X: pd.DataFrame = splits["train"].X
        rows = []
        n_ident = 0
        for col in X.columns:
            s = X[col]
            miss = float(s.isna().mean()) if len(s) else 0.0
            vc = s.value_counts(dropna=True)
            top_share = float(vc.iloc[0] / max(s.notna().sum(), 1)) if len(vc) else 1.0
            num = pd.to_numeric(s, errors="coerce") if not isinstance(s.dtype, pd.CategoricalDtype) else None
            out_share, scale = 0.0, ""
            if num is not None and num.notna().sum() > 10 and vc.size > 2:
                v = num.to_numpy(float)
                v, scale = column_scale(v) if cfg.skew_rule else (v, "raw")
                out_share = float(np.nanmean(robust_z(v, v) > cfg.outlier_z))
            rows.append(
                {
                    "column": col,
                    "dtype": str(s.dtype),
                    "missing": round(miss, 4),
                    "unique": int(vc.size),
                    "top_share": round(top_share, 4),
                    "outlier_share": round(out_share, 4),
                    "outlier_scale": scale,
                }
            )
            notes: list[tuple[Severity, str, dict[str, float]]] = []
            if miss == 1.0:
                notes.append(("warning", f"column {col!r} is missing in every train row: drop it", {}))
            elif miss > cfg.missing_warning:
                notes.append(
                    ("warning", f"column {col!r} is missing in {miss:.0%} of train rows", {"missing": miss})
                )
            elif miss > 0:
                notes.append(
                    ("info", f"column {col!r} is missing in {miss:.1%} of train rows", {"missing": miss})
                )
            if miss < 1.0 and vc.size == 1:
                notes.append(
                    ("warning", f"column {col!r} is constant in train: it carries no information", {})
                )
            elif vc.size > 1 and top_share > cfg.near_constant:
                notes.append(("info", f"column {col!r} is near-constant ({top_share:.1%} one value)", {}))
            ident = identifier_like(s) if cfg.identifier_rule and miss < 1.0 else None
            if ident is not None:
                n_ident += 1
                notes.append(
                    (
                        "warning",
                        f"column {col!r} looks like an identifier, a timestamp or free text ({ident}): as a "
                        "feature it cannot generalize to new rows. Drop it, or derive what carries meaning "
                        "from it (a date's month or weekday, a text's category)",
                        {},
                    )
                )
            if out_share > cfg.outlier_warning:
                notes.append(
                    (
                        "warning",
                        f"column {col!r}: {out_share:.1%} of train values are outliers "
                        f"(robust z > {cfg.outlier_z:g} on the {scale} scale"
                        + (", where the column's skewed bulk is symmetric)" if scale == "asinh" else ")"),
                        {"outlier_share": out_share},
                    )
                )
            res.findings.extend(self.finding(level, msg, column=col, **extra) for level, msg, extra in notes)
        res.tables["feature_quality"] = pd.DataFrame(rows)
        res.metrics["n_missing_columns"] = int(sum(r["missing"] > 0 for r in rows))
        res.metrics["n_outlier_columns"] = int(sum(r["outlier_share"] > cfg.outlier_warning for r in rows))
        res.metrics["n_skewed_columns"] = int(sum(r["outlier_scale"] == "asinh" for r in rows))
        res.metrics["n_identifier_columns"] = n_ident
        numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and X[c].notna().any()][
            : cfg.max_hist_features
        ]
        if numeric:
            nc = min(4, len(numeric))
            nr = (len(numeric) + nc - 1) // nc
            fig, axes = plt.subplots(nr, nc, figsize=(3 * nc, 2.2 * nr), squeeze=False)
            for ax in axes.ravel():
                ax.axis("off")
            for k, col in enumerate(numeric):
                ax = axes[k // nc][k % nc]
                ax.axis("on")
                allv = np.concatenate([s.X[col].dropna().to_numpy(float) for s in splits.values()])
                bins = np.histogram_bin_edges(allv, bins=30) if len(allv) else 10
                for name, s in splits.items():
                    ax.hist(
                        s.X[col].dropna().to_numpy(float),
                        bins=bins,
                        density=True,
                        histtype="step",
                        label=name,
                    )
                ax.set_title(str(col)[:24], fontsize=8)
                ax.tick_params(labelsize=6)
            axes[0][0].legend(fontsize=6)
            save(fig, ctx.figures_dir / "feature_histograms.png")
            res.figures["feature_histograms.png"] = "Feature distributions per split (density)."
        if not res.findings:
            res.findings.append(
                self.finding("info", f"{X.shape[1]} columns: no missing, constant or outlying values")
            )
        return res

    def _images(self, splits: dict[str, Any], ctx: AuditContext) -> CheckResult:
        cfg: FeatureQualityConfig = self.config  # type: ignore[assignment]
        res = CheckResult()
        stats = {}
        fig, ax = new_figure(5, 3)
        for name, s in splits.items():
            flat = s.X.reshape(len(s.X), -1)
            hist = np.zeros(256, np.int64)
            means = np.empty(len(flat), np.float32)
            stds = np.empty(len(flat), np.float32)
            for a in range(0, len(flat), 8192):
                blk = flat[a : a + 8192]
                hist += np.bincount(blk.ravel(), minlength=256)[:256]
                f = blk.astype(np.float32)
                means[a : a + 8192], stds[a : a + 8192] = f.mean(1), f.std(1)
            stats[name] = (means, stds)
            ax.plot(np.arange(256), hist / max(hist.sum(), 1), label=f"{name} (mean {means.mean():.1f})")
            res.metrics[f"{name}_mean_intensity"] = round(float(means.mean()), 2)
        ax.set_xlabel("pixel value")
        ax.set_ylabel("share of pixels")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        save(fig, ctx.figures_dir / "pixel_histograms.png")
        res.figures["pixel_histograms.png"] = "Pixel-intensity histograms per split (log scale)."
        tm, ts = stats["train"]
        for name, (m, sd) in stats.items():
            blank = int((sd == 0).sum())
            if blank:
                res.findings.append(
                    self.finding(
                        "warning",
                        f"{blank} {name} image(s) are a single flat color (blank or corrupt)",
                        examples=np.flatnonzero(sd == 0)[:10].tolist(),
                    )
                )
            z = np.maximum(robust_z(m, tm), robust_z(sd, ts))
            out = np.flatnonzero(z > cfg.outlier_z)
            share = len(out) / max(len(m), 1)
            if len(out):
                sev = "warning" if share > cfg.outlier_warning else "info"
                res.findings.append(
                    self.finding(
                        sev,
                        f"{len(out)} {name} image(s) ({share:.2%}) have outlying brightness/contrast "
                        f"(robust z > {cfg.outlier_z:g})",
                        examples=out[np.argsort(-z[out])][:10].tolist(),
                    )
                )
        if not res.findings:
            res.findings.append(
                self.finding("info", "no blank or outlying images; pixel histograms per split in the figure")
            )
        return res
