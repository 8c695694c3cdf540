"""The promotion rule: does a challenger replace the champion? One rule for every caller.

``closedloop retrain`` (challenger retrained with new labels, both scored on the same held-out split)
and live comparisons (champion and challenger on the same labeled production requests) call
:func:`decide_promotion`. The rule:

1. the challenger is better than the champion on the declared metric (the task's primary metric),
   by a paired one-sided test on the same cases at ``alpha``. One declared comparison is not
   corrected for the configurations the challenger's run searched on validation (that search did
   not see these cases); when ``extra_metrics`` are compared too, the declared comparison's p-value
   is Holm-adjusted over every comparison made;
2. the challenger meets the task's acceptance bar on every acceptance metric, on the same cases;
3. every operational constraint passed in (latency, size, ...) holds.

Promote only when all three hold; ``reasons`` says which did not.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.promotion import decide_promotion
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> champ = np.clip(0.2 * y + 0.8 * rng.random(400), 0, 1)
    >>> chall = np.clip(0.6 * y + 0.4 * rng.random(400), 0, 1)
    >>> d = decide_promotion(y, chall, champ, metric="auc", problem_type="binary")
    >>> d.promote, d.reasons[0].startswith("auc")
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.stats.gate import TestComparison, compare_family
from closedloop.stats.metrics import Convention, compute_metric, higher_is_better

RULE = (
    "promote when the challenger is better on the declared metric by a paired one-sided test on the "
    "same held-out cases (p < alpha; Holm over the comparisons made when several metrics are compared; "
    "no correction for the configurations searched on validation), meets every acceptance bar on "
    "those cases, and meets every operational constraint"
)


class Check(BaseModel):
    """One bar the challenger must meet (an acceptance metric or an operational constraint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """e.g. ``acceptance.auc``, ``max_latency_ms``."""
    value: float
    bar: float
    ok: bool


class PromotionDecision(BaseModel):
    """The decision and its evidence. ``comparison`` is the declared comparison (challenger - champion)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    promote: bool
    metric: str
    delta: float
    """``challenger - champion`` on ``metric``."""
    ci95: list[float]
    bound95: float
    """One-sided 95% bound on ``delta`` on the side of "the challenger is better"."""
    p_value: float
    """One-sided (H0: the challenger is not better), the declared comparison alone."""
    p_adjusted: float
    """What the rule compares with ``alpha``: ``p_value``, or Holm over several comparisons."""
    correction: str
    better: bool
    significant: bool
    champion_value: float
    challenger_value: float
    higher_is_better: bool
    method: str
    n: int
    alpha: float
    evaluated_on: str
    """Which cases both models were scored on (``test``, ``validation``, ``live``...)."""
    comparisons: list[TestComparison]
    checks: list[Check]
    reasons: list[str]
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def acceptance_checks(
    y_true: Any,
    proba: Any,
    acceptance: Mapping[str, float],
    problem_type: str,
    *,
    convention: Convention = "standard",
    threshold: float | None = None,
) -> list[Check]:
    """The task's acceptance bars, each measured on the given cases."""
    out = []
    for name, bar in acceptance.items():
        v = compute_metric(name, y_true, proba, problem_type, threshold=threshold, convention=convention)
        ok = v >= bar if higher_is_better(name) else v <= bar
        out.append(Check(name=f"acceptance.{name}", value=float(v), bar=float(bar), ok=bool(ok)))
    return out


def decide_promotion(
    y_true: Any,
    challenger_proba: Any,
    champion_proba: Any,
    *,
    metric: str,
    problem_type: str,
    convention: Convention = "standard",
    threshold: float | None = None,
    alpha: float = 0.05,
    acceptance: Mapping[str, float] | None = None,
    constraints: Sequence[Check] = (),
    extra_metrics: Sequence[str] = (),
    evaluated_on: Literal["test", "validation", "live"] | str = "test",
    n_resamples: int = 1000,
    seed: int = 0,
) -> PromotionDecision:
    """Apply the promotion rule (module docstring) to both models' predictions on the same cases."""
    metrics = [metric, *[m for m in extra_metrics if m != metric]]
    comps = compare_family(
        y_true,
        challenger_proba,
        {"champion": champion_proba},
        metrics,
        problem_type,
        convention=convention,
        threshold=threshold,
        n_resamples=n_resamples,
        seed=seed,
    )
    d = comps[0]
    significant = bool(d.better and d.p_adjusted < alpha)
    checks = [
        *acceptance_checks(
            np.asarray(y_true),
            challenger_proba,
            acceptance or {},
            problem_type,
            convention=convention,
            threshold=threshold,
        ),
        *constraints,
    ]
    correction = "none" if len(comps) == 1 else f"Holm over {len(comps)} comparisons"
    p_txt = f"one-sided p={d.p_value:.3g}" + (
        f", {d.p_adjusted:.3g} after {correction}" if len(comps) > 1 else ""
    )
    reasons: list[str] = []
    if not d.better:
        reasons.append(f"the challenger is not better on {d.metric} (delta {d.delta:+.4f})")
    elif not significant:
        reasons.append(f"the improvement {d.delta:+.4f} is not significant ({p_txt} >= {alpha})")
    reasons += [f"{c.name} not met ({c.value:.4g} vs {c.bar:.4g})" for c in checks if not c.ok]
    promote = bool(significant and all(c.ok for c in checks))
    if promote:
        reasons.append(
            f"{d.metric} {d.baseline_value:.4f} -> {d.model_value:.4f} (delta {d.delta:+.4f}, 95% CI "
            f"[{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}], {p_txt}, n = {d.n}, on {evaluated_on}); "
            + ("all bars met" if checks else "no bars declared")
        )
    return PromotionDecision(
        promote=promote,
        metric=d.metric,
        delta=d.delta,
        ci95=list(d.ci95),
        bound95=d.bound95,
        p_value=d.p_value,
        p_adjusted=d.p_adjusted,
        correction=correction,
        better=d.better,
        significant=significant,
        champion_value=d.baseline_value,
        challenger_value=d.model_value,
        higher_is_better=d.higher_is_better,
        method=d.method,
        n=d.n,
        alpha=alpha,
        evaluated_on=evaluated_on,
        comparisons=comps,
        checks=checks,
        reasons=reasons,
    )
