"""Issue 19 (session 19, rule S19): how the reference stream test's looks share the alarm's alpha
(``stream_spending``): each choice keeps the union bound, moves only when the alarm can come, and reaches
the profile, the guarantee, summary.json, a rebuilt config, the monitor's stream status; bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.errors import ConfigError
from closedloop.monitoring import Monitor
from closedloop.monitoring import stream_reference as sr
from closedloop.monitoring.domain import DomainCheck
from closedloop.monitoring.drift import Sample
from closedloop.monitoring.profile import ReferenceProfile
from closedloop.monitoring.stream_reference import SPENDINGS, ReferenceStreamTest, look_permutations, spend
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.monitor.reference import profile_config

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_task_setup, stage_profile  # noqa: E402

FAST = {"calibration_windows": 40, "window_sizes": [50, 100], "permutations": 40}


@pytest.mark.parametrize("name", list(SPENDINGS))
def test_every_spending_sums_to_one_over_the_looks(name):
    w = np.array([spend(k, name) for k in range(1, 200_001)])
    assert (w[:1000] > 0).all() and (w >= 0).all()  # 2^-k is 0 in floating point after about 1,074 looks
    # the shares left after 200,000 looks are at most 1/200,000 for these shapes: the sum is 1 in the limit
    assert w.sum() == pytest.approx(1.0, abs=1e-5) and w.sum() <= 1.0 + 1e-12
    # the shipped relabellings reach half of each look's threshold
    for k in (1, 2, 3, 7):
        assert 1 / (look_permutations(0.005, k, name) + 1) <= 0.005 * spend(k, name) / 2 * (1 + 1e-9)


def _rows(rng: np.random.Generator, n: int) -> Sample:
    p = 1 / (1 + np.exp(-rng.normal(size=n)))
    return Sample(features=rng.normal(size=(n, 3)), proba=np.stack([1 - p, p], axis=1))


def _fixed_looks(monkeypatch, p_values: list[float]) -> None:
    """Every look's domain check returns the next of ``p_values`` (so the levels alone decide)."""
    it = iter(p_values)

    def check(*a, **k):
        p = next(it)
        return DomainCheck.model_construct(p_value=p, p_classifier=p), None

    monkeypatch.setattr(sr, "domain_check", check)


@pytest.mark.parametrize(
    ("name", "row"),
    [("harmonic", None), ("geometric", None), ("first3_even", 150), ("first3_late", 150)],
)
def test_the_alarm_follows_each_looks_share_and_the_evidence_keeps_the_harmonic_one(monkeypatch, name, row):
    # look 3's p = 0.0009: above harmonic's 0.005/12 and geometric's 0.005/8, under 0.005 * 0.3 and 0.005 * 0.5
    _fixed_looks(monkeypatch, [0.5, 0.5, 0.0009])
    rng = np.random.default_rng(0)
    st = ReferenceStreamTest(_rows(rng, 80), "binary", alpha=0.05, delta=0.1, look_rows=50, spending=name)
    s = st.update(_rows(rng, 150))
    assert s.alarm_at == row and s.spending == name and s.looks == 3
    # the withholding evidence (alpha/(k(k+1)) here, evidence 1) is the same for every spending
    assert s.evidence_at == 150
    assert ("0.3 at each of looks 1-3" in s.rests_on) == (name == "first3_even")


def test_spending_bad_input_names_the_setting():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="stream spending='even'"):
        ReferenceStreamTest(_rows(rng, 80), "binary", spending="even")
    with pytest.raises(ValueError, match="expected one of harmonic"):
        spend(1, "even")
    with pytest.raises(ConfigError, match="stream_spending"):
        BuildMonitorProfile(stream_spending="even")


@pytest.fixture(scope="module")
def digits():
    return digits_task_setup()


def test_stream_spending_reaches_profile_summary_guarantee_rebuild_and_monitor(digits, tmp_path):
    bundle, model, _ = digits
    for value, words in [
        ("harmonic", "alpha*delta/(k(k+1)) spent"),
        ("first3_late", "alpha*delta x (0.2, 0.2, 0.5 at looks 1-3, then 0.1/((k-3)(k-2))) spent at look k"),
    ]:
        stage, profile = stage_profile(digits, tmp_path / value, FAST, stream_spending=value)
        info = profile.info
        assert info.stream_spending == value and words in info.guarantee
        assert (
            stage.summarize(type(stage).Outputs(reference=profile))["reference"]["stream_spending"] == value
        )
        assert profile_config(info).stream_spending == value
        mon = Monitor(profile, model, seed=0, effects=False)
        test = mon.stream_test()
        assert isinstance(test, ReferenceStreamTest) and test.spending == value
        res = mon.check_stream(bundle.val.X[:200], window=100)
        assert res.stream["spending"] == value
    # the default since rule S19 (session 19); a profile saved before the setting existed loads with harmonic
    assert BuildMonitorProfile().config.stream_spending == "first3_late"
    profile.save(tmp_path / "old")
    meta = tmp_path / "old" / "profile.json"
    raw = json.loads(meta.read_text())
    raw.pop("stream_spending")
    meta.write_text(json.dumps(raw))
    assert ReferenceProfile.load(tmp_path / "old").info.stream_spending == "harmonic"
