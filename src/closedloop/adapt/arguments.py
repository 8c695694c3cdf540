"""``closedloop adapt``'s command-line defaults (the promotion flags it shares with ``closedloop
retrain`` are declared in :mod:`closedloop.stats.promotion_arguments`)."""

from __future__ import annotations

DEFAULT_CHALLENGERS: tuple[str, ...] = ("recalibration", "head", "finetune")
"""``closedloop adapt``'s challenger families by default (here, light, so ``--help`` imports no numpy);
the choice among them is made by cross-validation on the adaptation labels."""

WARM_START_WEIGHT = 5
"""The warm-start retrain's default weight (each production fit label added this many times to the
champion's training split), chosen on bench_shift_recovery's development half
(docs/results/shift_recovery_dev.txt). A pipeline rerun's stays 1: a new search over the training
split is a different use of the samples and was not tuned."""

WARM_START_THRESHOLD = "cross_fit"
"""Where a warm start's threshold is set by default (``--retrain-threshold``): on out-of-fold scores of
every adaptation label, the shipped warm start trained on all of them. Chosen over ``held_out`` and
``cross_fit_half`` on bench_shift_recovery's development half by the declared rule of
``shift_recovery_tune.py`` (docs/results/shift_recovery_crossfit_dev.txt). A pipeline rerun stays
``held_out`` (cross-fitting it would take three pipeline runs)."""
