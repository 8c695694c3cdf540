"""The adapted model's own monitor reference: after promotion, the monitor compares production with
what the *adapted* model does on held-out data, not with the champion's outputs.

The profile is built by the monitor stage's own code with the champion profile's settings, on the
held-out rows the champion's reference was built from (the run's data artifact; neither the champion
nor the adaptation ever trained on them: the challenger saw only production labels). It is written
to ``OUT/references/<UTC time>/``, where ``closedloop monitor OUT ...`` and the live monitor of
``closedloop serve OUT`` find it (:func:`closedloop.monitoring.monitor.find_profile_dir`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.errors import ClosedLoopError


def adapted_reference(run_dir: Path, adapted: Any, out_dir: Path, seed: int = 0) -> tuple[Path | None, str]:
    """(the new profile's directory, a sentence saying what it is) or (None, why there is none)."""
    from closedloop.artifacts.task import TaskSpec
    from closedloop.core.run_reader import RunDir
    from closedloop.data.bundle import DatasetBundle
    from closedloop.monitoring.monitor import find_profile_dir
    from closedloop.monitoring.profile import ReferenceProfile
    from closedloop.stages.monitor.reference import profile_config
    from closedloop.stages.monitor.stage import build_profile

    try:
        old = ReferenceProfile.load(find_profile_dir(run_dir))
    except (ClosedLoopError, OSError) as exc:
        return None, f"no monitor reference for the adapted model: the champion has none ({exc})"
    data_dirs = [p for p in RunDir(run_dir).artifact_dirs(DatasetBundle) if p.is_dir()]
    task_dirs = [p for p in RunDir(run_dir).artifact_dirs(TaskSpec) if (p / "artifact.json").is_file()]
    if not data_dirs or not task_dirs:
        return None, f"no monitor reference for the adapted model: {run_dir} has no data or task artifact"
    data = DatasetBundle.load(data_dirs[-1])
    task = TaskSpec.load(task_dirs[-1])
    profile = build_profile(profile_config(old.info), data, task, adapted, np.random.default_rng(seed))
    note = (
        "the adapted model's own reference: the champion reference's held-out rows and settings, scored by the "
        f"adapted model (adapted from {Path(run_dir).name})"
    )
    profile.info = profile.info.model_copy(
        update={"source": {**profile.info.source, "adapted_from": str(run_dir), "note": note}}
    )
    out = Path(out_dir) / "references" / dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    profile.save(out)
    return out, note
