"""The promotion rule's command-line flags, declared once for every command that applies it
(``closedloop adapt``, ``closedloop retrain``): ``--eval-labels``, ``--alpha``, ``--margin``,
``--unseal-test``, with the same names, defaults and meaning everywhere. Kept free of numpy so that
``--help`` stays light."""

from __future__ import annotations

from typing import Any

EVAL_LABELS_HELP = (
    "randomly selected labeled production samples (.npz: images, labels[, selected_by, model_version, proba]; "
    "or CSV/Parquet with a label column): the challenger must be better there (uncertainty-selected samples "
    "are refused)"
)


def add_promotion_arguments(parser: Any, *, eval_labels_help: str = EVAL_LABELS_HELP) -> None:
    """Add the flags of :func:`closedloop.stats.promotion.decide_promotion` to ``parser``."""
    parser.add_argument("--eval-labels", help=eval_labels_help)
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="one-sided significance level (default 0.05)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.02,
        help="non-inferiority margin on the original test split, in the metric's units (default 0.02)",
    )
    parser.add_argument("--unseal-test", metavar="REASON", help="re-open the test split for this comparison")
