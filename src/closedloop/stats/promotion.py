"""The promotion rule: does a challenger replace the champion? One rule for every caller.

``closedloop retrain`` (a challenger retrained with new labels), ``closedloop adapt`` (a challenger
adapted to production from a few production labels) and live comparisons (champion and challenger on
the same labeled production requests) call :func:`decide_promotion`. The rule:

1. **better where it will work**: the challenger is better than the champion on the declared metric,
   by a paired one-sided test on the same cases at ``alpha`` (for ``adapt``: the randomly selected
   evaluation part of the production labels, never the part it was adapted on). One declared
   comparison is not corrected for the configurations the challenger's run searched on validation
   (that search did not see these cases); when ``extra_metrics`` are compared too, the declared
   comparison's p-value is Holm-adjusted over every comparison made;
2. **not worse where it was tested** (when a ``reference`` is passed): on the original test split
   (opened through the test ledger by the caller), the one-sided 95% bound of ``challenger -
   champion`` on the same metric is within the declared ``margin`` (non-inferiority);
3. the challenger meets the task's acceptance bar on every acceptance metric, on the cases of 1;
4. every operational constraint passed in (latency, size, ...) holds.

Promote only when all hold; ``reasons`` says which did not.

Each model is judged at its **own shipped operating point**: ``threshold`` is the challenger's,
``champion_threshold`` the champion's (default: the same). The metric ``expected_cost`` is the
task's expected cost per case at those thresholds (``costs=(cost_false_positive,
cost_false_negative)``), compared by a paired sign-flip randomization test.

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
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.stats.errors import StatsError
from closedloop.stats.gate import TestComparison, compare_family
from closedloop.stats.metrics import Convention, compute_metric, higher_is_better
from closedloop.stats.multiple import holm

RULE = (
    "promote when the challenger is better on the declared metric by a paired one-sided test on the "
    "same held-out cases (p < alpha; Holm over the comparisons made when several metrics are compared; "
    "no correction for the configurations searched on validation), is non-inferior within the declared "
    "margin on the original test split when one is given, meets every acceptance bar on the evaluation "
    "cases, and meets every operational constraint; each model at its own shipped threshold"
)
THRESHOLD_FREE = frozenset({"auc", "pr_auc", "log_loss", "ece"})
"""Metrics of the probabilities themselves; every other binary metric depends on the threshold."""


class Check(BaseModel):
    """One bar the challenger must meet (an acceptance metric or an operational constraint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """e.g. ``acceptance.auc``, ``max_latency_ms``."""
    value: float
    bar: float
    ok: bool


class NonInferiority(BaseModel):
    """Part 2 of the rule: the challenger is not worse than ``margin`` on the original test split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    margin: float
    delta: float
    """``challenger - champion``."""
    bound95: float
    """One-sided 95% bound on ``delta`` on the side of "the challenger is worse" (lower bound when
    higher is better): non-inferior when it stays within ``margin``."""
    champion_value: float
    challenger_value: float
    higher_is_better: bool
    n: int
    evaluated_on: str
    ok: bool
    sentence: str


class PairedCases(BaseModel):
    """Both models' predictions on the same labeled cases (e.g. the original test split)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    y_true: Any
    challenger_proba: Any
    champion_proba: Any
    evaluated_on: str = "test"
    groups: Any = None
    """A group id per case (``data.group``): the comparison resamples whole groups."""
    weights: Any = None
    """A weight per case: e.g. the test split reweighted to production's class mix (``adapt --test-mix
    production``); ``None``: every case alike."""


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
    non_inferiority: NonInferiority | None = None
    """Part 2 of the rule, when a reference split was given."""
    threshold: float | None = None
    """The challenger's operating threshold used for threshold-dependent metrics."""
    champion_threshold: float | None = None
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


def at_own_threshold(proba: Any, threshold: float | None) -> np.ndarray:
    """Binary P(pos) re-mapped monotonically so that ``threshold`` lands on 0.5: thresholding the
    result at 0.5 gives the model's own decisions, and ranking metrics are unchanged."""
    p = np.asarray(proba, dtype=np.float64)
    p = p[:, -1] if p.ndim == 2 else p
    t = 0.5 if threshold is None else float(threshold)
    if not 0.0 < t < 1.0:
        return np.where(p >= t, 1.0, 0.0)
    return np.where(p < t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1.0 - t))


def cost_comparison(
    y_true: Any,
    challenger_pred: Any,
    champion_pred: Any,
    costs: tuple[float, float],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    weights: Any = None,
) -> TestComparison:
    """Expected cost per case (``cost_fp`` per false alarm, ``cost_fn`` per miss) of two sets of
    binary decisions on the same cases: paired bootstrap interval, and a one-sided p-value from a
    sign-flip randomization test of the per-case cost differences (H0: the challenger is not cheaper).
    ``weights``: a weight per case in every mean (``None``: alike)."""
    cost_fp, cost_fn = (float(c) for c in costs)
    y = np.asarray(y_true).reshape(-1).astype(int)
    a, b = (np.asarray(v).reshape(-1).astype(bool) for v in (challenger_pred, champion_pred))
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise StatsError(
            f"expected_cost: {len(y)} labels, {len(a)} and {len(b)} decisions; need equal, non-zero"
        )

    def per_case(pred: np.ndarray) -> np.ndarray:
        return np.where(pred & (y == 0), cost_fp, 0.0) + np.where(~pred & (y == 1), cost_fn, 0.0)

    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    w = w / w.mean()  # the mean of w * cost is the weighted mean
    ca, cb = per_case(a) * w, per_case(b) * w
    d = ca - cb
    rng = np.random.default_rng([seed, 20])
    idx = rng.integers(0, len(y), (n_resamples, len(y)))
    boot = d[idx].mean(axis=1) if weights is None else d[idx].sum(axis=1) / w[idx].sum(axis=1)
    signs = rng.choice([-1.0, 1.0], (max(n_resamples, 2000), len(y)))
    flipped = (signs * np.abs(d)).mean(axis=1)
    p_one = float((np.sum(flipped <= d.mean()) + 1) / (len(flipped) + 1))
    p_two = float(min(1.0, (np.sum(np.abs(flipped) >= abs(d.mean())) + 1) / (len(flipped) + 1)))
    return TestComparison(
        metric="expected_cost",
        baseline="champion",
        delta=float(d.mean()),
        ci95=[float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        bound95=float(np.quantile(boot, 0.95)),
        p_value=p_one,
        p_two_sided=p_two,
        p_adjusted=p_one,
        model_value=float(ca.mean()),
        baseline_value=float(cb.mean()),
        higher_is_better=False,
        method="paired sign-flip randomization (interval: paired bootstrap)",
        n=len(y),
    )


@dataclass(frozen=True)
class Scoring:
    """How both models are scored, the same in each part of the rule: the task, each model's own
    threshold, the costs of ``expected_cost``, and the resampling."""

    problem_type: str
    convention: Convention = "standard"
    threshold: float | None = None
    champion_threshold: float | None = None
    costs: tuple[float, float] | None = None
    n_resamples: int = 1000
    seed: int = 0
    clusters: Any = None
    """A group id per case, resampled whole (the cost comparison's sign-flip test stays per case)."""
    row_weights: Any = None
    """A weight per case (:attr:`PairedCases.weights`)."""


def _comparisons(y: Any, chall: Any, champ: Any, metrics: list[str], s: Scoring) -> list[TestComparison]:
    """Challenger vs champion on each metric, in order, Holm over them. Threshold-dependent metrics
    of a binary task see each model's decisions at its own threshold; threshold-free ones
    (``auc``, ``log_loss``, ...) see the probabilities."""
    own = s.problem_type == "binary"
    out: list[TestComparison] = []
    for m in metrics:
        if m == "expected_cost":
            if s.problem_type != "binary" or s.costs is None:
                raise StatsError("metric 'expected_cost' needs a binary task and costs=(cost_fp, cost_fn)")
            ca = at_own_threshold(chall, s.threshold) >= 0.5
            cb = at_own_threshold(champ, s.champion_threshold) >= 0.5
            out.append(
                cost_comparison(
                    y, ca, cb, s.costs, n_resamples=s.n_resamples, seed=s.seed, weights=s.row_weights
                )
            )
            continue
        if own and m not in THRESHOLD_FREE:
            a, b = at_own_threshold(chall, s.threshold), at_own_threshold(champ, s.champion_threshold)
            t = 0.5
        else:
            a, b, t = chall, champ, s.threshold
        out += compare_family(
            y, a, {"champion": b}, [m], s.problem_type,
            convention=s.convention, threshold=t, n_resamples=s.n_resamples, seed=s.seed, clusters=s.clusters,
            row_weights=s.row_weights,
        )  # fmt: skip
    if len(out) > 1:
        adj = holm([c.p_value for c in out])
        out = [c.model_copy(update={"p_adjusted": float(a)}) for c, a in zip(out, adj, strict=True)]
    return out


def non_inferiority(
    cases: PairedCases,
    *,
    metric: str,
    margin: float,
    problem_type: str,
    convention: Convention = "standard",
    threshold: float | None = None,
    champion_threshold: float | None = None,
    costs: tuple[float, float] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> NonInferiority:
    """Part 2 of the rule on ``cases``: is ``challenger - champion`` no worse than ``margin``?"""
    scoring = Scoring(problem_type, convention, threshold, champion_threshold, costs, n_resamples, seed)
    return _non_inferiority(cases, metric, margin, scoring)


def _non_inferiority(cases: PairedCases, metric: str, margin: float, s: Scoring) -> NonInferiority:
    if margin < 0:
        raise StatsError(f"the non-inferiority margin must be >= 0, got {margin}")
    s = replace(s, clusters=cases.groups, row_weights=cases.weights)
    (c,) = _comparisons(cases.y_true, cases.challenger_proba, cases.champion_proba, [metric], s)
    ok = bool(c.bound95 >= -margin) if c.higher_is_better else bool(c.bound95 <= margin)
    side = "lower" if c.higher_is_better else "upper"
    sentence = (
        f"on {cases.evaluated_on} (n = {c.n}): {metric} {c.baseline_value:.4f} -> {c.model_value:.4f} "
        f"(delta {c.delta:+.4f}, one-sided 95% {side} bound {c.bound95:+.4f}); "
        + ("non-inferior" if ok else "NOT non-inferior")
        + f" within the declared margin {margin:g}"
    )
    return NonInferiority(
        metric=metric,
        margin=float(margin),
        delta=c.delta,
        bound95=c.bound95,
        champion_value=c.baseline_value,
        challenger_value=c.model_value,
        higher_is_better=c.higher_is_better,
        n=c.n,
        evaluated_on=cases.evaluated_on,
        ok=ok,
        sentence=sentence,
    )


def decide_promotion(
    y_true: Any,
    challenger_proba: Any,
    champion_proba: Any,
    *,
    metric: str,
    problem_type: str,
    convention: Convention = "standard",
    threshold: float | None = None,
    champion_threshold: float | None = None,
    alpha: float = 0.05,
    acceptance: Mapping[str, float] | None = None,
    constraints: Sequence[Check] = (),
    extra_metrics: Sequence[str] = (),
    evaluated_on: Literal["test", "validation", "live"] | str = "test",
    reference: PairedCases | None = None,
    margin: float = 0.0,
    costs: tuple[float, float] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    clusters: Any = None,
) -> PromotionDecision:
    """Apply the promotion rule (module docstring) to both models' predictions on the same cases.

    ``threshold`` is the challenger's operating threshold and ``champion_threshold`` the champion's
    (default: the challenger's, the old single-threshold behaviour); ``reference`` is the original
    test split for the non-inferiority part, judged within ``margin`` on the same metric. ``clusters``: a
    group id per case of ``y_true`` (``data.group``), resampled whole."""
    champion_threshold = threshold if champion_threshold is None else champion_threshold
    scoring = Scoring(
        problem_type, convention, threshold, champion_threshold, costs, n_resamples, seed, clusters
    )
    metrics = [metric, *[m for m in extra_metrics if m != metric]]
    comps = _comparisons(y_true, challenger_proba, champion_proba, metrics, scoring)
    d = comps[0]
    significant = bool(d.better and d.p_adjusted < alpha)
    ni = _non_inferiority(reference, metric, margin, scoring) if reference is not None else None
    accept_metrics = {k: v for k, v in (acceptance or {}).items()}
    checks = [
        *acceptance_checks(
            np.asarray(y_true),
            challenger_proba,
            accept_metrics,
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
        reasons.append(f"the challenger is not better on {d.metric} (delta {d.delta:+.4f}) on {evaluated_on}")
    elif not significant:
        reasons.append(
            f"the improvement {d.delta:+.4f} is not significant ({p_txt} >= {alpha}) on {evaluated_on}"
        )
    if ni is not None and not ni.ok:
        reasons.append(ni.sentence)
    reasons += [f"{c.name} not met ({c.value:.4g} vs {c.bar:.4g})" for c in checks if not c.ok]
    promote = bool(significant and all(c.ok for c in checks) and (ni is None or ni.ok))
    if promote:
        reasons.append(
            f"{d.metric} {d.baseline_value:.4f} -> {d.model_value:.4f} (delta {d.delta:+.4f}, 95% CI "
            f"[{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}], {p_txt}, n = {d.n}, on {evaluated_on}); "
            + (f"{ni.sentence}; " if ni is not None else "")
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
        non_inferiority=ni,
        threshold=threshold,
        champion_threshold=champion_threshold,
        checks=checks,
        reasons=reasons,
    )
