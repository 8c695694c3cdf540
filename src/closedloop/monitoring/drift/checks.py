"""``check_drift_test``: the battery every drift test passes (like scikit-learn's ``check_estimator``).

``tests/test_common_plugins.py`` runs it over every built-in test; run it on your own::

    >>> from closedloop.monitoring.drift.checks import check_drift_test
    >>> check_drift_test("confidence")  # declines regression: it reads class probabilities
    ['regression']

It raises ``AssertionError`` naming what failed, and returns the problem types the test declined
(``applies`` said no), so a caller can tell "passed" from "never ran".
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from closedloop.core.checks import check_plugin_naming
from closedloop.monitoring.drift.base import DriftContext, DriftResult, DriftTest, Sample, resolve_drift_test

PROBLEMS = ("binary", "multiclass", "regression")


def drift_samples(problem: str, shift: float) -> tuple[Sample, Sample, list[str]]:
    """A reference and a window; ``shift`` moves every quantity a test may watch (features,
    embeddings, probabilities, labels) by ``shift`` standard deviations; 0 gives a window drawn from
    the reference itself."""
    rng = np.random.default_rng(0)
    k = 3 if problem == "multiclass" else 2

    def make(n: int, s: float) -> Sample:
        feats = rng.normal(s, 1.0, (n, 3))
        feats[:, 2] = rng.integers(0, 3, n) if s == 0 else 2  # a categorical column
        logits = rng.normal(0, 1, (n, k)) + np.eye(k)[np.zeros(n, int)] * 3 * s
        proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        if problem == "regression":
            return Sample(feats, rng.normal(s, 1.0, (n, 4)).astype(np.float32))
        labels = rng.integers(0, k, n) if s == 0 else np.zeros(n, int)
        return Sample(feats, rng.normal(s, 1.0, (n, 4)).astype(np.float32), proba, labels)

    ref = make(150, 0.0)
    win = make(100, shift) if shift else ref.take(np.arange(100))
    return ref, win, ["x0", "x1", "cat"]


def drift_context(problem: str, names: list[str], seed: int = 0) -> DriftContext:
    """The settings the battery runs a test with (column 2 categorical, 100 permutations, seeded)."""
    return DriftContext(
        problem, 0.5, names, [2], bandwidth=3.0, permutations=100, rng=np.random.default_rng(seed)
    )


def check_drift_test(test: str | type[DriftTest], problems: Sequence[str] = PROBLEMS) -> list[str]:
    """Check a drift test (a registered name, an import path or the class) on synthetic data.

    For each problem type it applies to: p-values in [0, 1], finite statistics and effects, JSON-able
    details; p > 0.2 on a window drawn from the reference and p < 0.01 on a window shifted by 3 SD;
    the same numbers again with the same seed; the p-value-only path (``effects=False``) gives the
    same p; what ``prepare_pool`` precomputes does not change a p-value. Then: an unknown config key
    fails with a ``ConfigError`` naming it, and the class resolves by its import path.
    Returns the problem types the test declined.
    """
    cls = resolve_drift_test(test, where="check_drift_test") if isinstance(test, str) else test
    name = cls.name
    declined = []
    for problem in problems:
        inst = cls()
        ref, same, names = drift_samples(problem, 0.0)
        if not inst.applies(ref, drift_context(problem, names)):
            declined.append(problem)
            continue
        _, shifted, _ = drift_samples(problem, 3.0)
        quiet = inst.run(ref, same, drift_context(problem, names))
        loud = inst.run(ref, shifted, drift_context(problem, names))
        for r in (quiet, loud):
            assert isinstance(r, DriftResult), f"{name}: run() returned {type(r).__name__}, not DriftResult"
            assert 0.0 <= r.p_value <= 1.0 and np.isfinite(r.statistic), (
                f"{name}: p={r.p_value}, stat={r.statistic}"
            )
            assert all(np.isfinite(v) for v in r.effect.values()), f"{name}: non-finite effect {r.effect}"
            json.dumps(r.details, default=str)
        assert quiet.p_value > 0.2, (
            f"{name} ({problem}): p={quiet.p_value} on a window drawn from the reference"
        )
        assert loud.p_value < 0.01, f"{name} ({problem}): p={loud.p_value} on a window shifted by 3 SD"
        again = inst.run(ref, shifted, drift_context(problem, names))
        assert (again.p_value, again.statistic) == (loud.p_value, loud.statistic), f"{name}: not seeded"
        lean = drift_context(problem, names)
        lean.effects = False  # the calibration path computes p-values only
        assert inst.run(ref, shifted, lean).p_value == loud.p_value, f"{name}: effects=False changes p"
    _check_pool_cache(cls)
    check_plugin_naming(cls, resolve_drift_test, name)
    assert cls.headline() and cls.description
    return declined


def _check_pool_cache(cls: type[DriftTest]) -> None:
    """What a test precomputes over a calibration pool must not change its p-values."""
    test = cls()
    ref, win, names = drift_samples("binary", 0.5)
    pool = Sample(
        np.vstack([ref.features, win.features]),
        np.vstack([ref.embeddings, win.embeddings]),
        np.vstack([ref.proba, win.proba]),
        np.concatenate([ref.labels, win.labels]),
        index=np.arange(len(ref) + len(win)),
    )
    r, w = pool.take(np.arange(len(ref))), pool.take(np.arange(len(ref), len(pool)))
    if not test.applies(r, drift_context("binary", names)):
        return
    cached = drift_context("binary", names)
    cached.pool = {cls.name: test.prepare_pool(pool, drift_context("binary", names))}
    fresh = test.run(r, w, drift_context("binary", names)).p_value
    assert test.run(r, w, cached).p_value == fresh, f"{cls.name}: the pool cache changes the p-value"
