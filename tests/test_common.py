"""Every registered stage passes the common contract (closedloop.core.checks.check_stage).

A new stage gets these checks for free; it only needs an entry in TINY_PARAMS (parameters that make it
run in seconds on tiny data). A registered stage without an entry fails ``test_every_stage_has_a_fixture``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from closedloop.core.checks import check_stage
from closedloop.core.pipeline import Pipeline, RunResult
from closedloop.core.registry import STAGES

#: stage key -> params for a seconds-long run on a few hundred digits images
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "data": {"source": "sklearn", "options": {"name": "digits"}},
    "task": {},
    "audit": {},
    "baseline": {},
    "train": {
        "preset": "quick",
        "budget_minutes": 10,  # generous: a budget cut would make the two determinism runs differ
        "n_trials": 2,
        "max_epochs": 2,
        "ladder_epochs": 2,
        "baseline_epochs": 1,
        "ladder": [{"width": 4}, {"width": 8}],
        "n_bootstrap": 200,
    },
    "export": {},
    "monitor": {"calibration_windows": 40, "permutations": 50, "window_sizes": [50, 100]},
}
ORDER = ["task", "audit", "baseline", "train", "export", "monitor"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One tiny pipeline over all built-in stages: its artifacts are the inputs of each check."""
    from closedloop.core.checks import GivenArtifacts
    from common_data import digits_bundle

    runs = tmp_path_factory.mktemp("common_runs")
    given = GivenArtifacts.of({"data": digits_bundle((300, 100, 100))}, runs / "given")
    stages = [STAGES.resolve(k)(**TINY_PARAMS[k]) for k in ORDER if k in STAGES.names()]
    result = Pipeline([given, *stages], name="common", runs_dir=runs).run(progress=False)
    failed = {k: v.get("error") for k, v in result.summary["stages"].items() if v["status"] != "ok"}
    assert not failed, failed
    return result


def test_every_stage_has_a_fixture() -> None:
    missing = sorted(set(STAGES.names()) - set(TINY_PARAMS))
    assert not missing, f"stages without a TINY_PARAMS entry in tests/test_common.py: {missing}"


@pytest.mark.parametrize("key", sorted(TINY_PARAMS))
def test_stage_contract(
    key: str, upstream: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if key not in STAGES.names():
        pytest.skip(f"stage {key!r} is not registered in this build")
    monkeypatch.chdir(tmp_path)
    cls = STAGES.resolve(key)
    stage = cls(**TINY_PARAMS[key])
    inputs = {}
    for port in stage.input_ports():
        try:
            inputs[port.name] = upstream.artifact(port.name)
        except KeyError:
            assert not port.required, f"no upstream artifact {port.name!r} for {key}"
    check_stage(stage, inputs, tmp_path)
