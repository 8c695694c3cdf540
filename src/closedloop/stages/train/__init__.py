"""The ``train`` stage (overfit-then-regularize) and its engine."""

from closedloop.stages.train.stage import EvaluationReport, TrainConfig, TrainModel

__all__ = ["EvaluationReport", "TrainConfig", "TrainModel"]
