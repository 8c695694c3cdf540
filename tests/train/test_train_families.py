"""A family choice inside one run (``train: {family: [lgbm, mlp]}``) on a tiny table: both families go
through the stage's method on the same splits, the family is chosen on validation, the ledger and the
selection bias cover every family's configurations, the test split opens once for the chosen model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from closedloop.core.checks import GivenArtifacts  # noqa: E402
from closedloop.core.errors import ConfigError  # noqa: E402
from closedloop.core.pipeline import Pipeline, RunResult  # noqa: E402
from closedloop.core.registry import STAGES  # noqa: E402
from closedloop.stages.train import TrainModel  # noqa: E402

from .test_train_trees import tree_table  # noqa: E402

FAMILIES_TRAIN: dict[str, Any] = {
    "preset": "quick",
    "family": ["lgbm", "mlp"],
    "budget_minutes": 30,  # trial counts, not the clock, end each phase (deterministic)
    "ladder": {"lgbm": [{"num_leaves": 4}, {"num_leaves": 16}], "mlp": [{"width": 64, "depth": 2}]},
    "ladder_epochs": 3,
    "baseline_epochs": 2,
    "n_trials": 2,
    "max_epochs": 3,
    "cv_candidates": 1,
    "n_bootstrap": 200,
    "batch_size": 32,
    "min_steps_per_epoch": 4,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    runs = tmp_path_factory.mktemp("family_runs")
    given = GivenArtifacts.of({"data": tree_table(300)}, runs / "given")
    stages = [
        STAGES.resolve("task")(validation={"protocol": "kfold", "folds": 3}),
        STAGES.resolve("baseline")(knn=False, n_resamples=200),
        TrainModel(**FAMILIES_TRAIN),
    ]
    result = Pipeline([given, *stages], name="families", runs_dir=runs).run(progress=False)
    failed = {k: v.get("error") for k, v in result.summary["stages"].items() if v["status"] != "ok"}
    assert not failed, failed
    return result


def test_the_family_is_chosen_on_validation_and_only_it_is_tested(run: RunResult) -> None:
    s = run.summary["stages"]["train"]
    fam = s["families"]
    rows = {r["family"]: r for r in fam["rows"]}
    assert set(rows) == {"lgbm", "mlp"} and rows["lgbm"]["kind"] == "trees"
    # small table: the task's k-fold protocol cross-validated both families; the choice used it
    assert fam["evaluated_on"] == "out_of_fold"
    assert all(r["cv_mean"] is not None and r["score"] == r["cv_mean"] for r in rows.values())
    win, other = rows[fam["chosen"]], rows[fam["runner_up"]]
    assert win["score"] >= other["score"]  # AUC: higher is better
    assert fam["difference"] == pytest.approx(win["score"] - other["score"], abs=1e-12)
    lo, hi = fam["paired_ci95"]
    assert lo <= fam["paired_delta"] <= hi
    assert s["model"]["family"] == fam["chosen"]
    # every configuration of every family is in the ledger and in the count the report gives
    assert s["n_configs"] == sum(r["n_configs"] for r in rows.values())
    ledger = [json.loads(line) for line in (run.run_dir / "validation_ledger.jsonl").read_text().splitlines()]
    train_rows = [r for r in ledger if r["stage"] == "train"]
    for name, row in rows.items():
        mine = [r for r in train_rows if r["description"].startswith(f"{name}: ")]
        assert all(r["params"]["family"] == name for r in mine)
        scored = [r for r in mine if r["metrics"].get("status") != "cross-validated"]
        assert len(scored) == row["n_configs"] >= 1 + 1 + FAMILIES_TRAIN["n_trials"]
    # the selection bias is estimated over both families' candidates
    sel = s["selection"]
    assert sel is not None and sel["n_candidates"] > max(r["n_configs"] for r in rows.values()) - 1
    # the test split was opened once, for the chosen model's evaluation
    tests = [json.loads(line) for line in (run.run_dir / "test_ledger.jsonl").read_text().splitlines()]
    assert [t["stage"] for t in tests if t.get("purpose") == "evaluation"] == ["train"]


def test_the_decision_log_and_report_say_which_family_won(run: RunResult) -> None:
    s = run.summary["stages"]["train"]
    decisions = s["decisions"]
    for name in ("lgbm", "mlp"):  # each family's own phases are in the log, named
        phases = {d["phase"] for d in decisions if d["decision"].startswith(f"{name}: ")}
        assert {"sanity", "beat_baseline", "scale_up", "tune"} <= phases, (name, phases)
    (choice,) = [d for d in decisions if d["phase"] == "families"]
    assert f"Chose {s['families']['chosen']}" in choice["decision"] and "95% CI" in choice["decision"]
    final = [d for d in decisions if d["phase"] == "final"]
    assert final and not any(d["decision"].startswith(("lgbm: ", "mlp: ")) for d in final)
    report = (run.run_dir / "report.html").read_text()
    assert "Family choice" in report and f"Chose {s['families']['chosen']}" in report
    assert "figure missing" not in report
    ev = run.artifact("evaluation")
    stage_dir = run.run_dir / s["dir"]
    for f in ev.figures:  # every family's figures exist where the report looks
        assert (stage_dir / f["path"]).is_file(), f
    timings = json.loads((stage_dir / "stage.json").read_text())["timings"]
    assert timings["family lgbm seconds"] > 0 and timings["family mlp seconds"] > 0


def test_family_list_settings_that_mean_nothing_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"model_params: .* family list"):
        TrainModel(family=["lgbm", "mlp"], model_params={"width": 8})
    with pytest.raises(ConfigError, match=r"ladder: a list of rungs with a family list"):
        TrainModel(family=["lgbm", "mlp"], ladder=[{"num_leaves": 4}])
    with pytest.raises(ConfigError, match=r"ladder: \['resnet18'\] not in the family list"):
        TrainModel(family=["lgbm", "mlp"], ladder={"resnet18": [{}]})
    with pytest.raises(ConfigError, match=r"family: \['mlp'\] listed more than once"):
        TrainModel(family=["mlp", "mlp"])
    assert TrainModel(family=["lgbm"]).config.family == "lgbm"
    assert np.array_equal(TrainModel(family=["lgbm", "mlp"]).config.families("table"), ["lgbm", "mlp"])


def test_a_family_that_cannot_train_on_the_data_is_dropped_with_the_reason(tmp_path) -> None:
    """``family: [lgbm, small_cnn]`` on images: the tree family cannot train on images, so it is dropped
    before any work, the decision log says why, and the other family is trained and chosen."""
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    from .conftest import TINY, digits_bundle, make_ctx

    data = digits_bundle((3, 8))
    task = build_task_spec(DefineTaskConfig(), data)
    cfg = {**TINY, "family": ["lgbm", "small_cnn"], "ladder": {"small_cnn": TINY["ladder"]}}
    out = TrainModel(**cfg).execute({"data": data, "task": task}, make_ctx(tmp_path))
    assert out.model.spec.family == "small_cnn"
    line = next(d for d in out.evaluation.decisions if d["phase"] == "families")
    assert (
        "lgbm was dropped (train.family: 'lgbm' is a tree family; it trains on tables, not images)"
        in (line["decision"])
    )
    assert line["evidence"]["dropped"] == {
        "lgbm": "train.family: 'lgbm' is a tree family; it trains on tables, not images"
    }
