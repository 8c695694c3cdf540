"""The training package's parts without a training run: the knob registry and what is derived from
it, the phase budget table, typed outcomes."""

from __future__ import annotations

from typing import Any

import pytest

from closedloop.core.errors import ConfigError
from closedloop.stages.train import knobs as K
from closedloop.stages.train.driver import budget_table
from closedloop.stages.train.engine import HParams
from closedloop.stages.train.outcomes import TuneOutcome
from closedloop.stages.train.phases import PHASES
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.phases.sanity import Sanity

IMAGES = K.SpaceContext(lr=3e-3, max_epochs=9, problem_type="binary", input_kind="images", family="small_cnn")


def test_search_space_default_trial_and_neutral_values_come_from_the_registry() -> None:
    space = K.search_space(IMAGES, K.ALL_KNOBS)
    tree_knobs = {
        "learning_rate",
        "min_child_samples",
        "reg_lambda",
        "reg_alpha",
        "feature_fraction",
        "bagging_fraction",
        "num_leaves",
    }
    # images + classification: every network knob applies, no tree knob
    assert list(space) == [k for k in K.ALL_KNOBS if k not in tree_knobs]
    trees = K.SpaceContext(lr=3e-3, max_epochs=9, problem_type="binary", input_kind="table", family="lgbm")
    # without a ladder rung that sets num_leaves, there is nothing to search around
    assert set(K.search_space(trees, K.ALL_KNOBS)) == tree_knobs - {"num_leaves"} | {"epochs"}
    assert space["lr"].as_list() == ["float", pytest.approx(3e-4), pytest.approx(9e-3), True]
    assert space["epochs"].as_list() == ["int", 3, 9, False]
    table = K.SpaceContext(**{**IMAGES.model_dump(), "input_kind": "table", "problem_type": "regression"})
    assert set(K.search_space(table, K.ALL_KNOBS)) == {"lr", "weight_decay", "dropout", "l1", "epochs"}
    assert list(K.search_space(IMAGES, ["l1", "lr"])) == ["lr", "l1"]  # allowed filters, order kept
    first = K.default_trial(space, lr=3e-3, max_epochs=9)
    assert first == {
        "weight_decay": 1e-4,
        "dropout": 0.1,
        "l1": 1e-8,
        "strength": 0.5,
        "label_smoothing": 0.0,
        "mixup": 0.0,
        "lr": 3e-3,
        "epochs": 9,
    }
    assert "lr" not in K.default_trial(space)  # the minimum trial samples lr
    neutral = K.neutral_values(3e-3, 9)
    assert neutral["lr"] == 3e-3 and neutral["epochs"] == 9 and neutral["dropout"] == 0.0
    assert "num_leaves" not in neutral  # no rung: nothing to reset it to, so it is not ablated


def test_num_leaves_is_searched_around_the_ladders_rung_which_is_its_first_trial_and_neutral() -> None:
    for rung, (lo, hi) in ((4, (2, 8)), (64, (32, 128)), (2, (2, 4))):
        c = K.SpaceContext(
            lr=0.1,
            max_epochs=9,
            problem_type="binary",
            input_kind="table",
            family="lgbm",
            capacity={"num_leaves": rung},
        )
        space = K.search_space(c, K.ALL_KNOBS)
        assert space["num_leaves"].as_list() == ["int", lo, hi, True]
        assert K.default_trial(space, capacity={"num_leaves": rung})["num_leaves"] == rung
        assert K.neutral_values(0.1, 9, {"num_leaves": rung})["num_leaves"] == rung
        assert "num_leaves" not in K.search_space(c, [k for k in K.ALL_KNOBS if k != "num_leaves"])
    # a rung's params set only a capacity knob's first trial, never another knob's default
    mlp = K.SpaceContext(**{**IMAGES.model_dump(), "input_kind": "table", "family": "mlp"})
    first = K.default_trial(K.search_space(mlp, K.ALL_KNOBS), capacity={"dropout": 0.0, "width": 64})
    assert first["dropout"] == 0.1 and "width" not in first
    # a network's rung has no leaves; the knob never applies to a network family
    net = K.SpaceContext(**{**IMAGES.model_dump(), "capacity": {"num_leaves": 4, "width": 16}})
    assert "num_leaves" not in K.search_space(net, K.ALL_KNOBS)


def test_split_params_sends_each_knob_where_the_registry_says() -> None:
    mp, hp = K.split_params(
        HParams(),
        {"width": 8},
        {"dropout": 0.3, "lr": 0.01, "epochs": 4.0, "strength": 0.7},
        patience=2,
        max_epochs=9,
    )
    assert mp == {"width": 8, "dropout": 0.3}
    assert hp.lr == 0.01 and hp.epochs == 4 and isinstance(hp.epochs, int) and hp.patience == 2
    assert hp.augment.strength == 0.7 and "dropout" not in hp.as_dict()
    _, hp = K.split_params(HParams(), {}, {}, patience=None, max_epochs=9)
    assert hp.epochs == 9  # no epochs knob: the configured maximum


def test_a_family_without_dropout_is_not_given_one() -> None:
    custom = K.SpaceContext(**{**IMAGES.model_dump(), "family": "tests.toy_pkg:no_such_builder"})
    # a family the registry cannot resolve is built by the stage's own hook: assumed to take it
    assert "dropout" in K.search_space(custom, K.ALL_KNOBS)


def test_budget_shares_must_add_up_and_an_unknown_phase_has_no_deadline() -> None:
    phases = [p() for p in PHASES]
    table = budget_table(phases)
    assert list(table) == [p.name for p in phases] and sum(table.values()) == pytest.approx(1.0)

    class Extra(Phase):
        name = "extra"
        budget_share = 0.1
        outcome = TuneOutcome

        def run(self, sess):  # pragma: no cover - never run
            raise AssertionError

    with pytest.raises(ConfigError, match="add up to 1.100"):
        budget_table([*phases, Extra()])
    with pytest.raises(ConfigError, match="share a name"):
        budget_table([Sanity(), Sanity()])


def test_deadline_of_a_phase_missing_from_the_table_is_an_error(binary_digits, binary_task, tmp_path) -> None:
    from closedloop.stages.train import TrainModel

    from .conftest import TINY, make_ctx

    stage = TrainModel(**TINY)
    sess = stage.make_session(stage.Inputs(data=binary_digits, task=binary_task), make_ctx(tmp_path))
    assert sess.deadline("final") == pytest.approx(sess.t0 + sess.budget_s)
    assert sess.deadline("cross_validate") == sess.deadline("tune")  # shares the tune phase's time
    with pytest.raises(ConfigError, match="'polish' has no share"):
        sess.deadline("polish")


def test_final_fit_plan_drops_members_then_epochs_and_a_resume_keeps_it(
    binary_digits, binary_task, tmp_path
) -> None:
    import time

    from closedloop.stages.train import TrainModel
    from closedloop.stages.train.final_plan import PLAN_FILE, plan_final
    from closedloop.stages.train.outcomes import Rung, ScaleUpOutcome
    from closedloop.stages.train.phases.scale_up import rung_step_seconds
    from closedloop.stages.train.session import TRIAL_STEP_SECONDS

    from .conftest import TINY, make_ctx

    stage = TrainModel(**TINY)
    sess = stage.make_session(stage.Inputs(data=binary_digits, task=binary_task), make_ctx(tmp_path))
    rung = Rung(
        rung=2,
        params={},
        n_parameters=1,
        val_metric=0.9,
        score=0.9,
        best_epoch=1,
        overfits=False,
        val_loss_min_epoch=None,
    )
    sess.outcomes["scale_up"] = ScaleUpOutcome(rungs=[rung, rung], chosen=1, params={}, any_overfits=False)
    sess.ctx.timings[rung_step_seconds(2)] = 0.1  # the chosen rung: 0.1 s per step, 10 steps an epoch
    sess.budget_s = 100.0

    def plan_final_(epochs: int, members: int) -> Any:
        return plan_final(sess, epochs=epochs, members=members, n_rows=100, batch_size=10)

    plan = plan_final_(10, 3)  # the budget starts now: nothing to cut
    assert (plan.epochs, plan.members, plan.why) == (10, 3, None) and not sess.decisions
    (sess.work / PLAN_FILE).unlink()
    sess.t0 = time.time() - 80  # the final phase's deadline is 20 s away, 17 s of it for the fit
    plan = plan_final_(10, 3)
    assert (plan.epochs, plan.members) == (10, 1) and plan.shrunk
    assert "ensemble members 3 -> 1" in sess.decisions[-1]["decision"]
    sess.t0 = time.time() - 200  # resumed with no time left: the saved plan (its checkpoints') holds
    assert plan_final_(10, 3) == plan
    assert sess.decisions[-1]["decision"] == sess.decisions[-2]["decision"]  # said again, the same
    # the latest tuning trial's step (the chosen network under the load of the moment) sizes the fit:
    # the machine got 4x slower since the ladder, so 17 s buy 4 epochs, not 17
    (sess.work / PLAN_FILE).unlink()
    sess.t0 = time.time() - 80
    sess.ctx.timings[TRIAL_STEP_SECONDS] = 0.4
    plan = plan_final_(20, 1)
    assert plan.seconds_per_epoch == pytest.approx(4.0) and plan.epochs == 4
    del sess.ctx.timings[TRIAL_STEP_SECONDS]
    (sess.work / PLAN_FILE).write_text("{", encoding="utf-8")  # damaged: planned again, never half read
    sess.t0 = time.time() - 80
    plan = plan_final_(30, 2)
    assert plan.members == 1 and 14 <= plan.epochs <= 17
    assert "epochs 30 -> " in sess.decisions[-1]["decision"]
    # a slow machine (the baseline comparison took long): every earlier phase ends early enough to
    # leave the final phase's evaluation its measured time, the final deadline stays the budget's end
    from closedloop.stages.train.session import COMPARISON_SECONDS, RESERVE_SHARE

    sess.ctx.timings.pop(COMPARISON_SECONDS, None)  # nothing measured yet: a share of the final's budget
    first = sess.reserve_estimate()
    assert not first.measured and first.seconds == pytest.approx(RESERVE_SHARE * 0.20 * 100.0)
    sess.ctx.timings[COMPARISON_SECONDS] = 0.5
    small = sess.reserve_estimate()
    sess.ctx.timings[COMPARISON_SECONDS] = 50.0  # a 100x slower comparison: a reserve far above 30 s
    big = sess.reserve_estimate()
    assert small.measured and big.measured and "measured: bootstrap" in big.how
    assert big.seconds > 30.0 and big.seconds > 50 * small.seconds
    assert sess.reserve() == pytest.approx(big.seconds)
    end = sess.t0 + 100.0 - big.seconds  # every earlier phase ends early enough to leave it
    assert sess.deadline("tune") == pytest.approx(min(sess.t0 + 90.0, end))
    assert sess.deadline("final") == pytest.approx(sess.t0 + 100.0)
    # the final plan keeps that reserve and says in the decision log what it was measured from
    (sess.work / PLAN_FILE).unlink()
    sess.t0 = time.time() - 80
    sess.ctx.timings[COMPARISON_SECONDS] = 0.5
    plan = plan_final_(30, 1)
    assert "measured: bootstrap" in sess.decisions[-1]["decision"]
    from closedloop.stages.train.final_plan import RESERVE_SECONDS

    assert sess.ctx.timings[RESERVE_SECONDS] == pytest.approx(sess.reserve(), abs=1e-3)
