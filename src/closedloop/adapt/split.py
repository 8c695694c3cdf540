"""The random split of labeled production data into an adaptation part and an evaluation part.

Stratified by class, seeded, and recorded (indices in the result). Only randomly selected samples
(:data:`~closedloop.monitoring.production_labels.RANDOM_SOURCES`) may enter the evaluation part; uncertainty-selected
ones go to the adaptation part, where their bias only shapes the challenger, never its score.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import DataError
from closedloop.monitoring.production_labels import ProductionLabels

MIN_PER_CLASS = 5
"""Fewest samples of each class in each part: fewer cannot fit a threshold or judge it."""


class AdaptSplit(BaseModel):
    """Which labeled samples adapt the challenger and which judge it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int
    eval_fraction: float
    adaptation: list[int]
    evaluation: list[int]
    n_random: int
    """Samples eligible for evaluation (randomly selected)."""
    note: str


def needed_for_effect(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Evaluation cases a paired one-sided test needs to detect a mean per-case difference of
    ``effect`` when per-case differences have standard deviation ``sd`` (normal approximation)."""
    from scipy.stats import norm

    if effect <= 0:
        return 0
    z = norm.ppf(1 - alpha) + norm.ppf(power)
    return int(math.ceil((z * sd / effect) ** 2))


def split_production(labels: ProductionLabels, *, eval_fraction: float, seed: int, needed: int) -> AdaptSplit:
    """Stratified random split; raises a :class:`DataError` saying how many labels are needed."""
    if not 0 < eval_fraction < 1:
        raise DataError(f"--eval-fraction {eval_fraction}: expected a number in (0, 1)")
    rng = np.random.default_rng([seed, 20])
    eligible = labels.randomly_selected()
    y = labels.y
    ev: list[int] = []
    for c in np.unique(y):
        pool = rng.permutation(np.flatnonzero((y == c) & eligible))
        n_c = int(np.sum(y == c))
        ev += pool[: int(round(eval_fraction * n_c))].tolist()
    ev_arr = np.sort(np.asarray(ev, int))
    ad_arr = np.setdiff1d(np.arange(len(y)), ev_arr)
    counts = {
        part: np.bincount(y[idx], minlength=int(y.max()) + 1).tolist()
        for part, idx in (("adaptation", ad_arr), ("evaluation", ev_arr))
    }
    short = {k: v for k, v in counts.items() if min(v) < MIN_PER_CLASS}
    if short:
        # a rare class sets the size: each part needs MIN_PER_CLASS of it at its share of the labels
        shares = np.bincount(y, minlength=len(counts["adaptation"])) / len(y)
        rare = [
            c
            for c, v in enumerate(shares)
            if min(counts["adaptation"][c], counts["evaluation"][c]) < MIN_PER_CLASS
        ]
        for_rare = max(
            (
                math.ceil(MIN_PER_CLASS / min(eval_fraction, 1 - eval_fraction) / shares[c])
                for c in rare
                if shares[c] > 0
            ),
            default=0,
        )
        need_total = max(needed, 2 * MIN_PER_CLASS * len(counts["adaptation"]), for_rare)
        rarest = (
            ""
            if not rare or for_rare <= len(y)
            else f"; class {rare[0]} is {shares[rare[0]]:.1%} of these labels, so about {for_rare} labels hold "
            f"{MIN_PER_CLASS} of it in each part"
        )
        biased = (
            ""
            if eligible.all() or labels.selected_by is None
            else f"; {int((~eligible).sum())} sample(s) were selected by "
            f"{sorted(set(labels.selected_by[~eligible].tolist()))} (chosen for being uncertain or unusual): they "
            "may adapt but never judge, since a score on them is biased"
        )
        raise DataError(
            f"{labels.path}: too few production labels for the split: {len(y)} labels "
            f"({int(eligible.sum())} randomly selected), per class in each part {counts}; each part needs at least "
            f"{MIN_PER_CLASS} of every class, and a decision at the declared effect size needs about {needed} "
            f"randomly selected evaluation labels (about {math.ceil(needed / eval_fraction)} labels at "
            f"--eval-fraction {eval_fraction}){rarest}; label at least {need_total} random samples{biased}"
        )
    note = f"stratified random split (seed {seed}): {len(ad_arr)} adaptation, {len(ev_arr)} evaluation; " + (
        "evaluation drawn only from the randomly selected samples "
        f"({int(eligible.sum())} of {len(y)}; the others adapt only)"
        if labels.selected_by is not None
        else "the labels file does not record how samples were selected (no selected_by): all treated as random"
    )
    return AdaptSplit(
        seed=seed,
        eval_fraction=eval_fraction,
        adaptation=ad_arr.tolist(),
        evaluation=ev_arr.tolist(),
        n_random=int(eligible.sum()),
        note=note,
    )
