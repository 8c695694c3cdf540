"""The train stage's evaluation report: what it found, phase by phase, and the one test opening.

Written by the train stage (:mod:`closedloop.stages.train.stage`); read back by the report, compare
and the tracker as this type (``RunDir(path).artifact(EvaluationReport)``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from closedloop.artifacts.figures import Figure
from closedloop.artifacts.gate import GateResult
from closedloop.artifacts.selection import SelectionBias
from closedloop.artifacts.training import FamilyChoice, ImportanceReport, LabelIssueList, Outcome
from closedloop.core.artifacts import JsonArtifact
from closedloop.core.errors import RunDirError

OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class ChosenModel(BaseModel):
    """The configuration the deployed model was fitted with."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    family: str
    model_params: dict[str, Any]
    hparams: dict[str, Any]
    epochs: int
    n_parameters: int
    temperature: float
    threshold: float | None
    knobs: dict[str, Any]


class CurvePoint(BaseModel):
    """One point of a training curve (``artifact.json: curves.<curve>[i]``): the epoch it was
    measured at (absent in a curve without epochs) and the quantities the curve tracks (the other
    keys, each curve its own: ``train_loss``, ``val_auc``, ...)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    epoch: Any = None

    @property
    def quantities(self) -> dict[str, Any]:
        """Every other value of the point (the ``step`` key of older curves left out), as written."""
        return {k: v for k, v in (self.model_extra or {}).items() if k != "step"}


class EvaluationReport(JsonArtifact):
    """What the training stage found, phase by phase. Layout: ``artifact.json``. No wall times (those
    are in the stage's timings), so the artifact is deterministic."""

    phases: dict[str, Any]
    """Each phase's outcome (:mod:`closedloop.artifacts.training`), as JSON, by phase name (a subclass
    of the stage may add its own phases); read one back typed with :meth:`outcome`."""
    curves: dict[str, list[dict[str, Any]]]
    """Curve name -> its points as written (read typed with :meth:`curve_points`)."""
    decisions: list[dict[str, Any]]
    val: dict[str, Figure]
    test: dict[str, Figure]
    beats_baseline: GateResult | None
    n_configs: int
    chosen: ChosenModel
    figures: list[dict[str, str]]
    primary_metric: str
    baseline_name: str | None = None
    heldout: dict[str, Figure] | None = None
    """The deployed model's metrics (with 95% CIs) on the samples it did not train on (``calibration``)."""
    evaluated_on: dict[str, str] = Field(default_factory=dict)
    """Which data each figure was computed on: ``test``, ``val``, ``heldout``, ``temperature``, ``threshold``."""
    heldout_note: str | None = None
    """How the held-out split was made (and any fallback for a small validation split)."""
    selection: SelectionBias | None = None
    """The winner's validation score and the search's optimism (evaluated_on validation)."""
    label_review: LabelIssueList | None = None
    """Suspected label errors ranked again by the trained configuration's predictions (top 50; the
    full list is in ``label_review/``); None for tasks or runs without such predictions."""
    feature_importance: ImportanceReport | None = None
    """Tree models: gain (trained-on rows) and permutation importance (held-out rows, 95% CIs);
    None for networks (:mod:`closedloop.stages.train.importance`)."""
    families: FamilyChoice | None = None
    """A family list: each family's candidate, which won on validation and by how much; None for one
    family (:mod:`closedloop.stages.train.families`)."""

    def curve_points(self) -> dict[str, list[CurvePoint]]:
        """Each curve's points as typed records."""
        return {name: [CurvePoint.model_validate(row) for row in rows] for name, rows in self.curves.items()}

    def outcome(self, kind: type[OutcomeT]) -> OutcomeT | None:
        """The recorded outcome of the phase that returns ``kind`` (None when that phase did not run)."""
        raw = self.phases.get(kind.phase)
        if raw is None:
            return None
        try:
            return kind.model_validate(raw)
        except ValidationError as exc:  # an older layout of that phase's record: say so, once
            raise RunDirError(
                f"the evaluation report's phases.{kind.phase} is not a {kind.__name__} of this version "
                f"({exc.error_count()} field(s) differ, e.g. {exc.errors()[0]['loc']}); re-run the train "
                "stage with this version (or use the closedloop version that wrote it)"
            ) from None
