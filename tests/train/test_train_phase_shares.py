"""Each phase's share of the time budget holds, not just the total (issue #27): the loops stop before a
step that would end past the deadline, the sanity check has no grace and records what it was given,
beat_baseline keeps its measured work after the fit from the fit's deadline. No wall time is asserted:
deadlines are put in the past, so what the clock decides does not depend on the machine's speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from closedloop.stages.train.engine import past_deadline

from .conftest import TINY, make_ctx


def _session(binary_digits, binary_task, tmp_path):  # noqa: ANN001, ANN202
    from closedloop.stages.train import TrainModel

    stage = TrainModel(**TINY)
    return stage.make_session(stage.Inputs(data=binary_digits, task=binary_task), make_ctx(tmp_path))


def test_past_deadline_counts_the_next_steps_cost() -> None:
    assert not past_deadline(100.0, 101.0, 0.5)
    assert past_deadline(100.0, 101.0, 1.5)  # the step would end 0.5 s late: not started
    assert past_deadline(101.5, 101.0, 0.0)
    assert not past_deadline(100.0, 101.0, -3.0)  # a negative cost is no cost


def test_a_fit_past_its_deadline_takes_one_step_and_its_kept_logits_equal_a_fresh_pass(
    binary_digits, binary_task, tmp_path
) -> None:
    sess = _session(binary_digits, binary_task, tmp_path)
    hp = sess.base_hp.with_(epochs=2)
    net = sess.build(sess.ladder[0], 1)
    res = sess.engine.fit(net, sess.train, sess.val, hp, seed=1, deadline=time.time() - 1.0)
    assert res.stopped == "time_budget" and len(res.history) == 1
    assert res.steps_timed == 0  # its only step paid the one-time costs: it predicts nothing
    assert 0 < res.history[0]["epoch_fraction"] < 1
    # the logits returned are the scored epoch's, not a second pass; a fresh pass gives the same bits
    assert np.array_equal(res.val_logits, sess.engine.predict_logits(net, sess.val))
    net2 = sess.build(sess.ladder[0], 1)
    whole = sess.engine.fit(net2, sess.train, sess.val, hp, seed=1)
    assert whole.stopped == "completed" and len(whole.history) == 2
    steps = 2 * max(1, len(sess.train) // min(hp.batch_size, len(sess.train)))
    assert whole.steps_timed == steps - 1 and sess.engine.eval_row_seconds > 0
    assert np.array_equal(whole.val_logits, sess.engine.predict_logits(net2, sess.val))


def test_sanity_past_its_share_takes_one_step_records_what_it_was_given_and_says_why(
    binary_digits, binary_task, tmp_path
) -> None:
    from closedloop.stages.train.phases.sanity import BUILD_SECONDS, DRAW_SECONDS, GIVEN_SECONDS, sanity

    sess = _session(binary_digits, binary_task, tmp_path)
    sess.cfg = sess.cfg.model_copy(update={"sanity_steps": 50})
    sess.t0 = time.time() - sess.budget_s  # every share is spent: the check has no time of its own
    out = sanity(sess, sess.ladder[-1])
    assert out.cut_by_time and out.steps == 1  # one forward pass: no grace beyond its share
    t = sess.ctx.timings
    assert t[GIVEN_SECONDS] >= t[BUILD_SECONDS] >= 0 and t[DRAW_SECONDS] > 0
    said = [d["decision"] for d in sess.decisions if d["phase"] == "sanity"]
    assert any("less than its least cost measured now" in d for d in said)
    assert any("inconclusive" in d for d in said)


def test_sanity_with_time_to_spare_records_its_share_and_says_nothing_of_the_clock(
    binary_digits, binary_task, tmp_path
) -> None:
    from closedloop.stages.train.phases.sanity import GIVEN_SECONDS, sanity

    sess = _session(binary_digits, binary_task, tmp_path)
    sess.budget_s = 1e6  # a budget that never binds: the log is the same however the machine runs
    before = time.time()
    out = sanity(sess, sess.ladder[-1])
    assert not out.cut_by_time
    assert sess.ctx.timings[GIVEN_SECONDS] == pytest.approx(sess.deadline("sanity") - before, rel=1e-3)
    assert not any("least cost" in d["decision"] for d in sess.decisions)


def test_beat_baseline_keeps_its_measured_work_after_the_fit(binary_digits, binary_task, tmp_path) -> None:
    from closedloop.stages.train.phases.beat_baseline import after_fit_seconds
    from closedloop.stages.train.phases.sanity import DRAW_SECONDS

    sess = _session(binary_digits, binary_task, tmp_path)
    sess.ctx.timings[DRAW_SECONDS] = 0.25
    assert after_fit_seconds(sess, None) == pytest.approx(0.5)  # no baseline: the figure's two panels
    p = np.tile([[0.3, 0.7]], (len(sess.val), 1))
    assert after_fit_seconds(sess, p) > 0.5  # and the comparison, timed on a tenth of its resamples


def test_a_loop_starts_no_fit_that_its_measured_least_cost_would_end_late(
    binary_digits, binary_task, tmp_path
) -> None:
    from closedloop.stages.train.engine import FitResult
    from closedloop.stages.train.session import EVAL_ROW_SECONDS, LATEST_STEP_SECONDS

    sess = _session(binary_digits, binary_task, tmp_path)
    assert sess.least_fit_seconds() == 0.0  # nothing measured: the plain deadline
    one_step = FitResult(history=[], best_epoch=1, best_score=None, stopped="time_budget", seconds=9.0)
    one_step.step_seconds, one_step.steps_timed = 9.0, 0  # a first step only: not a measure
    sess.note_fit(one_step)
    assert LATEST_STEP_SECONDS not in sess.ctx.timings
    warm = FitResult(history=[], best_epoch=1, best_score=None, stopped="completed", seconds=9.0)
    warm.step_seconds, warm.steps_timed = 0.5, 12
    sess.engine.eval_row_seconds = 0.01
    sess.note_fit(warm)
    assert sess.ctx.timings[EVAL_ROW_SECONDS] == pytest.approx(0.01)
    assert sess.least_fit_seconds() == pytest.approx(0.5 + 0.01 * len(sess.val))


def test_a_schedule_warp_maps_every_step_to_itself_until_a_replan_then_ends_the_schedule_at_the_new_end() -> (
    None
):
    from closedloop.stages.train.engine import ScheduleWarp

    warp = ScheduleWarp(30)
    assert [warp(s) for s in range(31)] == list(range(31))  # unchanged: the same steps, bit for bit
    assert all(isinstance(warp(s), int) for s in range(31))
    warp.replan(10, 50)  # after 10 steps: the fit now ends at step 50, not 30
    assert warp(10) == 10 and warp(50) == pytest.approx(30)  # no jump; the schedule still ends
    assert [warp(s) for s in range(10)] == list(range(10))  # the steps before are what they were
    assert all(warp(s) < warp(s + 1) for s in range(10, 50))
    warp.replan(20, 25)  # shortened again after 20 steps
    assert warp(20) == pytest.approx(10 + 10 * 20 / 40) and warp(25) == pytest.approx(30)
    copy = ScheduleWarp(30)
    copy.load(warp.state())
    assert [copy(s) for s in range(26)] == [warp(s) for s in range(26)]
    assert warp.replans(5) == [(2, 10), (4, 5)]  # (after epoch, epochs planned) at 5 steps an epoch


def test_a_fit_that_replans_trains_the_epochs_it_asks_for_and_a_resume_walks_the_same_schedule(
    binary_digits, binary_task, tmp_path
) -> None:
    import torch

    sess = _session(binary_digits, binary_task, tmp_path)
    hp = sess.base_hp.with_(epochs=2, batch_size=30)  # 8 steps an epoch: its midpoint follows timed steps
    asked: list[tuple[float, float]] = []

    def replan(done: float, epoch_s: float) -> int:  # a fake clock: the plan depends on `done` alone
        asked.append((done, epoch_s))
        return 5 if done < 1.5 else 4

    ref = sess.build(sess.ladder[0], 1)
    res = sess.engine.fit(ref, sess.train, None, hp, seed=1, replan=replan, restore_best=False)
    # asked halfway through the first epoch (a first plan of 2 lengthened to 5 before its schedule
    # ends), then after each whole epoch with epochs after it
    assert [d for d, _ in asked] == [0.5, 1, 2, 3] and all(s > 0 for _, s in asked)
    assert len(res.history) == 4 and res.epochs_planned == 4 and res.replans == [(0.5, 5), (2.0, 4)]
    assert res.history[-1]["lr"] < 1e-3 * hp.lr  # the schedule ran to its end at the new last epoch
    # killed after epoch 2 (its checkpoint keeps the re-plans), resumed: the same weights, bit for bit
    ck = tmp_path / "fit.pt"

    class Killed(Exception):
        pass

    def kill(epoch: int, rec: dict) -> None:  # noqa: ARG001
        if epoch == 2:
            raise Killed

    net = sess.build(sess.ladder[0], 1)
    with pytest.raises(Killed):
        sess.engine.fit(net, sess.train, None, hp, seed=1, replan=replan, checkpoint=ck, on_epoch=kill)
    net = sess.build(sess.ladder[0], 1)
    again = sess.engine.fit(
        net, sess.train, None, hp, seed=1, replan=replan, checkpoint=ck, restore_best=False
    )
    assert again.epochs_planned == 4 and again.replans == [(0.5, 5), (2.0, 4)] and len(again.history) == 4
    for a, b in zip(ref.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a plan the replan never changes (a budget that does not bind) trains as a fit without one
    plain, same = sess.build(sess.ladder[0], 1), sess.build(sess.ladder[0], 1)
    sess.engine.fit(plain, sess.train, None, hp, seed=1)
    kept = sess.engine.fit(same, sess.train, None, hp, seed=1, replan=lambda done, s: hp.epochs)
    assert kept.replans == [] and kept.epochs_planned == hp.epochs
    for a, b in zip(plain.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_final_replanner_buys_what_the_time_left_allows_within_the_asked_epochs(
    binary_digits, binary_task, tmp_path
) -> None:
    from closedloop.stages.train.final_plan import FIT_EPOCH_SECONDS, FinalPlan, replanner

    sess = _session(binary_digits, binary_task, tmp_path)
    plan = FinalPlan(epochs=3, members=1, asked_epochs=20, asked_members=1, seconds_per_epoch=1.0)
    # deadlines far from now and epochs of 100 s: a test under load moves nothing by a whole epoch
    soon = replanner(sess, plan, time.time() + 1000.0, members=1)
    assert soon(1, 100.0) == 11  # 10 more epochs of 100 s in 1000 s
    assert sess.ctx.timings[FIT_EPOCH_SECONDS] == 100.0
    assert soon(1, 10.0) == 20  # never more than asked
    late = replanner(sess, plan, time.time() - 1.0, members=1)
    assert late(4, 100.0) == 4  # past the deadline: no more (the engine keeps one, which the deadline cuts)
    assert late(0.5, 100.0) == 1  # halfway through a first epoch: the schedule ends with this epoch
    shared = replanner(sess, plan, time.time() + 1100.0, members=2)
    assert shared(1, 100.0) == 6  # two members share it: 5 more epochs for the first, 6 for the second


def _ladder(sess, best_epoch: int = 2, score: float | None = None) -> None:  # noqa: ANN001
    from closedloop.stages.train.outcomes import Rung, ScaleUpOutcome

    rung = Rung(
        rung=1,
        params={"width": 4, "depth": 1},
        n_parameters=1,
        val_metric=score,
        score=score,
        best_epoch=best_epoch,
        overfits=False,
        val_loss_min_epoch=None,
    )
    sess.outcomes["scale_up"] = ScaleUpOutcome(rungs=[rung], chosen=0, params=rung.params, any_overfits=False)


def test_tuning_borrows_what_the_final_fit_will_not_need_and_no_more(
    binary_digits, binary_task, tmp_path
) -> None:
    from closedloop.stages.train.final_plan import LEND_MARGIN, final_need, final_rows, tune_deadline
    from closedloop.stages.train.session import LATEST_STEP_SECONDS

    sess = _session(binary_digits, binary_task, tmp_path)
    assert list(sess.budget)[-3:] == ["tune", "cross_validate", "final"]  # a hold-out task: no folds
    sess.budget_s = 1000.0
    own = sess.deadline("tune")
    assert final_need(sess, 5) is None and tune_deadline(sess, 5) == own  # nothing measured: no lend
    sess.ctx.timings[LATEST_STEP_SECONDS] = 0.01
    steps = final_rows(sess) // sess.base_hp.batch_size
    assert final_rows(sess) > len(sess.train)  # train + the validation rows not held out
    assert final_need(sess, 5) == pytest.approx(0.01 * steps * 5 * sess.cfg.final_seeds)
    lent = sess.deadline("final") - sess.reserve() - LEND_MARGIN * final_need(sess, 5)
    assert tune_deadline(sess, 5) == pytest.approx(lent) and lent > own
    assert tune_deadline(sess, 10) < tune_deadline(sess, 5)  # more final epochs: less lent
    sess.ctx.timings[LATEST_STEP_SECONDS] = 100.0  # the final fit needs more than its share: no lend
    assert tune_deadline(sess, 5) == own
    sess.ctx.timings[LATEST_STEP_SECONDS] = 0.01
    sess.cfg = sess.cfg.model_copy(update={"final": sess.cfg.final.model_copy(update={"nproc": 2})})
    assert tune_deadline(sess, 5) == own  # a data-parallel final fit's step is not measured here
    sess.cfg = sess.cfg.model_copy(update={"final": sess.cfg.final.model_copy(update={"nproc": 1})})
    assert tune_deadline(sess, 5) > own
    kfold = sess.task.validation.model_copy(update={"protocol": "kfold"})
    sess.task = sess.task.model_copy(update={"validation": kfold})
    sess.cfg = sess.cfg.model_copy(update={"cv_candidates": 2})
    assert tune_deadline(sess, 5) == own  # the cross-validation trains after tuning, on its deadline


def test_the_final_epochs_tuning_reserves_for_are_the_best_trials_or_the_kept_rungs(
    binary_digits, binary_task, tmp_path
) -> None:
    import optuna

    from closedloop.stages.train.phases.tune import _final_epochs

    sess = _session(binary_digits, binary_task, tmp_path)
    _ladder(sess, best_epoch=3, score=0.8)
    study = optuna.create_study(direction="maximize")
    ladder = sess.outcomes["scale_up"]
    assert _final_epochs(study, ladder) == 3  # no trial yet: the rung's
    for value, epoch in ((0.7, 9), (0.9, 5), (0.85, 12)):
        t = study.ask()
        t.set_user_attr("best_epoch", epoch)
        study.tell(t, value)
    assert _final_epochs(study, ladder) == 5  # the best trial's best epoch
    _ladder(sess, best_epoch=3, score=0.95)
    assert _final_epochs(study, sess.outcomes["scale_up"]) == 3  # the rung beats every trial: kept


def test_a_tune_phase_past_its_own_deadline_runs_its_trials_on_the_final_share_and_says_so(
    binary_digits, binary_task, tmp_path
) -> None:
    from closedloop.stages.train.final_plan import LENT_SECONDS
    from closedloop.stages.train.phases.tune import tune
    from closedloop.stages.train.session import LATEST_STEP_SECONDS

    def run(step_s: float, where: str):  # noqa: ANN202
        sess = _session(binary_digits, binary_task, tmp_path / where)
        _ladder(sess)
        sess.budget_s = 1000.0
        sess.t0 = time.time() - 850.0  # tune's own deadline passed 50 s ago; the final's is 150 s away
        sess.ctx.timings[LATEST_STEP_SECONDS] = step_s
        out = tune(sess, {"width": 4, "depth": 1}, None)
        return sess, out, [d["decision"] for d in sess.decisions]

    # the measured step says the final fit needs little of its share: both trials run, whole
    sess, out, said = run(0.001, "lent")
    assert out.n_trials == 2 and not [d for d in said if "cut short" in d], said
    lent = [d for d in said if d.startswith("tuning ran ") and "final phase's share" in d]
    assert len(lent) == 1 and "s are left for them" in lent[0], said  # the step did not rise since
    assert sess.ctx.timings[LENT_SECONDS] > 40.0
    # a final fit that needs all of its share lends nothing: one trial, cut at its first step
    sess, out, said = run(100.0, "own")
    assert out.n_trials == 1 and any("trial 0 cut short" in d for d in said), said
    assert LENT_SECONDS not in sess.ctx.timings
