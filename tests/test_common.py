"""Every registered stage passes the common contract (closedloop.core.checks.check_stage).

A new stage gets these checks for free; it only needs an entry in TINY_PARAMS (parameters that make it
run in seconds on tiny data). A registered stage without an entry fails ``test_every_stage_has_a_fixture``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from closedloop import JsonArtifact, RunContext, Stage, StageIO
from closedloop.core.checks import check_stage
from closedloop.core.pipeline import Pipeline, RunResult
from closedloop.core.registry import STAGES
from closedloop.stages.audit.stage import DEFAULT_CHECKS

#: stage key -> params for a seconds-long run on a few hundred digits images
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "data": {"source": "sklearn", "options": {"name": "digits"}},
    "task": {},
    # every built-in check, the label-issue CNN with few steps (its folds were 7 of the audit's 13 s)
    "audit": {
        "checks": [
            *(c for c in DEFAULT_CHECKS if c != "label_issues"),
            {"name": "label_issues", "params": {"cnn_epochs": 2, "cnn_min_steps": 20}},
        ]
    },
    "baseline": {},
    "train": {
        "preset": "quick",
        # generous for every phase, so the trial and epoch counts, not the clock, end each one: a budget
        # cut would make the two determinism runs differ. The tightest share is sanity's (3 %): at 10
        # minutes its 18 s were cut on a loaded machine (the check took 12 s at load ~3, and was cut
        # after 20 of its 48 steps at load ~8), so the saved evaluation (its steps, losses, decision)
        # differed; 60 minutes give it 108 s (its 48 steps took 17 s and 34 s at load ~8-9), like the
        # kill battery's budget (the counts end the run long before: a larger budget costs no time)
        "budget_minutes": 60,
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


class _RunCount(JsonArtifact):
    runs: int


class _Drifts(Stage):
    """Saves a value that changes from run to run, like a measured seconds figure in an artifact."""

    runs: ClassVar[int] = 0

    class Inputs(StageIO):
        pass

    class Outputs(StageIO):
        count: _RunCount

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        type(self).runs += 1
        return self.Outputs(count=_RunCount(runs=type(self).runs))


def test_check_stage_names_what_two_runs_differ_in(tmp_path: Path) -> None:
    # a flaky determinism failure is diagnosed from the log alone: the output and its file
    with pytest.raises(
        AssertionError, match=r"two runs with seed 0 differ: \{'count': \['artifact.json'\]\}"
    ):
        check_stage(_Drifts(), {}, tmp_path)
