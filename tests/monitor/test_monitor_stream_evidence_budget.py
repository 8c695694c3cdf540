"""Issue 19, rule W17 (session 17): the stream's evidence withholds the label-free estimate at a
per-deployment budget (``stream_evidence: budget``, ``stream_evidence_delta``) between the level over
runs and the alarm's; the stream tests record ``evidence_at`` there, and the setting is reachable from
YAML / ``--set``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.config import apply_overrides
from closedloop.core.errors import ConfigError
from closedloop.core.pipeline import Pipeline
from closedloop.monitoring import stream_reference
from closedloop.monitoring.drift.base import Sample
from closedloop.monitoring.stream import StreamTest
from closedloop.monitoring.stream_reference import ReferenceStreamTest, new_stream_test

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_task_setup, fixed_domain_check, stage_profile  # noqa: E402

FAST = {"calibration_windows": 40, "window_sizes": [50, 100], "permutations": 40}


def _rows(n: int, seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, size=n)
    return Sample(features=rng.normal(size=(n, 3)), proba=np.stack([1 - p, p], axis=1))


def _fixed_p(monkeypatch, p: float) -> None:
    """Every look of the reference stream test returns this p-value."""
    check = fixed_domain_check(p, p_classifier=p, ess=100.0, n_reference=100, n_window=200)
    monkeypatch.setattr(stream_reference, "domain_check", lambda *a, **k: (check, {}))


@pytest.mark.parametrize(
    ("p", "over_runs", "budget", "alarm"),
    [
        # look 1 spends 1/2: over runs 0.025, budget 0.05*0.25/2 = 0.00625, alarm 0.05*0.1/2 = 0.0025
        (0.01, 200, None, None),
        (0.005, 200, 200, None),
        (0.002, 200, 200, 200),
        (0.05, None, None, None),
    ],
)
def test_reference_stream_records_its_evidence_at_the_budget(monkeypatch, p, over_runs, budget, alarm):
    _fixed_p(monkeypatch, p)
    seen = {}
    for evidence in (1.0, 0.25):
        test = ReferenceStreamTest(
            _rows(100, 0), "binary", 0.05, 0, 200, delta=0.1, look_test="mean_shift", evidence=evidence
        )
        status = test.update(_rows(200, 1))
        seen[evidence] = status.evidence_at
        assert status.evidence == evidence and status.alarm_at == alarm
    assert (seen[1.0], seen[0.25]) == (over_runs, budget)


def test_conformal_stream_records_its_evidence_at_the_budget():
    rng = np.random.default_rng(0)
    calibration = {"confidence": rng.uniform(size=300)}
    shifted = {"confidence": np.full(400, 0.999)}  # every row ranks above the reference: the evidence grows
    at = {}
    for evidence in (1.0, 0.25):
        test = StreamTest(calibration, alpha=0.05, seed=0, delta=0.1, evidence=evidence)
        status = test.update(shifted)
        assert status.evidence == evidence
        at[evidence] = status.evidence_at
    assert at[1.0] is not None and at[0.25] is not None and at[1.0] < at[0.25]


def test_bad_evidence_factor_is_refused():
    with pytest.raises(ValueError, match=r"stream evidence=1.5: expected a factor of alpha in \(0, 1\]"):
        ReferenceStreamTest(_rows(100, 0), "binary", evidence=1.5)


def test_the_profile_sets_the_stream_tests_evidence(tmp_path):
    digits = digits_task_setup()
    _, budget = stage_profile(digits, tmp_path / "budget", FAST)
    assert new_stream_test(budget).evidence == 0.25  # the default (rule W17)
    _, half = stage_profile(digits, tmp_path / "half", FAST, stream_evidence_delta=0.5)
    assert new_stream_test(half).evidence == 0.5 and half.info.stream_evidence_delta == 0.5
    for value in ("over_runs", "per_deployment"):
        _, other = stage_profile(digits, tmp_path / value, FAST, stream_evidence=value)
        assert new_stream_test(other).evidence == 1.0  # the level over runs (per_deployment ignores it)


def _raw(params: dict) -> dict:
    return {
        "name": "p",
        "data": {"source": "sklearn", "name": "breast_cancer"},
        "stages": [{"kind": "task"}, {"kind": "train"}, {"kind": "monitor", "params": params}],
    }


def test_budget_from_yaml_and_the_command_line():
    raw = apply_overrides(_raw({"stream_evidence": "budget"}), ["monitor.stream_evidence_delta=0.5"])
    stage = Pipeline.from_dict(raw).stages[-1]
    assert (stage.config.stream_evidence, stage.config.stream_evidence_delta) == ("budget", 0.5)
    with pytest.raises(ConfigError, match=r"stream_evidence_delta"):
        Pipeline.from_dict(_raw({"stream_evidence_delta": 0}))
