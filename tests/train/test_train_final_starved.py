"""Bug fixed in session 15 (issue #25): a selection that ran past the whole time budget left the final
fit no time, and the stage shipped a network trained for one step without failing or saying so in
summary.json. The selection's overrun is simulated by moving the session's clock back when the final
phase starts (no timing in the test)."""

from __future__ import annotations

from typing import Any

import pytest

from closedloop.artifacts.training import FinalOutcome
from closedloop.stages.train import TrainModel
from closedloop.stages.train.phases import PHASES
from closedloop.stages.train.phases.final import Final

from .conftest import TINY, make_ctx


class LateFinal(Final):
    """The final phase of a run whose selection took twice the whole budget (a fake clock)."""

    def run(self, sess: Any) -> FinalOutcome:
        sess.t0 -= 2.0 * sess.budget_s
        return super().run(sess)


class LateTrain(TrainModel):
    phases = (*PHASES[:-1], LateFinal)


FAMILIES = {"family": ["lgbm", "mlp"], "ladder": {"lgbm": [{"num_leaves": 4}], "mlp": TINY["ladder"]}}


@pytest.mark.parametrize("cfg", [{"family": "mlp"}, FAMILIES], ids=["one_family", "family_list"])
def test_a_selection_past_the_budget_leaves_the_final_fit_its_share_and_says_so(
    binary_digits, binary_task, tmp_path, cfg
) -> None:
    stage = LateTrain(**{**TINY, **cfg})
    out = stage.execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path))
    s = stage.summarize(out)
    decisions = [d["decision"] for d in out.evaluation.decisions]
    # the final fit trained every epoch the chosen configuration was selected with, not one step
    fit = s["final_fit"]
    assert fit["epochs"] == fit["selected_epochs"] >= 1 and fit["epochs_trained"] is None
    assert not any("cut short by the time budget" in d for d in decisions if "member" in d)
    # and the overrun is said: summary.json (about 2 x the budget less the final share), the log
    budget_s = 60.0 * TINY["budget_minutes"]
    assert fit["deadline_extended_s"] == pytest.approx((2.0 + 1.0 - 1.0 + 0.2 - 1.0) * budget_s, rel=0.05)
    assert any("the final phase keeps its own share" in d for d in decisions)
    # the same model as a run with time to spare: the same test figures
    on_time = TrainModel(**{**TINY, **cfg})
    ref = on_time.summarize(
        on_time.execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path / "on_time"))
    )
    assert s["test"] == ref["test"] and ref["final_fit"]["deadline_extended_s"] is None


def test_a_final_fit_the_budget_still_cuts_is_flagged_in_summary_and_report(
    binary_digits, binary_task, tmp_path
) -> None:
    """A budget whose own final share buys less than the selected epochs (here: nothing left of
    it either) still ships, but never silently: summary.json, the log and the report say so."""

    class Starved(Final):
        def run(self, sess: Any) -> FinalOutcome:
            sess.t0 -= 2.0 * sess.budget_s
            sess.last_start = sess.t0  # the final phase's own share is spent as well
            return super().run(sess)

    class StarvedTrain(TrainModel):
        phases = (*PHASES[:-1], Starved)

    stage = StarvedTrain(**{**TINY, "family": "mlp"})
    ctx = make_ctx(tmp_path)
    out = stage.execute({"data": binary_digits, "task": binary_task}, ctx)
    fit = stage.summarize(out)["final_fit"]
    assert fit["epochs_trained"] is not None and fit["epochs_trained"] < fit["selected_epochs"]
    assert fit["deadline_extended_s"] is None
    warning = [d["decision"] for d in out.evaluation.decisions if d["decision"].startswith("WARNING")]
    assert len(warning) == 1 and f"of the {fit['selected_epochs']} epoch(s)" in warning[0]
    texts = [getattr(b, "text", "") for b in stage.report(out, tmp_path)]
    assert any("The time budget cut the final fit" in t for t in texts)
