"""The pruner lets the start-up trials finish (``train.prune_startup``, session 25): successive halving stops no
trial before ``prune_startup`` trials have completed, and later trials still compete with the start-up
trials' rung scores. ``startup`` waits for the sampler's start-up trials, ``all`` for every trial (no pruning); the default
prunes from the first (at synthetic_50k test seed 7 the pruner had stopped 9 of 10 tree trials against
LightGBM's defaults; the development runs behind the default are in docs/trees_decisions.md)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from pydantic import ValidationError

from closedloop.stages.train.config import TrainConfig
from closedloop.stages.train.phases.study import AfterStartup, prune_startup

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _states(n: int, scores: list[float]) -> list[str]:
    """Trials reporting ``scores[k]`` at every one of 4 steps under successive halving held back for ``n``."""
    halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(direction="maximize", pruner=AfterStartup(halving, n) if n else halving)

    def objective(trial: Any) -> float:
        for step in range(4):
            trial.report(scores[trial.number], step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return scores[trial.number]

    study.optimize(objective, n_trials=len(scores))
    return [t.state.name for t in study.trials]


def test_start_up_trials_complete_and_later_ones_compete_with_their_rung_scores() -> None:
    scores = [0.9, 0.2, 0.3, 0.25, 0.95]
    # plain successive halving stops every trial that trails trial 0 at its first rung
    assert _states(0, scores) == ["COMPLETE", "PRUNED", "PRUNED", "PRUNED", "COMPLETE"]
    # held back for 3: trials 1 and 2 finish; trial 3 (0.25) is then judged against all three start-up
    # trials' rung scores (it would be promoted against trial 1 alone), and trial 4 beats them all
    assert _states(3, scores) == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]


def _sess(family: str, setting: int | str, n_trials: int = 10) -> Any:
    return SimpleNamespace(family=family, cfg=SimpleNamespace(prune_startup=setting, n_trials=n_trials))


def test_the_setting_resolves_to_a_count_and_the_default_prunes_from_the_first_trial() -> None:
    assert prune_startup(_sess("lgbm", "startup")) == 3  # a third of 10
    assert prune_startup(_sess("lgbm", "startup", n_trials=30)) == 5  # at most 5
    assert prune_startup(_sess("mlp", "startup", n_trials=3)) == 2  # at least 2
    assert prune_startup(_sess("lgbm", "all")) == 10  # every trial: no pruning
    assert prune_startup(_sess("mlp", 4)) == 4
    assert prune_startup(_sess("lgbm", None)) == prune_startup(_sess("mlp", None)) == 0
    assert TrainConfig().prune_startup is None


def test_a_negative_count_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"prune_startup[\s\S]*negative"):
        TrainConfig(prune_startup=-1)
    with pytest.raises(ValidationError, match="prune_startup"):
        TrainConfig(prune_startup="auto")  # type: ignore[arg-type]


def test_a_tree_stage_says_how_long_the_pruner_waited(tmp_path: Any) -> None:
    """``startup`` with six trials (start-up 2): the first two complete; the decision log and the report
    say why."""
    pytest.importorskip("lightgbm")
    from .test_train_trees import TREE_TRAIN, task_train_export, tree_table

    run = task_train_export(
        tree_table(), {**TREE_TRAIN, "n_trials": 6, "prune_startup": "startup"}, tmp_path, "prune"
    )
    said = [d["decision"] for d in run.summary["stages"]["train"]["decisions"] if d["phase"] == "tune"]
    assert any(
        d.startswith(
            "the pruner stops no trial before 2 have completed (prune_startup: startup; the sampler's"
        )
        for d in said
    )
    work = next(run.run_dir.glob("stages/*_train")) / "work"
    tune = json.loads((work / "phase_tune.json").read_text())["outcomes"]["tune"]
    assert tune["prune_startup"] == 2
    assert [t["state"] for t in sorted(tune["trials"], key=lambda t: t["trial"])][:2] == ["COMPLETE"] * 2
    assert "The pruner stopped no trial before 2 had completed." in (run.run_dir / "report.html").read_text()
