"""Champion / challenger aliases in the tracker's model registry, moved only by a promotion decision.

``closedloop retrain`` and ``closedloop compare-live`` call :func:`apply_promotion` with their rule's
verdict: on *promote* the ``champion`` alias moves to the challenger's version (and ``challenger`` is
cleared); otherwise ``champion`` stays where it is and ``challenger`` marks the contender.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import ConfigError
from closedloop.tracking.config import TrackingSpec

CHAMPION = "champion"
CHALLENGER = "challenger"


class AliasMove(BaseModel):
    """One alias change (or why none happened)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    alias: str
    version: str | None = None
    previous: str | None = None
    moved: bool = False
    reason: str = ""
    error: str | None = None


def tracking_of(run_dir: str | Path) -> TrackingSpec | None:
    """The ``tracking`` section of a run's resolved ``config.yaml`` (``None`` when it has none)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; it is not a closedloop run directory")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    t = raw.get("tracking")
    return TrackingSpec.model_validate(t) if t else None


def _model_name(spec: TrackingSpec, run_dir: Path) -> str:
    if spec.registered_model:
        return spec.registered_model
    raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    return str(raw.get("name") or run_dir.parent.name)


def move_alias(
    spec: TrackingSpec,
    alias: str,
    run_dir: str | Path,
    *,
    model: str | None = None,
    reason: str = "",
) -> AliasMove:
    """Point ``alias`` at the model version registered from ``run_dir``. Never raises: a tracking
    failure is returned in ``AliasMove.error`` (the decision itself stands and is recorded locally)."""
    from closedloop.tracking.run import make_tracker

    run_dir = Path(run_dir)
    name = model or _model_name(spec, run_dir)
    out = AliasMove(model=name, alias=alias, reason=reason)
    try:
        tracker = make_tracker(spec)
        version = tracker.find_version(name, str(run_dir.resolve()))
        if version is None:
            out.error = f"no version of model {name!r} was registered from {run_dir}"
            return out
        out.previous = tracker.get_alias(name, alias)
        out.version = version
        if out.previous != version:
            tracker.set_alias(name, alias, version)
            out.moved = True
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:1000]
    return out


def clear_alias(spec: TrackingSpec, alias: str, model: str, *, reason: str = "") -> AliasMove:
    """Remove ``alias`` from ``model`` (never raises; see :func:`move_alias`)."""
    from closedloop.tracking.run import make_tracker

    out = AliasMove(model=model, alias=alias, reason=reason)
    try:
        tracker = make_tracker(spec)
        out.previous = tracker.get_alias(model, alias)
        if out.previous is not None:
            tracker.delete_alias(model, alias)
            out.moved = True
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:1000]
    return out


def apply_promotion(
    challenger_run: str | Path,
    promote: bool,
    *,
    reasons: list[str] | None = None,
    spec: TrackingSpec | None = None,
) -> list[dict[str, Any]]:
    """Move the aliases as the promotion rule decided; ``[]`` when the run has no tracking configured."""
    spec = spec or tracking_of(challenger_run)
    if spec is None or spec.backend == "none":
        return []
    why = "; ".join(reasons or [])
    if promote:
        moves = [move_alias(spec, CHAMPION, challenger_run, reason=why or "promoted")]
        if moves[0].error is None:
            moves.append(clear_alias(spec, CHALLENGER, moves[0].model, reason="promoted to champion"))
    else:
        moves = [move_alias(spec, CHALLENGER, challenger_run, reason=why or "not promoted")]
    return [m.model_dump() for m in moves]
