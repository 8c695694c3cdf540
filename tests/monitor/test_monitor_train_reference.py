"""The domain flag's second reference: training rows' model-free features (monitoring/train_reference.py)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.stage import RunContext
from closedloop.monitoring import Monitor
from closedloop.monitoring.domain import PERMUTATIONS
from closedloop.monitoring.train_reference import train_reference_check
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import table_setup  # noqa: E402

FAST = {"calibration_windows": 30, "window_sizes": [50, 100], "permutations": 60}


def test_train_reference_check_is_exact_in_distribution_and_sees_a_shift():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(1000, 5))
    same = [train_reference_check(train, rng.normal(size=(200, 5)), rng, 199).p_value for _ in range(40)]
    assert sum(p <= 0.05 for p in same) <= 6  # an exact test: about 5% of 40
    shifted = rng.normal(size=(200, 5)) + np.array([0.4, 0, 0, 0, 0])
    chk = train_reference_check(train, shifted, rng)
    assert chk.p_value == pytest.approx(1 / (PERMUTATIONS + 1)) and chk.n_train == 1000 and chk.features == 5
    # a constant column is dropped, a missing value filled; no features of the same columns: no test
    win = np.c_[shifted, np.zeros(200)]
    win[:5, 0] = np.nan
    assert train_reference_check(np.c_[train, np.zeros(1000)], win, rng).features == 5
    assert train_reference_check(train, None, rng) is None
    assert train_reference_check(train, np.zeros((200, 3)), rng) is None


def test_the_profile_keeps_training_rows_and_the_flag_splits_the_level(tmp_path):
    from closedloop.core.errors import ConfigError

    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    stage = BuildMonitorProfile(**FAST, train_reference_rows=300)
    out = stage.execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", Path("."), seed=0)
    )
    prof = out.reference
    summary = stage.summarize(out)["reference"]
    assert summary["train_reference_rows"] == prof.info.train_reference_rows
    assert summary["train_reference_share"] == prof.info.train_reference_share == 0.5
    assert "at 0.5 of that level" in summary["guarantee"] and "training rows" in summary["guarantee"]
    assert prof.info.train_reference_rows == prof.train_features.shape[0] == min(300, len(bundle.train))
    prof.save(tmp_path)
    back = type(prof).load(tmp_path)
    assert np.array_equal(back.train_features, prof.train_features, equal_nan=True)
    mon = Monitor(back, model)
    res = mon.check(bundle.splits["test"].X)
    assert res["train_reference"]["n_train"] == prof.info.train_reference_rows
    shifted = bundle.splits["test"].X.copy()
    shifted["a"] = shifted["a"] + 1.5
    res = mon.check(shifted)
    assert "domain" in res["estimate_flags"] and "training rows' (mean-shift test" in res["estimate_reason"]
    # a profile built before (no train_features): loads, and the held-out test keeps the whole level
    with np.load(tmp_path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "train_features"}
    np.savez_compressed(tmp_path / "arrays.npz", **arrays)
    old = type(prof).load(tmp_path)
    assert old.train_features is None
    assert Monitor(old, model).check(bundle.splits["test"].X)["train_reference"] is None
    # on by default since rule T21 (2,000 rows, share 0.5); 0 turns it off
    on = copy.copy(BuildMonitorProfile().config)
    assert (on.train_reference_rows, on.train_reference_share) == (2000, 0.5)
    assert BuildMonitorProfile(train_reference_rows=0).config.train_reference_rows == 0
    with pytest.raises(ConfigError, match="train_reference_rows"):
        BuildMonitorProfile(train_reference_rows=5)


def test_the_training_rows_test_spends_its_share_of_the_domain_level(monkeypatch):
    """share 0.5: both tests at 0.0025 (the domain level 0.005); share 0.2: the training rows' test at
    0.001, the held-out test at 0.004. A training-rows p of 0.002 flags under the first only."""
    from closedloop.core.errors import ConfigError
    from closedloop.monitoring import monitor as monitor_mod
    from closedloop.monitoring.train_reference import TrainReferenceCheck

    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    fixed = TrainReferenceCheck(p_value=0.002, n_train=300, n_window=100, features=3)
    monkeypatch.setattr(monitor_mod, "train_reference_check", lambda *a, **k: fixed)
    flagged = {}
    for share in (0.5, 0.2):
        stage = BuildMonitorProfile(**FAST, train_reference_rows=300, train_reference_share=share)
        out = stage.execute(
            {"data": bundle, "task": task, "model": model}, RunContext("monitor", Path("."), seed=0)
        )
        assert out.reference.info.train_reference_share == share
        assert f"at {share:g} of it" in stage.summarize(out)["reference"]["guarantee"]
        res = Monitor(out.reference, model).check(bundle.splits["test"].X)
        assert res["train_reference"]["p_value"] == 0.002
        flagged[share] = "training rows' (mean-shift test" in res["estimate_reason"]
    assert flagged == {0.5: True, 0.2: False}
    for bad in (0, 1, 1.5):
        with pytest.raises(ConfigError, match="train_reference_share"):
            BuildMonitorProfile(train_reference_rows=300, train_reference_share=bad)
