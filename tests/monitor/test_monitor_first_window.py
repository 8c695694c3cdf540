"""Issue 19, the first window of a stream: the domain flag's mean-shift permutation test (exact, all
rows), and the stream test's last look at the end of a file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.stage import RunContext
from closedloop.monitoring import Monitor
from closedloop.monitoring.domain import PERMUTATIONS, domain_check, domain_matrix, mean_shift_test
from closedloop.monitoring.drift import Sample
from closedloop.monitoring.stream_reference import ReferenceStreamTest, spend
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_setup  # noqa: E402


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0, dims: int = 30) -> Sample:
    """Many summary features, each moved a little by ``shift`` (in SDs): the acquisition-like shift of
    a test split that no single input shows."""
    p = 1 / (1 + np.exp(-rng.normal(size=n)))
    return Sample(features=rng.normal(size=(n, dims)) + shift, proba=np.stack([1 - p, p], axis=1))


def test_mean_shift_test_is_exact_when_the_rows_are_exchangeable():
    rng = np.random.default_rng(0)
    ps = np.array([mean_shift_test(rng.normal(size=(120, 6)), 70, rng, permutations=99) for _ in range(300)])
    # valid: P(p <= a) <= a; at a = 0.1, 30 of 300 expected (a binomial above 48 has probability < 0.001)
    assert np.sum(ps <= 0.1) <= 48 and np.sum(ps <= 0.5) >= 120  # and not deaf: about half at 0.5
    assert ps.min() >= 1 / 100  # the smallest p-value of 99 relabellings


def test_mean_shift_finds_a_spread_shift_more_often_than_the_cross_fitted_classifier():
    """Many inputs each moved by 0.12 SD between 262 reference rows and a window of 200 (the first
    window of a stream: nothing before it to go on)."""
    rng = np.random.default_rng(1)
    shift_hits = classifier_hits = 0
    for _ in range(10):
        ref, win = _rows(rng, 262), _rows(rng, 200, shift=0.12)
        chk, _ = domain_check(ref, win, "binary", rng, permutations=499)
        assert chk.test == "mean_shift" and chk.permutations == 499 and chk.p_value >= 1 / 500
        shift_hits += chk.p_value <= 0.005
        classifier_hits += chk.p_classifier <= 0.005
    assert shift_hits >= 8 and shift_hits > classifier_hits


def test_domain_check_names_its_test_and_keeps_the_classifier_p():
    rng = np.random.default_rng(2)
    ref, win = _rows(rng, 100, dims=3), _rows(rng, 80, dims=3)
    chk, w = domain_check(ref, win, "binary", rng)
    assert (chk.test, chk.permutations) == ("mean_shift", PERMUTATIONS) and 0 < chk.p_classifier <= 1
    off, _ = domain_check(ref, win, "binary", rng, permutations=0)  # the stream test's looks
    assert off.test == "classifier" and off.p_value == off.p_classifier and off.permutations == 0
    X, names = domain_matrix(ref, win, "binary")
    assert X.shape == (180, len(names)) and names == chk.inputs


def test_mean_shift_bad_input_names_the_value():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    with pytest.raises(ValueError, match="permutations=0: expected at least 1"):
        mean_shift_test(X, 20, rng, permutations=0)
    with pytest.raises(ValueError, match="40 reference and 0 window rows"):
        mean_shift_test(X, 40, rng)
    with pytest.raises(ValueError, match="inputs"):
        mean_shift_test(np.zeros((40, 0)), 20, rng)


def test_a_file_ends_with_a_last_look_that_spends_the_next_share():
    rng = np.random.default_rng(4)
    ref = _rows(rng, 120, dims=3)
    st = ReferenceStreamTest(ref, "binary", look_rows=100, seed=0)
    st.update(_rows(rng, 130, dims=3))
    assert st.status().looks == 1
    end = st.finish()  # the file ends at row 130: a look there, spending alpha / (2 * 3)
    assert (end.looks, end.n) == (2, 130) and end.e_value == pytest.approx(spend(2) / end.p_value)
    assert st.finish().looks == 2  # the same rows: no second look
    st.update(_rows(rng, 70, dims=3))  # the schedule goes on: the next look at row 200
    assert st.status().looks == 3
    short = ReferenceStreamTest(ref, "binary", look_rows=100, seed=0)
    short.update(_rows(rng, 5, dims=3))
    assert short.finish().looks == 0  # too few rows for the check


def test_check_stream_looks_at_the_end_of_the_data_and_the_last_window_sees_it(tmp_path):
    bundle, model = digits_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    stage = BuildMonitorProfile(
        calibration_windows=40, window_sizes=[50, 100], permutations=40, stream_look=100
    )
    out = stage.execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp_path, seed=0)
    )
    mon = Monitor(out.reference, model, seed=0, effects=False)
    res = mon.check_stream(bundle.val.X[:250], window=50)  # looks at 100, 200 and the end, 250
    assert res.stream["looks"] == 3 and res.stream["n"] == 250
    assert res.windows[-1]["stream"]["looks"] == 3 and res.windows[-2]["stream"]["looks"] == 2
