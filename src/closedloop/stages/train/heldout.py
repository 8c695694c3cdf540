"""The held-out split: validation samples kept out of the final fit.

After the final refit on train+val the deployed model has seen the validation split, so nothing
computed afterwards (temperature, threshold, the export gate, the model card's errors, the monitor's
reference) may use it. The train stage reserves a stratified part of validation ("calibration"),
refits on train + the rest, and records which rows it kept out in ``TrainedModel.info["heldout"]``
(the typed record :class:`~closedloop.artifacts.heldout.HeldOut`, read back as ``TrainedModel.heldout``);
the export and monitor stages select those rows with :func:`closedloop.models.heldout.heldout_split`
and score the deployed model on them only. Every figure says which data it came from (``evaluated_on``):

* ``calibration`` - held-out validation rows the deployed model never trained on;
* ``validation`` - the whole validation split, when the final fit used train only;
* ``out_of_fold`` - k-fold predictions of models that did not see the sample (k-fold protocols);
* ``validation_pre_refit`` - validation predictions of the selected configuration before the refit
  (a model that did not train on them, but not the deployed one);
* ``trained_on`` - data the deployed model trained on (only when nothing was held out; never a
  figure to trust, and never called "validation").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.artifacts.heldout import INFO_KEY, EvaluatedOn, HeldOut
from closedloop.core.errors import ConfigError
from closedloop.models.heldout import heldout_split, rows_checksum, unseen_val_rows

__all__ = [  # the record and its readers live below the stages; named here as before
    "INFO_KEY",
    "EvaluatedOn",
    "HeldOut",
    "fit_rows",
    "heldout_split",
    "plan_heldout",
    "rows_checksum",
    "unseen_val_rows",
]


def _stratified_pick(y: np.ndarray, k: int, stratify: bool, rng: np.random.Generator) -> np.ndarray:
    """``k`` rows, each class keeping its share (largest remainders), or a plain draw."""
    n = len(y)
    if not stratify or k >= n:
        return np.sort(rng.permutation(n)[:k])
    classes, counts = np.unique(y, return_counts=True)
    exact = k * counts / n
    take = np.floor(exact).astype(int)
    for j in np.argsort(-(exact - take), kind="stable")[: k - take.sum()]:
        take[j] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def _group_pick(groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of whole groups, in a seeded order of the groups, until at least ``k`` rows (so no group has rows
    both held out and fitted on)."""
    ids = np.unique(groups)
    picked: list[np.ndarray] = []
    n = 0
    for g in rng.permutation(ids):
        if n >= k:
            break
        rows = np.flatnonzero(groups == g)
        picked.append(rows)
        n += len(rows)
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def plan_heldout(
    X_val: Any,
    y_val: np.ndarray,
    *,
    problem_type: str,
    final_fit: str,
    fraction: float,
    min_size: int,
    n_train: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> HeldOut:
    """Choose the validation rows kept out of the final fit, and say how (``note``).

    ``final_fit: train`` keeps all of validation out. Otherwise ``fraction`` of it is reserved
    (stratified by class); below ``min_size`` rows, ``min_size`` are reserved, and a validation split
    smaller than ``min_size`` is kept out whole (the final fit then uses train only)."""
    y = np.asarray(y_val)
    n_val = len(y)
    if n_val == 0:
        raise ConfigError("train: the validation split is empty; nothing can be held out for calibration")
    strat = y.reshape(n_val, -1)[:, 0] if problem_type in ("binary", "multiclass", "ordinal") else y
    rng = np.random.default_rng([int(seed), 0x4E1D])
    stratify = problem_type in ("binary", "multiclass", "ordinal")

    def pick(k: int) -> np.ndarray:
        return (
            _stratified_pick(strat, k, stratify, rng)
            if groups is None
            else _group_pick(np.asarray(groups), k, rng)
        )

    if final_fit == "train":
        idx = np.arange(n_val)
        on: EvaluatedOn = "validation"
        note = f"final fit on train only: all {n_val} validation samples are unseen by the deployed model"
    elif fraction <= 0:
        idx = np.arange(n_val)
        on = "trained_on"
        note = (
            f"holdout_fraction 0: nothing reserved; the final fit uses train+val, so figures computed after "
            f"it on the {n_val} validation samples are on trained-on data (labelled 'trained_on')"
        )
    else:
        want = int(round(fraction * n_val))
        if n_val <= min_size:
            idx = np.arange(n_val)
            on = "validation"
            note = (
                f"the validation split has {n_val} samples, not more than min_holdout={min_size}: reserving "
                f"{fraction:g} of it ({want}) would leave too few to calibrate on, so all {n_val} are held out "
                f"and the final fit uses train only ({n_train} samples) instead of train+val"
            )
        elif want < min_size:
            idx = pick(min_size)
            on = "calibration"
            note = (
                f"the validation split has {n_val} samples: holdout_fraction {fraction:g} would reserve {want} "
                f"(< min_holdout={min_size}); reserved {min_size} instead, and the final fit uses train "
                f"({n_train}) + the other {n_val - min_size} validation samples"
            )
        else:
            idx = pick(want)
            on = "calibration"
            how = "stratified" if groups is None else "whole groups"
            note = (
                f"{len(idx)} of {n_val} validation samples ({fraction:g}, {how}) reserved as the "
                f"calibration split; the final fit uses train ({n_train}) + the other {n_val - len(idx)}"
            )
    return HeldOut(
        indices=[int(i) for i in idx],
        n_val=n_val,
        evaluated_on=on,
        note=note,
        checksum=rows_checksum(X_val, y, idx),
    )


def fit_rows(plan: HeldOut) -> np.ndarray:
    """Validation rows that go into the final fit (none when all are held out)."""
    if plan.evaluated_on == "trained_on":
        return np.arange(plan.n_val)
    keep = np.ones(plan.n_val, dtype=bool)
    keep[np.asarray(plan.indices, dtype=np.int64)] = False
    return np.flatnonzero(keep)
