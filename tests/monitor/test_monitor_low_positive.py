"""The low-positive check (rule W20): the window's barely-positive calls against the reference's."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.monitoring.low_positive import low_positive_check, positive_scores


def _scores(rng: np.random.Generator, n: int, low_share: float) -> np.ndarray:
    """Scores with a share ``low_share`` just over the threshold 0.1 (0.1-0.2), a fifth negatives (< 0.1), the rest
    confident positives (> 0.8)."""
    kind = rng.choice(3, size=n, p=[0.2, low_share, 0.8 - low_share])
    return np.where(
        kind == 0,
        rng.uniform(0, 0.1, n),
        np.where(kind == 1, rng.uniform(0.1, 0.2, n), rng.uniform(0.8, 1, n)),
    )


def test_counts_and_cut_on_a_fixed_reference():
    ref = np.array([0.01] * 10 + [0.15] * 6 + [0.9] * 44)  # 50 positive calls, 6 of them low
    win = np.array([0.01] * 10 + [0.12] * 20 + [0.95] * 30)
    c = low_positive_check(ref, win, threshold=0.1, quantile=0.1)
    assert c is not None
    assert c.cut == pytest.approx(0.15)  # the 10% quantile of the reference's positive calls (linear)
    assert c.reference_share == pytest.approx(6 / 60)
    assert c.window_share == pytest.approx(20 / 60)
    assert c.p_fisher < 0.01 and c.p_z < 0.01
    # the same table the other way round is no evidence of more barely-positive calls
    back = low_positive_check(win, ref, threshold=0.1, quantile=0.1)
    assert back is not None and back.p_fisher > 0.5 and back.p_z > 0.5


def test_two_columns_equal_one_and_a_monotone_map_changes_nothing():
    rng = np.random.default_rng(0)
    ref, win = _scores(rng, 262, 0.08), _scores(rng, 200, 0.2)
    one = low_positive_check(ref, win, 0.1)
    two = low_positive_check(np.c_[1 - ref, ref], np.c_[1 - win, win], 0.1)
    squashed = low_positive_check(ref**2, win**2, 0.01)  # a monotone recalibration with its mapped threshold
    assert one == two
    assert one is not None and squashed is not None
    assert (one.window_share, one.reference_share, one.p_fisher) == (
        squashed.window_share,
        squashed.reference_share,
        squashed.p_fisher,
    )


def test_flags_a_shift_and_rarely_the_reference_distribution():
    rng = np.random.default_rng(1)
    ref = _scores(rng, 262, 0.08)
    shifted = [low_positive_check(ref, _scores(rng, 200, 0.3), 0.1) for _ in range(50)]
    same = [low_positive_check(ref, _scores(rng, 200, 0.08), 0.1) for _ in range(200)]
    assert np.mean([c.p_fisher <= 0.005 for c in shifted]) > 0.8
    assert np.mean([c.p_fisher <= 0.005 for c in same]) < 0.05


def test_bad_input():
    ref = np.linspace(0, 1, 100)
    with pytest.raises(ValueError, match="quantile must be in"):
        low_positive_check(ref, ref, 0.5, quantile=1.0)
    with pytest.raises(ValueError, match="binary probabilities expected, got 3 columns"):
        positive_scores(np.ones((4, 3)) / 3)
    # fewer than 10 positive calls in the reference: no cut, no check
    assert low_positive_check(np.r_[np.zeros(50), np.ones(5)], ref, 0.5) is None
