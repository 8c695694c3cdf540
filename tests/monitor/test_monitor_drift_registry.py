"""Drift tests as plug-ins: named by key or import path, with their own config, in the monitor's YAML."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.errors import ConfigError
from closedloop.monitoring import Monitor
from closedloop.stages.monitor import BuildMonitorProfileConfig
from closedloop.stages.monitor.stage import build_profile
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import table_setup  # noqa: E402

SMALL = {"calibration_windows": 20, "permutations": 30, "window_sizes": [50]}


def test_default_tests_are_todays_set_in_todays_order() -> None:
    assert BuildMonitorProfileConfig().tests == [
        "features",
        "embedding_mmd",
        "bbsd",
        "predicted_class",
        "confidence",
    ]


@pytest.mark.parametrize(
    ("tests", "match"),
    [
        (["kolmogorov"], r"tests\[0\]: unknown drift test 'kolmogorov'"),
        (["features", "feature"], r"unknown drift test 'feature'. Did you mean 'features'\?"),
        ([{"name": "features", "params": {"psi_bin": 3}}], r"tests\[0\] \(features\).params: .*'psi_bin' \(did you mean 'psi_bins'\?\)"),
        ([{"name": "embedding_mmd", "params": {"max_window": 2}}], r"max_window: got 2; expected greater than or equal to 10"),
        (["features", "drift_plugins:Nope"], r"module 'drift_plugins' has no drift test class 'Nope'"),
        (["features", "no_such_pkg.drift:T"], r"cannot import module 'no_such_pkg.drift'"),
        (["features", "closedloop.core.config:PluginSpec"], r"is not a DriftTest subclass"),
        (["bbsd", "features", "bbsd"], r"tests\[2\]: drift test 'bbsd' is listed twice"),
        (["label_shift"], r"at least one drift test that runs without labels"),
    ],
)  # fmt: skip
def test_bad_drift_test_entries_fail_at_config_time(tests: list, match: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        BuildMonitorProfileConfig(tests=tests)


@pytest.fixture(scope="module")
def table():  # noqa: ANN201
    bundle, model = table_setup()
    return bundle, build_task_spec(DefineTaskConfig(), bundle), model


def _profile(table, tests):  # noqa: ANN001, ANN202
    bundle, task, model = table
    cfg = BuildMonitorProfileConfig(tests=tests, **SMALL)
    return build_profile(cfg, bundle, task, model, np.random.default_rng(0))


def test_user_tests_by_import_path_with_params_run_in_the_monitor(table, tmp_path: Path) -> None:
    from closedloop.monitoring.profile import ReferenceProfile

    spec = {"name": "drift_plugins:FirstColumnShift", "params": {"tolerance": 0.5}}
    profile = _profile(table, ["features", spec, "drift_plugins:AllPositive"])
    profile.save(tmp_path)
    profile = ReferenceProfile.load(tmp_path)  # the config of each test survives the profile file
    bundle, _, model = table
    mon = Monitor(profile, model)
    assert [t.name for t in mon.tests] == ["features", "first_column_shift", "all_positive"]
    assert mon.tests[1].config.tolerance == 0.5 and mon.label_tests == []
    X = bundle.val.X.iloc[:60].copy()
    quiet = mon.check(X)
    assert quiet["p_values"]["first_column_shift"] == 1.0 and "all_positive" not in quiet["p_values"]
    X["a"] = X["a"] + 1.0
    res = mon.check(X, labels=np.ones(len(X), int))
    assert res["p_values"]["first_column_shift"] == 0.0 and res["alert"] == "alarm"
    assert "label_shift" not in res["p_values"]  # a label test is named: the default one is not added
    assert "all_positive: p=0: only positives arrived" in res["evidence"]
    assert "first_column_shift: p=0 (first column)" in res["evidence"]
    assert not res["estimate_reliable"]  # a covariate test at the alarm level
    assert any("first_column_shift" in e and "label-free estimate" in e for e in res["evidence"])


def test_label_tests_do_not_enter_the_calibrated_thresholds(table) -> None:
    plain = _profile(table, ["features", "bbsd"])
    with_label = _profile(table, ["features", "label_shift", "bbsd"])
    assert with_label.info.thresholds == plain.info.thresholds


def test_the_old_drift_import_path_still_works():
    """Plug-ins written against ``closedloop.stages.monitor.drift`` (docs/extending.md before the library
    moved to ``closedloop.monitoring``) get the same classes and the same registry."""
    import closedloop.monitoring.drift as new
    import closedloop.stages.monitor.drift as old

    assert old.DriftTest is new.DriftTest and old.DRIFT_TESTS is new.DRIFT_TESTS
    assert old.DriftTestConfig is new.DriftTestConfig and old.DriftResult is new.DriftResult


def test_the_live_monitor_derives_its_skips_from_what_each_test_uses() -> None:
    """No list of names: a user test that reads embeddings is skipped live for the same reason as
    the built-in embedding test, and a test that reads only outputs runs."""
    from closedloop.monitoring.drift import DriftTest
    from closedloop.monitoring.live import live_skips

    skips = live_skips(
        ["features", "embedding_mmd", "drift_plugins:EmbeddingNorm", "bbsd", "drift_plugins:AllPositive"]
    )
    assert set(skips) == {"embedding_mmd", "embedding_norm"}
    assert all("ONNX" in why for why in skips.values())
    with pytest.raises(TypeError, match="uses must be a non-empty subset"):

        class Pixels(DriftTest):  # noqa: F841
            name = "pixels_only"
            description = "pixels: reads what a Sample does not carry"
            uses = frozenset({"pixels"})

            def run(self, ref, win, ctx):  # noqa: ANN001, ANN202
                raise NotImplementedError
