"""The common shape of a training phase: a name, a share of the time budget, ``run(session)`` returning
a typed outcome, and the blocks it adds to the report. The driver (:mod:`..driver`) owns the order,
the caching in ``work/`` and resume."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from closedloop.stages.train.outcomes import Outcome
from closedloop.stages.train.session import TrainSession


class Phase(ABC):
    """One phase of overfit-then-regularize training. Subclass, set the class attributes, implement
    :meth:`run`; add it to the stage's ``phases`` (adding a phase = one module)."""

    name: ClassVar[str]
    """Key of its decisions, figures, cached outcome (``work/phase_<name>.json``) and budget share."""
    budget_share: ClassVar[float]
    """Share of ``budget_minutes`` that ends at this phase (0: shares the previous phase's deadline)."""
    outcome: ClassVar[type[Outcome]]
    section: ClassVar[str | None] = None
    """Report section its blocks go into (default: its own name)."""
    cached: ClassVar[bool] = True
    """Saved after it finishes, so a resumed run skips it."""

    def enabled(self, sess: TrainSession) -> bool:
        """Whether it runs in this session (e.g. the LR range test only when asked for)."""
        return True

    def resume(self, sess: TrainSession, outcome: Outcome) -> None:
        """Re-apply what :meth:`run` changed in the session besides its outcome (resumed runs)."""
        return None

    @abstractmethod
    def run(self, sess: TrainSession) -> Outcome:
        """Do the phase's work: log decisions with evidence, write figures, return the outcome."""

    def report(self, outcome: Any, timings: dict[str, float]) -> list[Any]:
        """Report blocks beyond its decisions and figures (``outcome`` as saved, a dict)."""
        return []
