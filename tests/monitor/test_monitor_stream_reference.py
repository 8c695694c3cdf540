"""Issue 19: the stream test against a fixed reference (alpha spent over looks) and the per-deployment
domain flag, with their settings (YAML / Python) and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.errors import ConfigError
from closedloop.monitoring import Monitor
from closedloop.monitoring.drift import Sample
from closedloop.monitoring.profile import ReferenceProfile
from closedloop.monitoring.stream import StreamStatus, StreamTest
from closedloop.monitoring.stream_reference import ReferenceStreamTest, new_stream_test, spend
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.monitor.reference import profile_config

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_task_setup, stage_profile  # noqa: E402

FAST = {"calibration_windows": 40, "window_sizes": [50, 100], "permutations": 40}


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> Sample:
    p = 1 / (1 + np.exp(-rng.normal(size=n)))
    return Sample(features=rng.normal(size=(n, 3)) + shift, proba=np.stack([1 - p, p], axis=1))


def test_spending_sums_to_alpha_and_looks_follow_the_row_count_not_the_chunks():
    assert sum(spend(k) for k in range(1, 10_000)) == pytest.approx(1.0, abs=1e-3)
    rng = np.random.default_rng(0)
    st = ReferenceStreamTest(_rows(rng, 80), "binary", look_rows=50, max_rows=120, seed=0)
    st.update(_rows(rng, 30))
    assert st.status().looks == 0 and st.status().p_value is None  # no look before 50 rows
    st.update(_rows(rng, 95))  # crosses 50 and 100 inside one chunk: two looks
    s = st.status()
    assert (s.n, s.looks, s.test, s.look_rows) == (125, 2, "reference", 50)
    st.update(_rows(rng, 200))  # beyond max_rows: a reservoir of 120 rows is tested
    assert st.status().looks == 6 and st._kept is not None and len(st._kept) == 120
    assert st.status().reference_rows == 80 and "fixed reference" in st.status().rests_on


def test_fixed_reference_stream_false_alarms_and_power_on_synthetic_rows():
    """The union bound over looks: in-distribution streams rarely alarm, a mild shift is found early."""
    rng = np.random.default_rng(1)
    alarms = 0
    for run in range(30):
        st = ReferenceStreamTest(_rows(rng, 100), "binary", look_rows=60, max_rows=240, seed=run)
        for _ in range(4):
            st.update(_rows(rng, 60))
        alarms += st.status().alarm
    assert alarms <= 5  # 5% of 30 is 1.5; a binomial 5 or more is below 0.02
    tests = []
    for run in range(10):
        st = ReferenceStreamTest(_rows(rng, 100), "binary", look_rows=60, max_rows=240, seed=run)
        st.update(_rows(rng, 240, shift=0.5))
        tests.append(st)
    alarmed = [st for st in tests if st.alarm_at is not None]
    assert len(alarmed) >= 8
    for st in alarmed:  # raised at a look, where the statistic w_k / p_k reaches 1 / alpha
        assert st.alarm_at % 60 == 0
        assert st.status().max_e_value >= st.status().threshold == pytest.approx(20.0)
    for st in tests:
        if st.alarm_at is None:
            assert st.status().max_e_value < 20.0


def test_reference_stream_bad_input_names_the_setting():
    rng = np.random.default_rng(2)
    ref = _rows(rng, 50)
    with pytest.raises(ValueError, match="stream alpha=1.5"):
        ReferenceStreamTest(ref, "binary", alpha=1.5)
    with pytest.raises(ValueError, match="look_rows=5: expected at least 10"):
        ReferenceStreamTest(ref, "binary", look_rows=5)
    with pytest.raises(ValueError, match="max_rows=40: expected at least look_rows=50"):
        ReferenceStreamTest(ref, "binary", look_rows=50, max_rows=40)
    with pytest.raises(ValueError, match="problem type 'regression'"):
        ReferenceStreamTest(ref, "regression")
    with pytest.raises(ValueError, match="at least 10 rows \\(it has 5\\)"):
        ReferenceStreamTest(ref.take(np.arange(5)), "binary")
    with pytest.raises(ValueError, match="the rows have no probabilities"):
        ReferenceStreamTest(ref, "binary").update(Sample(features=np.zeros((20, 3))))


def test_stream_and_domain_settings_bad_config():
    with pytest.raises(ConfigError, match="stream_test"):
        BuildMonitorProfile(stream_test="bogus")
    with pytest.raises(ConfigError, match="stream_look"):
        BuildMonitorProfile(stream_look=5)
    with pytest.raises(ConfigError, match="domain_delta"):
        BuildMonitorProfile(domain_delta=1.5)
    cfg = BuildMonitorProfile(domain_delta=None, stream_test="conformal").config
    assert cfg.domain_delta is None and cfg.stream_test == "conformal"


@pytest.fixture(scope="module")
def digits():
    return digits_task_setup()


def _profile(digits, tmp: Path, **kw):
    return stage_profile(digits, tmp, FAST, **kw)


def test_profile_defaults_reach_the_summary_guarantee_and_monitor(digits, tmp_path, monkeypatch):
    bundle, model, _ = digits
    stage, profile = _profile(digits, tmp_path)
    info = profile.info
    assert (info.stream_test, info.stream_look, info.domain_delta) == ("reference", 200, 0.1)
    # the looks' p-value: the mean-shift permutation test (the default since session 15's declared rule)
    assert info.stream_look_test == "mean_shift" and "exact mean-shift permutation tests" in info.guarantee
    assert info.domain_level == pytest.approx(0.005)
    assert "tested against the fixed held-out rows every 200 rows" in info.guarantee
    assert "domain flag on the label-free estimate (p <= 0.005)" in info.guarantee
    assert "probability >= 0.9 over the draw of the held-out rows" in info.guarantee
    ref = stage.summarize(type(stage).Outputs(reference=profile))["reference"]
    assert ref["stream_test"] == "reference" and ref["stream_look"] == 200
    assert ref["stream_look_test"] == "mean_shift"
    assert ref["domain_delta"] == 0.1 and ref["domain_level"] == pytest.approx(0.005)
    # the settings survive a rebuild from the profile (a verified period, an adapted model's reference)
    again = profile_config(info)
    assert (again.stream_test, again.stream_look, again.domain_delta) == ("reference", 200, 0.1)
    assert again.stream_look_test == "mean_shift"
    mon = Monitor(profile, model, seed=0, effects=False)
    assert isinstance(mon.stream_test(), ReferenceStreamTest) and mon.stream_test().look_test == "mean_shift"
    # a dark stream: the window's flags name the domain check, the stream alarms at a look
    X = np.concatenate([bundle.val.X[:100], (bundle.val.X[100:400] * 0.5).astype(np.uint8)])
    res = mon.check_stream(X, window=100)
    assert res.stream["test"] == "reference" and res.stream["alarm"] and res.stream["alarm_at"] % 200 == 0
    last = res.windows[-1]
    assert not last["estimate_reliable"] and {"domain", "stream"} <= set(last["estimate_flags"])
    assert res.windows[0]["estimate_flags"] == [] or "domain" not in res.windows[0]["estimate_flags"]
    # the timeline draws both stream levels: the per-deployment alarm and the one that withholds the estimate
    import matplotlib.figure

    drawn: list[matplotlib.figure.Figure] = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    res.plot(tmp_path / "timeline.png")
    legends = [ax.get_legend() for ax in drawn[0].axes if ax.get_legend() is not None]
    labels = {t.get_text() for legend in legends for t in legend.get_texts()}
    # since rule W16 (session 16) only the alarm withholds the estimate, so the level over runs is not drawn
    assert "stream alarm (1/(alpha*delta), per deployment)" in labels
    assert "estimate withheld (1/alpha)" not in labels
    lines = {round(float(line.get_ydata()[0]), 6) for ax in drawn[0].axes for line in ax.get_lines()}
    assert 200.0 in lines and 20.0 not in lines
    res.stream_evidence = (
        "over_runs"  # a profile built before: the level over runs withholds it, and is drawn
    )
    drawn.clear()
    res.plot(tmp_path / "timeline.png")
    legends = [ax.get_legend() for ax in drawn[0].axes if ax.get_legend() is not None]
    assert "estimate withheld (1/alpha)" in {t.get_text() for legend in legends for t in legend.get_texts()}


def test_conformal_and_marginal_domain_flag_stay_available(digits, tmp_path):
    _, model, _ = digits
    _, profile = _profile(digits, tmp_path, stream_test="conformal", domain_delta=None)
    assert isinstance(new_stream_test(profile), StreamTest)
    assert profile.info.domain_level == pytest.approx(0.05)
    assert "on average over references" in profile.info.guarantee
    profile.info.domain_alpha = None
    assert profile.info.domain_level is None


def test_per_deployment_stream_level_spends_alpha_times_delta_on_the_same_looks():
    """stream_delta: the same p-values, the alarm at p_k <= alpha * delta / (k (k + 1)); the status says
    what that promises for this reference."""
    rng = np.random.default_rng(3)
    ref, rows = _rows(rng, 100), _rows(rng, 240, shift=0.25)
    over_runs = ReferenceStreamTest(ref, "binary", look_rows=60, max_rows=240, seed=5)
    per_dep = ReferenceStreamTest(ref, "binary", look_rows=60, max_rows=240, seed=5, delta=0.1)
    ps = []
    for start in range(0, 240, 60):
        over_runs.update(rows.take(np.arange(start, start + 60)))
        per_dep.update(rows.take(np.arange(start, start + 60)))
        assert per_dep.p_value == over_runs.p_value  # the level changes the alarm only, not the evidence
        ps.append(per_dep.p_value)

    def first(level: float) -> int | None:
        hit = [60 * k for k, p in enumerate(ps, start=1) if p <= level * spend(k)]
        return hit[0] if hit else None

    assert over_runs.alarm_at == first(0.05) and per_dep.alarm_at == first(0.005)
    # the evidence at the level over runs is kept beside the alarm (it withholds the label-free estimate)
    assert over_runs.evidence_at == per_dep.evidence_at == first(0.05)
    s = per_dep.status()
    assert (s.alpha, s.delta, s.threshold) == (0.05, 0.1, pytest.approx(200.0))
    assert "for this reference with probability >= 0.9" in s.rests_on and "alpha*delta/(k(k+1))" in s.rests_on
    assert over_runs.status().delta is None and "over runs" in over_runs.status().rests_on
    # a plain shift is still found at the per-deployment level
    st = ReferenceStreamTest(ref, "binary", look_rows=60, max_rows=240, seed=6, delta=0.1)
    assert st.update(_rows(rng, 120, shift=1.0)).alarm
    # the conformal test takes the same setting: its alarm at 1 / (alpha * delta)
    conf = StreamTest({"s": rng.random(200)}, 0.05, seed=0, delta=0.1)
    assert conf.status().threshold == pytest.approx(200.0) and conf.status().delta == 0.1
    assert "for this reference" in conf.status().rests_on


def test_stream_delta_bad_input_names_the_value():
    ref = _rows(np.random.default_rng(4), 50)
    with pytest.raises(ValueError, match=r"stream delta=1.5: expected a value in \(0, 1\) or None"):
        ReferenceStreamTest(ref, "binary", delta=1.5)
    with pytest.raises(ValueError, match=r"stream delta=0: expected"):
        StreamTest({"s": np.zeros(20)}, 0.05, delta=0)
    with pytest.raises(ConfigError, match="stream_delta"):
        BuildMonitorProfile(stream_delta=1.5)


def test_stream_delta_reaches_profile_summary_guarantee_and_rebuild(digits, tmp_path):
    _, model, _ = digits
    stage, profile = _profile(digits, tmp_path)
    info = profile.info
    assert info.stream_delta == 0.1
    assert (
        "for this deployment's reference, a false-alarm rate <= 0.05 over the whole stream" in info.guarantee
    )
    assert (
        "alpha*delta x (0.2, 0.2, 0.5 at looks 1-3, then 0.1/((k-3)(k-2))) spent at look k" in info.guarantee
    )
    assert stage.summarize(type(stage).Outputs(reference=profile))["reference"]["stream_delta"] == 0.1
    assert profile_config(info).stream_delta == 0.1
    test = Monitor(profile, model, seed=0, effects=False).stream_test()
    assert test.delta == 0.1 and test.status().threshold == pytest.approx(200.0)
    # the label-free estimate is withheld from the stream's alarm on (stream_evidence: per_deployment, the
    # default since rule W16); with stream_evidence: over_runs already from its evidence at 1/stream_alpha
    _, over_runs = _profile(digits, tmp_path / "runs", stream_evidence="over_runs")
    mon = Monitor(over_runs, model, seed=0, effects=False)
    win = mon.sample(mon.prepare(digits[0].val.X[:100]))
    quiet = StreamStatus(
        alarm=False, e_value=1.0, max_e_value=1.0, threshold=200.0, alpha=0.05, delta=0.1, n=100
    )
    assert "stream" not in mon.evaluate(win, seed=0, stream=quiet.model_dump())["estimate_flags"]
    seen = quiet.model_copy(update={"e_value": 30.0, "max_e_value": 30.0, "evidence_at": 100})
    r = mon.evaluate(win, seed=0, stream=seen.model_dump())
    assert (
        not r["estimate_reliable"]
        and "stream" in r["estimate_flags"]
        and "since row 100" in r["estimate_reason"]
    )
    # YAML stream_delta: null keeps the rate over runs, and the guarantee says one deployment's can be higher
    _, marginal = _profile(digits, tmp_path / "m", stream_delta=None)
    assert marginal.info.stream_delta is None and new_stream_test(
        marginal
    ).status().threshold == pytest.approx(20.0)
    assert "one deployment's own rate can be higher" in marginal.info.guarantee.split("The stream alarm")[1]
    # a profile saved before the setting existed loads with the rate over runs it was built for
    profile.save(tmp_path / "old")
    meta = tmp_path / "old" / "profile.json"
    raw = json.loads(meta.read_text())
    raw.pop("stream_delta")
    meta.write_text(json.dumps(raw))
    assert ReferenceProfile.load(tmp_path / "old").info.stream_delta is None


def test_sequential_mean_shift_p_value_is_valid_and_stops_early():
    """Besag-Clifford: stop at the relabelling that brings the exceedances to ``stop_after``; the p-value
    stays valid (P(p <= u) <= u without a shift) and a large shift still reaches 1 / (B + 1)."""
    from closedloop.monitoring.domain import mean_shift_test

    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 3))
    full = mean_shift_test(X, 30, np.random.default_rng(0), 199)
    assert full == mean_shift_test(X, 30, np.random.default_rng(0), 199, stop_after=None)
    shifted = np.concatenate([X[:30], X[30:] + 3.0])
    assert mean_shift_test(shifted, 30, np.random.default_rng(0), 999, stop_after=10) == pytest.approx(
        1 / 1000
    )
    ps = np.array(
        [mean_shift_test(rng.normal(size=(60, 3)), 30, rng, 999, stop_after=10) for _ in range(300)]
    )
    assert np.mean(ps <= 0.1) <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / 300)  # valid, up to 3 binomial SDs
    assert np.mean(ps <= 0.5) >= 0.3  # not conservative to uselessness: most nulls stop early near their p
    with pytest.raises(ValueError, match="stop_after=0: expected at least 1 or None"):
        mean_shift_test(X, 30, rng, 99, stop_after=0)


def test_mean_shift_looks_keep_the_stream_guarantee_and_find_a_shift():
    """stream_look_test mean_shift: the same looks and spending, each look's p-value from the mean-shift
    permutation test with relabellings enough for its level; the classifier's p-value is kept beside it."""
    from closedloop.monitoring.stream_reference import look_permutations

    assert look_permutations(0.005, 1) == 1999 and look_permutations(0.005, 10) == 43_999
    rng = np.random.default_rng(8)
    alarms = 0
    for run in range(30):
        st = ReferenceStreamTest(
            _rows(rng, 100), "binary", look_rows=60, max_rows=240, seed=run, look_test="mean_shift"
        )
        for _ in range(4):
            st.update(_rows(rng, 60))
        alarms += st.status().alarm
        assert st.p_classifier is not None and st.p_value is not None
    assert alarms <= 5  # 5% of 30 is 1.5; a binomial 5 or more is below 0.02
    found = []
    for run in range(10):
        st = ReferenceStreamTest(
            _rows(rng, 100), "binary", look_rows=60, max_rows=240, seed=run, delta=0.1, look_test="mean_shift"
        )
        if st.update(_rows(rng, 240, shift=0.5)).alarm:
            found.append(st)
    assert len(found) >= 8
    # after the alarm, looks use the window test's 1,999 relabellings (cost), the alarm stays raised
    st = found[0]
    st.update(_rows(rng, 60, shift=3.0))
    assert st.alarm_at is not None and st.p_value >= 1 / 2000 and st.status().alarm
    s = st.status()
    assert s.look_test == "mean_shift" and "mean-shift permutation test" in s.rests_on
    assert ReferenceStreamTest(_rows(rng, 50), "binary").status().look_test == "classifier"
    with pytest.raises(ValueError, match="stream look_test='bogus': expected one of classifier, mean_shift"):
        ReferenceStreamTest(_rows(rng, 50), "binary", look_test="bogus")
    with pytest.raises(ConfigError, match="stream_look_test"):
        BuildMonitorProfile(stream_look_test="bogus")


def test_stream_look_test_reaches_profile_summary_guarantee_rebuild_and_monitor(digits, tmp_path):
    bundle, model, _ = digits
    for value, words in [("classifier", "domain tests"), ("mean_shift", "mean-shift permutation tests")]:
        stage, profile = _profile(digits, tmp_path / value, stream_look_test=value)
        info = profile.info
        assert info.stream_look_test == value and f"union bound over exact {words}" in info.guarantee
        assert (
            stage.summarize(type(stage).Outputs(reference=profile))["reference"]["stream_look_test"] == value
        )
        assert profile_config(info).stream_look_test == value
        test = Monitor(profile, model, seed=0, effects=False).stream_test()
        assert isinstance(test, ReferenceStreamTest) and test.look_test == value
        res = Monitor(profile, model, seed=0, effects=False).check_stream(bundle.val.X[:200], window=100)
        assert res.stream["look_test"] == value
    # a profile saved before the setting existed loads with the classifier looks it was built with
    profile.save(tmp_path / "old")
    meta = tmp_path / "old" / "profile.json"
    raw = json.loads(meta.read_text())
    raw.pop("stream_look_test")
    meta.write_text(json.dumps(raw))
    assert ReferenceProfile.load(tmp_path / "old").info.stream_look_test == "classifier"
