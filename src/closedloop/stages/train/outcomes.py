"""What each phase hands to the next (typed): the phases talk through these, not dict keys or file names.

The records live below the stages (:mod:`closedloop.artifacts.training`) so that everything reading a
finished run gets them back typed; they are named here too, where the phases have always found them.
"""

from __future__ import annotations

from closedloop.artifacts.training import (
    BaselineOutcome,
    CrossValidateOutcome,
    CVRow,
    FinalFit,
    FinalOutcome,
    KnobGain,
    LrFinderOutcome,
    Outcome,
    Rung,
    SanityOutcome,
    ScaleUpOutcome,
    Skipped,
    TrialRow,
    TunedConfig,
    TuneOutcome,
)

__all__ = [
    "BaselineOutcome",
    "CVRow",
    "CrossValidateOutcome",
    "FinalFit",
    "FinalOutcome",
    "KnobGain",
    "LrFinderOutcome",
    "Outcome",
    "Rung",
    "SanityOutcome",
    "ScaleUpOutcome",
    "Skipped",
    "TrialRow",
    "TuneOutcome",
    "TunedConfig",
]
