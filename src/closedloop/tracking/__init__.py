"""Experiment tracking: a :class:`Tracker` interface (no-op default), an MLflow backend, and the
champion/challenger alias moves. Nothing here imports a tracking library until a run uses it."""

from closedloop.tracking.aliases import AliasMove, apply_promotion, move_alias
from closedloop.tracking.base import TRACKERS, Tracker, register_tracker
from closedloop.tracking.run import TrackingStatus, track_run

__all__ = [
    "TRACKERS",
    "AliasMove",
    "Tracker",
    "TrackingStatus",
    "apply_promotion",
    "move_alias",
    "register_tracker",
    "track_run",
]
