"""The gate: does the trained model beat the best baseline on test, beyond chance?

Called once, at the single final test evaluation, with the model's and the refitted best
baseline's predictions on the same test examples. The test split is opened once, for one model
chosen on validation, so the declared comparison (primary metric, model vs best baseline,
one-sided: H0 "the model is not better") needs no correction for the configurations searched on
validation: that selection happened on other data, and its optimism is reported beside the
validation score (:mod:`closedloop.stats.selection`). When several metrics or baselines are compared
on test, Holm's adjustment runs over exactly those test comparisons, and the sentence says so.
The caller then applies its :data:`GatePolicy` with :func:`apply_policy`.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.gate import beats_baseline
    >>> # task = build_task_spec(...); result = beats_baseline(y, p_model, p_base, task, n_configs=12)
    >>> # result.significant, result.sentence, result.to_dict()
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from closedloop.artifacts.gate import GateResult, TestComparison
from closedloop.core.errors import ClosedLoopError
from closedloop.stats.errors import StatsError
from closedloop.stats.metrics import Convention
from closedloop.stats.multiple import holm
from closedloop.stats.paired import compare

if TYPE_CHECKING:
    from closedloop.artifacts.task import TaskSpec

__all__ = ["GateFailedError", "GatePolicy", "GateResult", "TestComparison", "apply_policy", "beats_baseline"]

GatePolicy = Literal["warn", "fail"]
log = logging.getLogger("closedloop")


class GateFailedError(ClosedLoopError):
    """The model did not beat the best baseline significantly and the policy is ``fail``."""


def _fmt(x: float) -> str:
    return f"{x:.3f}" if abs(x) >= 0.001 or x == 0 else f"{x:.1e}"


def _fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def compare_family(
    y_true: Any,
    model_proba: Any,
    others: Mapping[str, Any],
    metrics: Sequence[str],
    problem_type: str,
    *,
    convention: Convention = "standard",
    threshold: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    clusters: Any = None,
    row_weights: Any = None,
) -> list[TestComparison]:
    """The model against each of ``others`` on each metric (metric-major order, so the first entry
    is the declared comparison), one-sided p-values Holm-adjusted over this family. ``clusters``: a
    group id per row (``data.group``), resampled whole; ``row_weights``: a weight per row (:func:`compare`)."""
    if not others or not metrics:
        raise StatsError("a comparison family needs at least one metric and one model to compare with")
    results = [
        (
            name,
            compare(
                metric,
                y_true,
                model_proba,
                proba,
                problem_type,
                n_resamples=n_resamples,
                seed=seed,
                convention=convention,
                threshold=threshold,
                method="auto",
                clusters=clusters,
                row_weights=row_weights,
            ),
        )
        for metric in metrics
        for name, proba in others.items()
    ]
    adjusted = holm([r.p_one_sided for _, r in results])
    n_groups = None if clusters is None else len(np.unique(np.asarray(clusters).astype(str)))
    return [
        TestComparison(
            metric=r.metric,
            baseline=name,
            delta=r.delta,
            ci95=list(r.ci95),
            bound95=r.bound_one_sided,
            p_value=r.p_one_sided,
            p_two_sided=r.p_value,
            p_adjusted=pa,
            model_value=r.value_a,
            baseline_value=r.value_b,
            higher_is_better=r.higher_is_better,
            method=r.method,
            n=r.n,
            n_groups=n_groups,
        )
        for (name, r), pa in zip(results, adjusted, strict=True)
    ]


def gate_on_test(
    y_true: Any,
    model_proba: Any,
    baselines: Mapping[str, Any],
    task: TaskSpec,
    *,
    metrics: Sequence[str] | None = None,
    n_configs: int = 0,
    seed: int = 0,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    threshold: float | None = None,
    clusters: Any = None,
) -> GateResult:
    """Model vs each baseline on each metric (the declared one first: the task's primary metric
    against the first baseline). The decision is on the declared comparison, Holm-adjusted over
    the comparisons made here when there are several; ``n_configs`` is only reported. ``clusters``: a
    group id per test row (``data.group``): the resamples draw whole groups."""
    primary = task.primary_metric
    wanted = [primary, *[m for m in (metrics or []) if m != primary]]
    comps = compare_family(
        y_true,
        model_proba,
        baselines,
        wanted,
        task.problem_type,
        convention=task.metric_convention,
        threshold=threshold,
        n_resamples=n_resamples,
        seed=seed,
        clusters=clusters,
    )
    d = comps[0]
    n_text = f"n = {d.n}" if d.n_groups is None else f"n = {d.n} rows in {d.n_groups} groups, resampled whole"
    k = len(comps)
    significant = bool(d.better and d.p_adjusted < alpha)
    lo, hi = d.ci95
    core = (
        f"{d.metric} {_fmt(d.model_value)} for the model vs {_fmt(d.baseline_value)} for the {d.baseline} "
        f"(difference {d.delta:+.3f}, 95% CI [{_fmt(lo)}, {_fmt(hi)}], one-sided 95% bound "
        f"{'>' if d.higher_is_better else '<'} {d.bound95:+.3f}, {n_text})"
    )
    if k == 1:
        correction = "none"
        p_text = f"one-sided p = {_fmt_p(d.p_value)} ({d.method})"
        why_none = (
            "one declared comparison on a test split opened once: no correction for the "
            + (f"{n_configs} configurations " if n_configs > 0 else "configurations ")
            + "searched on validation, whose selection happened there"
        )
    else:
        correction = f"Holm over {k} test comparisons"
        family = f"{', '.join(dict.fromkeys(c.metric for c in comps))} vs {', '.join(baselines)}"
        p_text = (
            f"one-sided p = {_fmt_p(d.p_value)} ({d.method}), {_fmt_p(d.p_adjusted)} after Holm "
            f"adjustment over the {k} comparisons made on test ({family})"
        )
        why_none = ""
    if significant:
        sentence = f"The model beats the {d.baseline} on test: {core}; {p_text}."
    else:
        why = (
            f"it scores worse than the {d.baseline}"
            if not d.better and d.delta != 0
            else f"{p_text}, not below {alpha}"
        )
        sentence = (
            f"The model does NOT significantly beat the {d.baseline} on test: {core}; {why}. "
            "Treat it as no better than the simple baseline until more or better data say otherwise."
        )
    if why_none:
        sentence += f" ({why_none.capitalize()}.)"
    return GateResult(
        metric=d.metric,
        baseline=d.baseline,
        delta=d.delta,
        ci95=[lo, hi],
        bound95=d.bound95,
        p_value=d.p_value,
        p_two_sided=d.p_two_sided,
        p_adjusted=d.p_adjusted,
        correction=correction,
        n_test_comparisons=k,
        n_configs=max(0, int(n_configs)),
        significant=significant,
        model_value=d.model_value,
        baseline_value=d.baseline_value,
        higher_is_better=d.higher_is_better,
        method=d.method,
        n=d.n,
        n_groups=d.n_groups,
        alpha=alpha,
        comparisons=comps,
        sentence=sentence,
    )


def beats_baseline(
    y_true: Any,
    model_proba: Any,
    baseline_proba: Any,
    task: TaskSpec,
    *,
    n_configs: int = 0,
    seed: int = 0,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    threshold: float | None = None,
    baseline_name: str = "best baseline",
    clusters: Any = None,
) -> GateResult:
    """The single declared comparison: model vs the best baseline on the primary metric.

    ``n_configs`` (configurations tried on validation) is reported, not corrected for: see the
    module docstring. ``result.p_adjusted == result.p_value`` here.
    """
    return gate_on_test(
        y_true,
        model_proba,
        {baseline_name: baseline_proba},
        task,
        n_configs=n_configs,
        seed=seed,
        n_resamples=n_resamples,
        alpha=alpha,
        threshold=threshold,
        clusters=clusters,
    )


def apply_policy(result: GateResult | Mapping[str, Any], policy: GatePolicy) -> None:
    """Warn (log) or raise :class:`GateFailedError` when ``result`` is not significant."""
    if policy not in ("warn", "fail"):
        raise ClosedLoopError(f"unknown gate policy {policy!r}; expected 'warn' or 'fail'")
    r = result.to_dict() if isinstance(result, GateResult) else result
    if r.get("significant"):
        return
    if policy == "fail":
        raise GateFailedError(r["sentence"] + " (gate policy: fail)")
    log.warning("%s", r["sentence"])
