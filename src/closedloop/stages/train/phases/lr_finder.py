"""Optional phase: an LR range test before tuning; the search is centred on its suggestion."""

from __future__ import annotations

from closedloop.stages.train import plots
from closedloop.stages.train.outcomes import LrFinderOutcome, ScaleUpOutcome
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.session import TrainSession


class LrFinder(Phase):
    name = "lr_finder"
    budget_share = 0.0  # cheap: runs inside the scale-up phase's deadline
    outcome = LrFinderOutcome

    def enabled(self, sess: TrainSession) -> bool:
        return sess.cfg.lr_finder

    def resume(self, sess: TrainSession, outcome: LrFinderOutcome) -> None:  # type: ignore[override]
        sess.base_hp = sess.base_hp.with_(lr=outcome.lr)

    def run(self, sess: TrainSession) -> LrFinderOutcome:
        ladder = sess.get(ScaleUpOutcome)
        params = ladder.params if ladder is not None else sess.ladder[0]
        seed = sess.seed("lr_finder")
        net = sess.build(params, seed)
        lrs, losses, lr = sess.engine.lr_range_test(net, sess.train, sess.base_hp, seed=seed)
        plots.lr_finder(sess.figure("lr_finder.png", "LR range test", "lr_finder"), lrs, losses, lr)
        sess.base_hp = sess.base_hp.with_(lr=lr)
        sess.decide(
            "lr_finder",
            f"LR range test suggests {lr:.3g} (a decade below the loss minimum); the search is centred on it",
            {"lr": lr},
        )
        return LrFinderOutcome(lr=lr)
