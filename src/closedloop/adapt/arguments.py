"""``closedloop adapt``'s command-line defaults (the promotion flags it shares with ``closedloop
retrain`` are declared in :mod:`closedloop.stats.promotion_arguments`)."""

from __future__ import annotations

DEFAULT_CHALLENGERS: tuple[str, ...] = ("recalibration", "head", "finetune")
"""``closedloop adapt``'s challenger families by default (here, light, so ``--help`` imports no numpy);
the choice among them is made by cross-validation on the adaptation labels."""
