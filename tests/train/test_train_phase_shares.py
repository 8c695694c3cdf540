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
