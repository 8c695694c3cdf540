"""The phases of overfit-then-regularize training, one module each, in running order (:data:`PHASES`).

sanity -> beat_baseline -> scale_up -> [lr_finder] -> tune (+ knob ablation) -> cross_validate -> final.
"""

from __future__ import annotations

from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.phases.beat_baseline import BeatBaseline
from closedloop.stages.train.phases.cross_validate import CrossValidate
from closedloop.stages.train.phases.final import Final
from closedloop.stages.train.phases.lr_finder import LrFinder
from closedloop.stages.train.phases.sanity import Sanity
from closedloop.stages.train.phases.scale_up import ScaleUp
from closedloop.stages.train.phases.tune import Tune

PHASES: tuple[type[Phase], ...] = (Sanity, BeatBaseline, ScaleUp, LrFinder, Tune, CrossValidate, Final)

__all__ = ["PHASES", "Phase"]
