"""``closedloop compare-live LOG_DIR``: champion vs challenger from the request log, and a recommendation.

* **Shadow** (``--shadow RUN_DIR``): the challenger scored the same inputs as the champion. Rows are
  joined by ``(request_id, index)``, so every statistic is *paired*: the disagreement rate of the two
  models' decisions (Wilson interval) and, on the rows with feedback labels, the paired bootstrap
  difference in the task's primary metric with its interval and p-value
  (:func:`closedloop.stats.paired.compare`, the statistics ``closedloop retrain`` uses).
* **Canary** (``--canary RUN_DIR``): the challenger answered other requests (a deterministic share),
  so the two arms are independent samples of the same traffic: the difference in the declared metric
  on each arm's labeled rows, each arm at the threshold of the folder its records name, with an
  independent two-sample bootstrap interval and p-value.

Only randomly selected labels judge (feedback marked ``random`` or a recorded spot check's picks);
other labelled rows are counted in ``n_labeled_not_random`` and left out.

The recommendation applies the one promotion rule (:func:`closedloop.stats.promotion.decide_promotion`,
shared with ``closedloop retrain`` and ``closedloop adapt``) to the paired (shadow) rows; the canary's
independent arms use :func:`promotion_rule`, the same rule on a two-sample comparison: promote only when
the challenger is better, significantly (one-sided p < alpha), and meets every acceptance bar of the
task on the labeled rows and the latency constraint (p95 of its logged calls).

Over 400 lines but one idea: champion vs challenger from the log (joining, statistics, the decision,
its text and HTML).
"""

from __future__ import annotations

import argparse
import html
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.errors import DataError
from closedloop.monitoring.logreader import RouteRows, read_log


class DisagreementStat(BaseModel):
    """Share of paired rows where the two models' decisions differ."""

    model_config = ConfigDict(extra="forbid")

    rate: float
    ci95: list[float]
    count: int
    n: int
    method: str = "Wilson score interval"


class MetricComparison(BaseModel):
    """Challenger minus champion in one metric on labeled rows."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    value_champion: float
    value_challenger: float
    delta: float
    """challenger - champion."""
    ci95: list[float]
    p_value: float
    """Two-sided, H0: no difference."""
    p_one_sided: float
    """H0: the challenger is not better."""
    higher_is_better: bool
    method: str
    n: int
    """Labeled pairs (paired) or labeled rows of both arms (independent)."""


class ConstraintCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float
    bar: float
    ok: bool
    note: str = ""


class LiveComparison(BaseModel):
    """What ``closedloop compare-live`` reports (``--out report.json``)."""

    model_config = ConfigDict(extra="forbid")

    log_dir: str
    challenger_route: Literal["shadow", "canary"]
    design: Literal["paired", "independent"]
    champion_versions: list[str]
    challenger_versions: list[str]
    n_champion_rows: int
    n_challenger_rows: int
    n_pairs: int
    """Rows both models scored (shadow only)."""
    n_labeled: int
    """Rows with feedback labels behind ``performance`` (randomly selected ones only)."""
    n_labeled_not_random: int = 0
    """Labeled rows left out of ``performance`` and the decision: their feedback is not marked
    ``random`` and no recorded spot check picked them (labels chosen by uncertainty are biased)."""
    disagreement: DisagreementStat | None = None
    mean_abs_probability_difference: float | None = None
    performance: MetricComparison | None = None
    constraints: dict[str, ConstraintCheck] = Field(default_factory=dict)
    alpha: float
    promote: bool
    recommendation: Literal["promote", "keep"]
    reasons: list[str]
    evaluated_on: str
    warnings: list[str] = Field(default_factory=list)


# -- the rule -----------------------------------------------------------------------------------------
def promotion_rule(
    perf: MetricComparison | None, constraints: dict[str, ConstraintCheck], alpha: float
) -> tuple[bool, list[str]]:
    """``closedloop retrain``'s rule (``stages/monitor/retrain.py``, ``compare_runs``): promote when the
    challenger is better, significantly (one-sided p < alpha), and meets every constraint.

    The one adapter between compare-live and that rule: when the rule lives in ``closedloop.stats``
    as a shared function (``closedloop.stats.promotion.decide_promotion`` is being written), this
    body becomes a call to it; for the paired (shadow) design it can take the labeled pairs directly.
    """
    if perf is None:
        return False, [
            "no feedback labels on randomly selected compared rows: which model is better cannot be judged yet"
        ]
    better = perf.delta > 0 if perf.higher_is_better else perf.delta < 0
    significant = better and perf.p_one_sided < alpha
    reasons = []
    if not better:
        reasons.append(f"the challenger is not better on {perf.metric} (delta {perf.delta:+.4f})")
    elif not significant:
        reasons.append(
            f"the improvement {perf.delta:+.4f} is not significant (one-sided p={perf.p_one_sided:.3g} >= {alpha})"
        )
    reasons += [
        f"constraint {k} not met ({v.value:.4g} vs {v.bar})" for k, v in constraints.items() if not v.ok
    ]
    promote = bool(significant and all(v.ok for v in constraints.values()))
    if promote:
        reasons.append(
            f"{perf.metric} {perf.value_champion:.4f} -> {perf.value_challenger:.4f} (delta {perf.delta:+.4f}, "
            f"95% CI [{perf.ci95[0]:+.4f}, {perf.ci95[1]:+.4f}], one-sided p={perf.p_one_sided:.3g}); "
            "constraints met"
        )
    return promote, reasons


# -- statistics ---------------------------------------------------------------------------------------
def wilson(count: int, n: int, z: float = 1.959963984540054) -> list[float]:
    """Wilson score interval of a proportion (sensible at 0 and near 0, unlike the normal one)."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = count / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [float(max(0.0, mid - half)), float(min(1.0, mid + half))]


def independent_compare(
    metric: str,
    y_a: np.ndarray,
    p_a: np.ndarray,
    y_b: np.ndarray,
    p_b: np.ndarray,
    problem: str,
    *,
    threshold: float | None,
    convention: Any,
    n_resamples: int,
    seed: int,
) -> MetricComparison:
    """``metric(a) - metric(b)`` on two independent samples: stratified bootstrap of each arm
    separately, percentile interval, bootstrap p-values."""
    from closedloop.stats.bootstrap import percentile_ci, strata_for, weight_chunks
    from closedloop.stats.metrics import make_metric, prepare

    m = make_metric(metric, problem, threshold=threshold, convention=convention)
    dists, values = [], []
    for k, (y, p) in enumerate(((y_a, p_a), (y_b, p_b))):
        yy, P = prepare(y, p, problem)
        m.check_defined(yy, P)
        values.append(float(m.weighted(yy, P, np.ones((1, len(yy))))[0]))
        chunks = weight_chunks(len(yy), n_resamples, seed + k, strata_for(yy, problem))
        dists.append(np.concatenate([m.weighted(yy, P, W) for W in chunks]))
    d = dists[0] - dists[1]
    d = d[np.isfinite(d)]
    if not len(d):
        raise DataError(f"{metric}: undefined on every bootstrap resample of the labeled rows")
    lo, hi = percentile_ci(d)
    n_le, n_ge = int(np.sum(d <= 0)), int(np.sum(d >= 0))
    p_two = min(1.0, 2 * min(n_le + 1, n_ge + 1) / (len(d) + 1))
    hib = m.higher_is_better
    p_one = (n_le + 1) / (len(d) + 1) if hib else (n_ge + 1) / (len(d) + 1)
    return MetricComparison(
        metric=metric,
        value_champion=values[1],
        value_challenger=values[0],
        delta=values[0] - values[1],
        ci95=[lo, hi],
        p_value=float(p_two),
        p_one_sided=float(p_one),
        higher_is_better=hib,
        method="independent two-sample bootstrap (canary arms answer different requests)",
        n=int(len(y_a) + len(y_b)),
    )


def _canary_compare(
    task: _Task,
    metric: str | None,
    challenger: tuple[np.ndarray, np.ndarray, RouteRows],
    champion: tuple[np.ndarray, np.ndarray, RouteRows],
    n_resamples: int,
    seed: int,
) -> MetricComparison:
    """The canary's two arms on the declared metric (``metric``, default the task's primary one), each
    arm at the threshold of the folder its records name (an adapted challenger decides at its own)."""
    from closedloop.stats.promotion import at_own_threshold

    declared = metric or task.metric
    (ya, Pa, rows_a), (yb, Pb, rows_b) = challenger, champion
    if task.problem_type != "binary":
        if declared == "expected_cost":
            raise DataError(
                f"--metric expected_cost: needs a binary task; the task ({task.source}) is {task.problem_type}"
            )
        return independent_compare(
            declared, ya, Pa, yb, Pb, task.problem_type, threshold=task.threshold, convention=task.convention,
            n_resamples=n_resamples, seed=seed,
        )  # fmt: skip
    t_a, t_b = (_own_threshold(rows, task) for rows in (rows_a, rows_b))
    # each arm re-mapped so that its own threshold lands on 0.5 (ranking unchanged)
    qa, qb = at_own_threshold(Pa, t_a), at_own_threshold(Pb, t_b)
    if declared != "expected_cost":
        return independent_compare(
            declared, ya, qa, yb, qb, "binary", threshold=0.5, convention=task.convention,
            n_resamples=n_resamples, seed=seed,
        )  # fmt: skip
    if task.costs is None:
        raise DataError(
            f"--metric expected_cost: needs business costs (business.cost_false_negative) in the task ({task.source})"
        )
    cost_fp, cost_fn = task.costs

    def per_case(y: np.ndarray, q: np.ndarray) -> np.ndarray:
        d = q >= 0.5
        return np.where(d & (y == 0), cost_fp, 0.0) + np.where(~d & (y == 1), cost_fn, 0.0)

    ca, cb = per_case(np.asarray(ya), qa), per_case(np.asarray(yb), qb)
    rng = np.random.default_rng([seed, 21])
    boot = np.array(
        [rng.choice(ca, len(ca)).mean() - rng.choice(cb, len(cb)).mean() for _ in range(n_resamples)]
    )
    n_le, n_ge = int(np.sum(boot <= 0)), int(np.sum(boot >= 0))
    return MetricComparison(
        metric="expected_cost",
        value_champion=float(cb.mean()),
        value_challenger=float(ca.mean()),
        delta=float(ca.mean() - cb.mean()),
        ci95=[float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        p_value=float(min(1.0, 2 * min(n_le + 1, n_ge + 1) / (len(boot) + 1))),
        p_one_sided=float((n_ge + 1) / (len(boot) + 1)),
        higher_is_better=False,
        method="independent two-sample bootstrap of the cost per case, each arm at its own threshold "
        "(canary arms answer different requests)",
        n=int(len(ca) + len(cb)),
    )


def _own_threshold(rows: RouteRows, task: _Task) -> float | None:
    """The threshold of the folder the rows' latest records name (the task's when it has none)."""
    own = [_threshold(Path(r)) for r in rows.run_dirs[-1:]]
    return own[0] if own and own[0] is not None else task.threshold


# -- task facts from the run directories --------------------------------------------------------------
class _Task(BaseModel):
    problem_type: str
    label_names: list[str]
    metric: str
    convention: Literal["medmnist", "standard"] = "standard"
    acceptance: dict[str, float] = Field(default_factory=dict)
    max_latency_ms: float | None = None
    threshold: float | None = None
    costs: tuple[float, float] | None = None
    """``(cost_false_positive, cost_false_negative)`` from the task's business section, if any."""
    source: str


def _load_task(candidates: list[str]) -> _Task:
    """The task of the first candidate run that has one, read as the task stage wrote it (an older
    layout is one error naming the file and what to do)."""
    from closedloop.artifacts.task import TaskSpec
    from closedloop.core.run_reader import RunDir

    tried = []
    for cand in candidates:
        run = RunDir(cand)
        tried.append(str(run.path))
        where = run.artifact_dir(TaskSpec)
        if where is None:
            continue
        task = run.artifact(TaskSpec)
        return _Task(
            problem_type=task.problem_type,
            label_names=task.label_names,
            metric=task.primary_metric,
            convention=task.metric_convention,
            acceptance=task.acceptance,
            max_latency_ms=task.constraints.max_latency_ms,
            threshold=_threshold(run.path),
            costs=(task.business.cost_false_positive, task.business.cost_false_negative),
            source=str(where),
        )
    raise DataError(
        f"cannot find the task (a TaskSpec artifact in manifest.json) in {tried or 'no run directory'}: "
        "the records' run_dir no longer exists here; pass --run-dir CHALLENGER_RUN_DIR"
    )


def _threshold(run: Path) -> float | None:
    """The decision threshold of the run's shipped export variant (predictor.json), else None; ``run``
    may also be a served folder holding predictor.json itself (e.g. ``closedloop adapt``'s output)."""
    from closedloop.artifacts.export import METADATA_FILE, ExportBundle, PredictorInfo
    from closedloop.core.run_reader import RunDir

    meta = run / METADATA_FILE
    if not meta.is_file():
        export = RunDir(run).artifact_dir(ExportBundle)
        if export is None or not (export / METADATA_FILE).is_file():
            return None
        meta = export / METADATA_FILE
    return PredictorInfo.read(meta).shipped_threshold


def _labels(rows: RouteRows, idx: np.ndarray, task: _Task) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(positions within ``idx`` with a known label, labels as indices / multi-hot, unknown names)."""
    from closedloop.monitoring.logmonitor import label_indices

    pos, y, unknown = label_indices(rows.feedback[idx], task.label_names, task.problem_type)
    return pos, y, unknown


def _random_only(
    rows: RouteRows, idx: np.ndarray, pos: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """The labeled positions (within ``idx``) whose label was randomly selected (feedback marked
    random, or a recorded spot check of the rows' run picked them), their labels, and how many were
    left out. Only these may judge a model (the issue's rule; the monitor's realized metrics too)."""
    from closedloop.monitoring.logmonitor import random_rows

    if not len(pos):
        return pos, y, 0
    sub = rows.take(idx[pos])
    keep = random_rows(sub, sub.run_dirs[-1] if sub.run_dirs else None)
    return pos[keep], y[keep], int((~keep).sum())


def _decisions_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def norm(v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v

    return np.array([norm(x) != norm(y) for x, y in zip(a, b, strict=True)], dtype=bool)


# -- the comparison -----------------------------------------------------------------------------------
def compare_live(
    log_dir: str | os.PathLike[str],
    *,
    challenger: Literal["auto", "shadow", "canary"] = "auto",
    run_dir: str | os.PathLike[str] | None = None,
    since: str | None = None,
    alpha: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
    metric: str | None = None,
) -> LiveComparison:
    """Champion vs challenger from the log (see the module doc).

    Args:
        challenger: ``shadow`` or ``canary`` records; ``auto`` takes shadow when present.
        run_dir: the challenger's run directory, for the task (metric, classes, acceptance); default:
            the ``run_dir`` the records name.
        metric: the declared comparison (default: the task's primary metric), e.g. ``expected_cost``
            at the task's costs; in both designs each model is judged at its own served threshold
            (the ``predictor.json`` of the folder its records name).
        since: only rows logged at or after this ISO time (e.g. leave out requests whose feedback
            labels were used to train the challenger).
    """
    log = read_log(log_dir)
    champ, route = log.champion, challenger
    if route == "auto":
        route = "shadow" if len(log.shadow) else "canary"
    chall = log.route(route)
    if since is not None:
        t = _parse_time(since)
        champ = champ.take(np.flatnonzero(champ.time >= t))
        chall = chall.take(np.flatnonzero(chall.time >= t))
    if not len(chall):
        raise DataError(
            f"{log_dir}: no {'shadow or canary' if challenger == 'auto' else route} records"
            + (f" since {since}" if since else "")
            + "; start the server with --shadow RUN_DIR or --canary RUN_DIR"
        )
    if not len(champ):
        raise DataError(f"{log_dir}: no champion records" + (f" since {since}" if since else ""))
    warns = list(log.warnings)
    design: Literal["paired", "independent"] = "paired" if route == "shadow" else "independent"
    disagreement = None
    mean_abs = None
    n_pairs = 0
    if design == "paired":
        # join on (request_id, index): the i-th shadow row is NOT the i-th champion row in general
        where = {k: i for i, k in enumerate(champ.keys())}
        pairs = [(where[k], j) for j, k in enumerate(chall.keys()) if k in where]
        if not pairs:
            raise DataError(f"{log_dir}: no shadow row shares a (request_id, index) with a champion row")
        ia = np.array([p[0] for p in pairs])
        ib = np.array([p[1] for p in pairs])
        n_pairs = len(pairs)
        if n_pairs < len(chall):
            warns.append(f"{len(chall) - n_pairs} shadow row(s) without a champion row were left out")
        diff = _decisions_differ(champ.decision[ia], chall.decision[ib])
        disagreement = DisagreementStat(
            rate=float(diff.mean()), ci95=wilson(int(diff.sum()), n_pairs), count=int(diff.sum()), n=n_pairs
        )
        if champ.proba.shape[1] == chall.proba.shape[1]:
            mean_abs = float(np.abs(champ.proba[ia] - chall.proba[ib]).mean())
    n_labeled = 0
    n_not_random = 0
    perf = None
    constraints: dict[str, ConstraintCheck] = {}
    has_labels = any(f is not None for f in chall.feedback) and any(f is not None for f in champ.feedback)
    task = None
    labeled_challenger: tuple[np.ndarray, np.ndarray] | None = None
    labeled_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = (
        None  # paired design: y, challenger, champion
    )
    if has_labels or run_dir is not None:
        task = _load_task(
            [str(run_dir)] if run_dir is not None else [*chall.run_dirs[::-1], *champ.run_dirs[::-1]]
        )
    if has_labels and task is not None:
        from closedloop.stats.paired import compare

        if design == "paired":
            pos, y, unknown = _labels(champ, ia, task)
            pos, y, n_not_random = _random_only(champ, ia, pos, y)
            n_labeled = len(pos)
            if n_labeled:
                labeled_challenger = (y, chall.proba[ib[pos]])
                labeled_pairs = (y, chall.proba[ib[pos]], champ.proba[ia[pos]])
                res = compare(
                    task.metric,
                    y,
                    chall.proba[ib[pos]],
                    champ.proba[ia[pos]],
                    task.problem_type,
                    n_resamples=n_resamples,
                    seed=seed,
                    convention=task.convention,
                    threshold=task.threshold,
                    alpha=alpha,
                )
                perf = MetricComparison(
                    metric=res.metric,
                    value_champion=res.value_b,
                    value_challenger=res.value_a,
                    delta=res.delta,
                    ci95=res.ci95,
                    p_value=res.p_value,
                    p_one_sided=res.p_one_sided,
                    higher_is_better=res.higher_is_better,
                    method=res.method + " on (request_id, index)-joined rows",
                    n=res.n,
                )
        else:
            pa, ya, unknown = _labels(chall, np.arange(len(chall)), task)
            pb, yb, unknown_b = _labels(champ, np.arange(len(champ)), task)
            pa, ya, left_a = _random_only(chall, np.arange(len(chall)), pa, ya)
            pb, yb, left_b = _random_only(champ, np.arange(len(champ)), pb, yb)
            n_not_random = left_a + left_b
            unknown = sorted(set(unknown) | set(unknown_b))
            n_labeled = len(pa) + len(pb)
            if len(pa) and len(pb):
                labeled_challenger = (ya, chall.proba[pa])
                perf = _canary_compare(
                    task,
                    metric,
                    (ya, chall.proba[pa], chall),
                    (yb, champ.proba[pb], champ),
                    n_resamples,
                    seed,
                )
        if unknown:
            warns.append(f"feedback label(s) {unknown[:5]} are not classes {task.label_names}; ignored")
        if n_not_random:
            warns.append(
                f"{n_not_random} feedback label(s) not marked random (no '\"random\": true', not a recorded spot "
                "check's pick) left out of the comparison and the decision: labels chosen for being uncertain "
                "or unusual are biased"
            )
    if perf is not None and task is not None and labeled_challenger is not None:
        constraints.update(_acceptance(task, *labeled_challenger, warns))
    if task is not None and task.max_latency_ms is not None:
        per_call = _per_call_latency(chall)
        if len(per_call):
            p95 = float(np.percentile(per_call, 95))
            constraints["max_latency_ms"] = ConstraintCheck(
                value=p95,
                bar=task.max_latency_ms,
                ok=p95 <= task.max_latency_ms,
                note=f"p95 of {len(per_call)} logged {route} calls",
            )
    if labeled_pairs is not None and task is not None:
        # the paired (shadow) design: the one promotion rule of retrain and adapt, on the same labeled rows
        from closedloop.stats.promotion import Check, decide_promotion

        declared = metric or task.metric
        if declared == "expected_cost" and (task.costs is None or task.problem_type != "binary"):
            raise DataError(
                f"--metric expected_cost: needs a binary task with business costs (business.cost_false_negative); "
                f"the task ({task.source}) is {task.problem_type} with costs {task.costs}"
            )
        decision = decide_promotion(
            *labeled_pairs,
            metric=declared,
            costs=task.costs,
            problem_type=task.problem_type,
            convention=task.convention,
            threshold=_own_threshold(chall, task),
            champion_threshold=_own_threshold(champ, task),
            alpha=alpha,
            constraints=[
                Check(name=f"constraint {k}", value=v.value, bar=v.bar, ok=v.ok)
                for k, v in constraints.items()
            ],
            evaluated_on="live",
            n_resamples=n_resamples,
            seed=seed,
        )
        promote, reasons = decision.promote, list(decision.reasons)
        first = decision.comparisons[0]  # the figures shown are the ones the rule decided on
        perf = MetricComparison(
            metric=first.metric,
            value_champion=first.baseline_value,
            value_challenger=first.model_value,
            delta=first.delta,
            ci95=list(first.ci95),
            p_value=first.p_two_sided,
            p_one_sided=first.p_value,
            higher_is_better=first.higher_is_better,
            method=first.method + " on (request_id, index)-joined rows",
            n=first.n,
        )
    else:  # canary: two independent arms; the same rule on the independent two-sample comparison
        promote, reasons = promotion_rule(perf, constraints, alpha)
    times = np.concatenate([champ.time, chall.time])
    span = f"{times.min()}Z to {times.max()}Z"
    evaluated_on = (
        f"production requests logged in {log_dir} ({span})"
        + (f", since {since}" if since else "")
        + f"; {route} rows "
        + (
            "joined to the champion's by (request_id, index)"
            if design == "paired"
            else "answer other requests"
        )
        + (
            f"; metric on {n_labeled} randomly selected row(s) with feedback labels"
            if n_labeled
            else "; no feedback labels on randomly selected rows"
        )
        + (f" ({n_not_random} labeled row(s) not randomly selected left out)" if n_not_random else "")
        + ". Neither model trained on this traffic unless its labels were fed back into a retrain: then "
        "compare only later traffic (--since)."
    )
    return LiveComparison(
        log_dir=str(log_dir),
        challenger_route=route,  # type: ignore[arg-type]
        design=design,
        champion_versions=sorted(set(champ.model_version.tolist())),
        challenger_versions=sorted(set(chall.model_version.tolist())),
        n_champion_rows=len(champ),
        n_challenger_rows=len(chall),
        n_pairs=n_pairs,
        n_labeled=n_labeled,
        n_labeled_not_random=n_not_random,
        disagreement=disagreement,
        mean_abs_probability_difference=mean_abs,
        performance=perf,
        constraints=constraints,
        alpha=alpha,
        promote=promote,
        recommendation="promote" if promote else "keep",
        reasons=reasons,
        evaluated_on=evaluated_on,
        warnings=warns,
    )


def _parse_time(text: str) -> np.datetime64:
    import datetime as dt

    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"--since {text!r}: not an ISO time; expected e.g. 2026-11-30T21:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return np.datetime64(t.astimezone(dt.UTC).replace(tzinfo=None), "us")


def _acceptance(
    task: _Task, y: np.ndarray, proba: np.ndarray, warns: list[str]
) -> dict[str, ConstraintCheck]:
    """Every acceptance bar of the task, measured on the challenger's labeled rows."""
    from closedloop.stats.errors import StatsError
    from closedloop.stats.metrics import compute_metric, higher_is_better

    out = {}
    for name, bar in task.acceptance.items():
        try:
            v = compute_metric(
                name, y, proba, task.problem_type, threshold=task.threshold, convention=task.convention
            )
        except StatsError as exc:  # e.g. AUC while a single class has come back
            warns.append(f"acceptance.{name} not measurable on the labeled rows: {exc}")
            continue
        ok = v >= bar if higher_is_better(name) else v <= bar
        out[f"acceptance.{name}"] = ConstraintCheck(value=float(v), bar=float(bar), ok=bool(ok))
    return out


def _per_call_latency(rows: RouteRows) -> np.ndarray:
    """One latency per logged call (rows of a batch share their call's latency)."""
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows.request_id[1:] != rows.request_id[:-1]
    return rows.latency_ms[first & (rows.index == 0)]


# -- output ---------------------------------------------------------------------------------------------
def summary_lines(c: LiveComparison) -> list[str]:
    """What the command prints."""
    lines = [
        f"champion {', '.join(c.champion_versions)} vs {c.challenger_route} {', '.join(c.challenger_versions)} "
        f"({c.design}: {c.n_champion_rows} champion / {c.n_challenger_rows} {c.challenger_route} rows)"
    ]
    if c.disagreement is not None:
        d = c.disagreement
        lines.append(
            f"disagreement {d.rate:.1%} ({d.count}/{d.n}; 95% CI [{d.ci95[0]:.1%}, {d.ci95[1]:.1%}])"
        )
    if c.performance is not None:
        p = c.performance
        lines.append(
            f"{p.metric}: {p.value_champion:.4f} -> {p.value_challenger:.4f} (delta {p.delta:+.4f}, 95% CI "
            f"[{p.ci95[0]:+.4f}, {p.ci95[1]:+.4f}], p={p.p_value:.3g}, one-sided p={p.p_one_sided:.3g}) "
            f"on {c.n_labeled} labeled row(s); {p.method}"
        )
    lines.append(("PROMOTE: " if c.promote else "keep the champion: ") + "; ".join(c.reasons))
    return lines


def to_html(c: LiveComparison) -> str:
    """A one-page, self-contained HTML report."""
    from closedloop.core.blocks import Callout, KeyValues, Paragraph, Table
    from closedloop.report.html import CSS, render_blocks

    blocks: list[Any] = [
        Callout(summary_lines(c)[-1], "ok" if c.promote else "info"),
        Paragraph(html.escape(summary_lines(c)[0])),
    ]
    if c.disagreement is not None:
        blocks.append(KeyValues(c.disagreement.model_dump(), title="Disagreement (paired rows)"))
    if c.performance is not None:
        blocks.append(KeyValues(c.performance.model_dump(), title="Primary metric on labeled rows"))
    if c.constraints:
        blocks.append(
            Table([{"constraint": k, **v.model_dump()} for k, v in c.constraints.items()], "Constraints")
        )
    blocks.append(Paragraph("<b>Evaluated on:</b> " + html.escape(c.evaluated_on)))
    for w in c.warnings:
        blocks.append(Callout(w, "warning"))
    body = render_blocks(blocks, Path("."))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>compare-live</title><style>{CSS}</style>"
        f"</head><body><h1>Champion vs challenger (live traffic)</h1>{body}</body></html>"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``closedloop compare-live`` (the serving CLI registers the subcommand)."""
    parser.add_argument("log_dir", help="the server's --log-dir")
    parser.add_argument("--out", help="write the report here: .json or .html")
    parser.add_argument(
        "--challenger",
        choices=["auto", "shadow", "canary"],
        default="auto",
        help="which records (default: auto)",
    )
    parser.add_argument(
        "--run-dir", help="the challenger's run directory (default: the one its records name)"
    )
    parser.add_argument(
        "--since", help="only rows logged at or after this ISO time (e.g. 2026-11-30T21:00:00Z)"
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level for promotion")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--metric",
        help="the declared comparison (shadow or canary), each model at its own served threshold, e.g. "
        "expected_cost (the task's costs; what 'closedloop adapt' declares by default); default: the task's "
        "primary metric",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``closedloop compare-live`` with parsed arguments; prints the summary, writes ``--out``."""
    from closedloop.core.io import write_text_atomic

    if args.out and Path(args.out).suffix.lower() not in (".json", ".html", ".htm"):
        raise DataError(f"--out {args.out}: expected a .json or .html file name")
    c = compare_live(
        args.log_dir,
        challenger=args.challenger,
        run_dir=args.run_dir,
        since=args.since,
        alpha=args.alpha,
        n_resamples=args.resamples,
        metric=args.metric,
    )
    for line in summary_lines(c):
        print(line)
    if args.out:
        out = Path(args.out)
        text = to_html(c) if out.suffix.lower() in (".html", ".htm") else c.model_dump_json(indent=2)
        write_text_atomic(out, text)
        print(f"written: {out}")
    return 0
