"""Agreement statistics against published worked examples and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.stats.agreement import (
    category_counts,
    cohen_kappa,
    confusion,
    disagreement,
    kappa_with_ci,
    overall_with_ci,
    population_kappa,
)
from closedloop.stats.errors import StatsError

# Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories; kappa = 0.210
FLEISS_TABLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, nominal alpha 0.743
KRIPP = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _matrix_from_counts(counts: np.ndarray) -> np.ndarray:
    rows = [np.repeat(np.arange(counts.shape[1]), c) for c in counts]
    return np.array(rows)


def test_fleiss_kappa_matches_the_worked_example() -> None:
    L = _matrix_from_counts(FLEISS_TABLE)
    assert (category_counts(L, 5) == FLEISS_TABLE).all()
    fleiss, _ = overall_with_ci(L, 5, n_boot=200)
    assert fleiss.value == pytest.approx(0.2099, abs=1e-4) and fleiss.n == 10
    assert fleiss.ci95[0] < fleiss.value < fleiss.ci95[1]


def test_krippendorff_alpha_matches_the_worked_example() -> None:
    L = np.array([[-1 if v is None else v - 1 for v in coder] for coder in KRIPP]).T  # units x coders
    _, alpha = overall_with_ci(L, 5, n_boot=200)
    assert alpha.value == pytest.approx(0.743, abs=5e-4)
    assert alpha.n == 11  # unit 12 has a single value: not pairable


def test_cohen_kappa_matches_scikit_learn_and_the_interval_is_sane() -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 200)
    b = np.where(rng.random(200) < 0.7, a, rng.integers(0, 3, 200))
    assert cohen_kappa(a, b, 3) == pytest.approx(cohen_kappa_score(a, b))
    a[:20] = -1  # missing: left out
    est = kappa_with_ci(a, b, 3, n_boot=500)
    assert est.n == 180 and est.value == pytest.approx(cohen_kappa_score(a[20:], b[20:]))
    assert est.ci95[0] < est.value < est.ci95[1] and est.ci95[1] - est.ci95[0] < 0.3
    assert confusion(a, b, 3).sum() == 180


def test_population_kappa_is_what_large_samples_reach() -> None:
    rng = np.random.default_rng(1)
    prior = np.array([0.3, 0.7])
    C1, C2 = np.array([[0.9, 0.1], [0.05, 0.95]]), np.array([[0.7, 0.3], [0.2, 0.8]])
    y = rng.choice(2, 200_000, p=prior)
    a = np.where(rng.random(len(y)) < C1[y, 1 - y], 1 - y, y)
    b = np.where(rng.random(len(y)) < C2[y, 1 - y], 1 - y, y)
    assert cohen_kappa(a, b, 2) == pytest.approx(population_kappa(prior, C1, C2), abs=0.01)


def test_disagreement_and_bad_input() -> None:
    L = np.array([[0, 0, 0], [0, 1, -1], [1, -1, -1], [0, 1, 2]])
    d = disagreement(L, 3)
    assert d[0] == 0 and d[1] == 0.5 and np.isnan(d[2]) and d[3] == pytest.approx(2 / 3)
    with pytest.raises(StatsError, match="at least 2 items labeled by both"):
        kappa_with_ci(np.array([0, -1]), np.array([1, 1]), 2)
    with pytest.raises(StatsError, match="-1 \\(missing\\) or 0..1"):
        overall_with_ci(np.array([[0, 5], [1, 1]]), 2)
