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

WARM_START_THRESHOLD = "cross_fit_half_platt"
"""Where a warm start's threshold is set by default (``--retrain-threshold``): where a Platt map of the
out-of-fold scores of every adaptation label reaches the task's cost ratio, the shipped warm start the
one on the fit half (two warm starts). Chosen in session 13 over ``cross_fit`` (session 12's default,
chosen over ``held_out`` and ``cross_fit_half``: docs/results/shift_recovery_crossfit_dev.txt),
``cross_fit_platt`` and ``cross_fit_half`` on bench_shift_recovery's development half by the declared
rule ``RULE_THRESHOLD`` of ``shift_recovery_tune.py`` (docs/results/shift_recovery_threshold_dev.txt).
A pipeline rerun stays ``held_out`` (cross-fitting it would take two or three pipeline runs)."""
