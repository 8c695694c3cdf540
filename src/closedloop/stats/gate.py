"""The gate: does the trained model beat the best baseline on test, beyond chance and selection?

Called once, at the single final test evaluation, with the model's and the refitted best
baseline's predictions on the same test examples. The p-value is one-sided (H0: the model is not
better) and Holm-adjusted for the ``n_configs`` configurations tried on validation before picking
this one; the caller then applies its :data:`GatePolicy` with :func:`apply_policy`.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.gate import beats_baseline
    >>> # task = build_task_spec(...); result = beats_baseline(y, p_model, p_base, task, n_configs=12)
    >>> # result["significant"], result["sentence"]
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from closedloop.core.errors import ClosedLoopError
from closedloop.stats.multiple import holm_best_of
from closedloop.stats.paired import compare

if TYPE_CHECKING:
    from closedloop.stages.task import TaskSpec

GatePolicy = Literal["warn", "fail"]
log = logging.getLogger("closedloop")


class GateFailedError(ClosedLoopError):
    """The model did not beat the best baseline significantly and the policy is ``fail``."""


def _fmt(x: float) -> str:
    return f"{x:.3f}" if abs(x) >= 0.001 or x == 0 else f"{x:.1e}"


def _fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def beats_baseline(
    y_true: Any,
    model_proba: Any,
    baseline_proba: Any,
    task: TaskSpec,
    *,
    n_configs: int,
    seed: int = 0,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Model vs. best baseline on the task's primary metric.

    Returns ``{metric, delta, ci95, p_value, p_holm, n_configs, significant, sentence, ...}``:
    ``delta = model - baseline``; ``p_value`` one-sided; ``p_holm`` conservative over the
    ``n_configs`` configurations tried; ``significant`` when the model is better and
    ``p_holm < alpha``.
    """
    metric = task.primary_metric
    res = compare(
        metric,
        y_true,
        model_proba,
        baseline_proba,
        task.problem_type,
        n_resamples=n_resamples,
        seed=seed,
        convention=task.metric_convention,
        threshold=threshold,
        method="auto",
    )
    n_configs = max(1, int(n_configs))
    p_holm = holm_best_of(res.p_one_sided, n_configs)
    better = res.delta > 0 if res.higher_is_better else res.delta < 0
    significant = bool(better and p_holm < alpha)
    lo, hi = res.ci95
    core = (
        f"{metric} {_fmt(res.value_a)} for the model vs {_fmt(res.value_b)} for the best baseline "
        f"(difference {res.delta:+.3f}, 95% CI [{_fmt(lo)}, {_fmt(hi)}], n = {res.n})"
    )
    sel = f"selected among {n_configs} configuration{'s' if n_configs != 1 else ''}"
    if significant:
        sentence = (
            f"The model beats the best baseline on test: {core}; one-sided p = {_fmt_p(res.p_one_sided)}, "
            f"{_fmt_p(p_holm)} after Holm adjustment ({sel})."
        )
    else:
        why = (
            "it scores worse than the baseline"
            if not better and res.delta != 0
            else f"the Holm-adjusted p-value is {_fmt_p(p_holm)} ({sel}), not below {alpha}"
        )
        sentence = (
            f"The model does NOT significantly beat the best baseline on test: {core}; {why}. "
            "Treat it as no better than the simple baseline until more or better data say otherwise."
        )
    return {
        "metric": metric,
        "delta": res.delta,
        "ci95": [lo, hi],
        "p_value": res.p_one_sided,
        "p_two_sided": res.p_value,
        "p_holm": p_holm,
        "n_configs": n_configs,
        "significant": significant,
        "model_value": res.value_a,
        "baseline_value": res.value_b,
        "higher_is_better": res.higher_is_better,
        "method": res.method,
        "n": res.n,
        "sentence": sentence,
    }


def apply_policy(result: dict[str, Any], policy: GatePolicy) -> None:
    """Warn (log) or raise :class:`GateFailedError` when ``result`` is not significant."""
    if result.get("significant"):
        return
    if policy == "fail":
        raise GateFailedError(result["sentence"] + " (gate policy: fail)")
    if policy != "warn":
        raise ClosedLoopError(f"unknown gate policy {policy!r}; expected 'warn' or 'fail'")
    log.warning("%s", result["sentence"])
