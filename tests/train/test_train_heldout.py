"""The held-out calibration split: never in the final fit, labelled in the summary, small-validation and k-fold cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from closedloop.core.errors import ConfigError
from closedloop.stages.train import TrainModel
from closedloop.stages.train import engine as E
from closedloop.stages.train.heldout import HeldOut, heldout_split, plan_heldout
from common_data import binary_holdout_plan

from .conftest import TINY, digits_bundle, make_ctx


def _spy_final_fits(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record the training data of every final-fit call (checkpoint final_seed*.pt)."""
    seen: list = []
    orig = E.Engine.fit

    def spy(self, net, train, val, hp, **kw):  # type: ignore[no-untyped-def]
        if "final_seed" in str(kw.get("checkpoint", "")):
            seen.append((train, val))
        return orig(self, net, train, val, hp, **kw)

    monkeypatch.setattr(E.Engine, "fit", spy)
    return seen


def _nchw_rows(X: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(X, (0, 3, 1, 2))).reshape(len(X), -1)


def test_plan_reserves_a_stratified_share_and_says_so() -> None:
    y = np.array([0] * 60 + [1] * 40)
    X = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
    plan = plan_heldout(
        X, y, problem_type="binary", final_fit="train+val", fraction=0.5, min_size=30, n_train=500, seed=0
    )
    assert plan.evaluated_on == "calibration" and len(plan.indices) == 50
    assert y[plan.indices].sum() == 20  # the class mix of validation
    assert "50 of 100 validation samples" in plan.note
    raised = plan_heldout(
        X, y, problem_type="binary", final_fit="train+val", fraction=0.2, min_size=30, n_train=500, seed=0
    )
    assert len(raised.indices) == 30
    assert "would reserve 20 (< min_holdout=30); reserved 30 instead" in raised.note


def test_small_validation_is_held_out_whole_with_a_message_naming_the_sizes() -> None:
    y = np.array([0, 1] * 10)
    X = np.zeros((20, 2, 2, 1), np.uint8)
    plan = plan_heldout(
        X, y, problem_type="binary", final_fit="train+val", fraction=0.5, min_size=30, n_train=240, seed=0
    )
    assert plan.evaluated_on == "validation" and len(plan.indices) == 20
    assert (
        "the validation split has 20 samples, not more than min_holdout=30" in plan.note
        and "reserving 0.5 of it (10)" in plan.note
        and "the final fit uses train only (240 samples) instead of train+val" in plan.note
    )


def test_final_fit_never_trains_on_the_heldout_rows(
    binary_digits, binary_task, tmp_path, monkeypatch
) -> None:
    seen = _spy_final_fits(monkeypatch)
    stage = TrainModel(**TINY)
    out = stage.execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path))
    plan = out.model.heldout  # the typed record the model carries (closedloop.artifacts.heldout)
    assert isinstance(plan, HeldOut) and plan == HeldOut.model_validate(out.model.info["heldout"])
    n_tr, n_val = len(binary_digits.train), len(binary_digits.val)
    assert plan.evaluated_on == "calibration" and len(plan.indices) == 40 and plan.n_val == n_val
    assert seen and all(val is None for _, val in seen)
    fit = seen[0][0]
    kept = np.setdiff1d(np.arange(n_val), plan.indices)
    # exactly train + the validation rows not held out: a held-out row in the fit changes the size or content
    assert len(fit) == n_tr + len(kept)
    got = fit.x.numpy().reshape(len(fit), -1)
    np.testing.assert_array_equal(got[n_tr:], _nchw_rows(binary_digits.val.X[kept]))
    held = {r.tobytes() for r in _nchw_rows(binary_digits.val.X[plan.indices])}
    assert not held & {r.tobytes() for r in got[n_tr:]}

    s = stage.summarize(out)
    assert s["evaluated_on"] == {
        "temperature": "calibration",
        "threshold": "calibration",
        "val": "validation_pre_refit",
        "heldout": "calibration",
        "test": "test",
    }
    assert set(s["heldout"]) == set(s["test"]) and "40 of 80 validation samples" in s["heldout_note"]
    assert out.model.info["calibrated_on"] == "calibration"
    assert "validation" not in {v for k, v in s["evaluated_on"].items() if k != "val"}
    from closedloop.report.html import render_blocks

    html = render_blocks(stage.report(out, tmp_path), tmp_path)
    assert "evaluated_on: which data each figure was computed on" in html
    assert "held-out calibration split (deployed model, never trained on)" in html


def test_kfold_reuses_out_of_fold_predictions_and_small_validation_falls_back(
    binary_task, tmp_path, monkeypatch
) -> None:
    data = digits_bundle((3, 8), n_per_split=(240, 24, 80))
    task = binary_task.model_copy(
        update={"validation": binary_task.validation.model_copy(update={"folds": 3, "repeats": 1})}
    )
    assert task.validation.protocol == "repeated_kfold"
    seen = _spy_final_fits(monkeypatch)
    stage = TrainModel(**{**TINY, "cv_candidates": 1})
    out = stage.execute({"data": data, "task": task}, make_ctx(tmp_path))
    assert len(seen[0][0]) == 240  # validation (24 <= min_holdout 30) stays out whole
    s = stage.summarize(out)
    assert s["evaluated_on"]["temperature"] == "out_of_fold" and s["evaluated_on"]["heldout"] == "validation"
    decisions = " ".join(d["decision"] for d in out.evaluation.decisions)
    assert "the validation split has 24 samples" in decisions and "train only (240 samples)" in decisions
    assert "out-of-fold predictions of the k-fold cross-validation, 264 samples" in decisions


def test_later_stages_get_the_heldout_rows_or_a_clear_error(binary_digits) -> None:
    val = binary_digits.val
    plan = binary_holdout_plan(val.X, val.y, fraction=0.5, min_size=10, seed=3)
    model = SimpleNamespace(info={"heldout": plan.model_dump()})
    split, on, _ = heldout_split(model, binary_digits, "export")
    assert on == "calibration" and len(split) == len(plan.indices)
    np.testing.assert_array_equal(split.X, val.X[plan.indices])
    other = digits_bundle((3, 8), seed=1)
    with pytest.raises(ConfigError, match=r"stage 'monitor': the validation rows the model held out"):
        heldout_split(model, other, "monitor")
    assert (
        heldout_split(SimpleNamespace(info={"trained_on": "train+val"}), binary_digits, "x")[1]
        == "trained_on"
    )
