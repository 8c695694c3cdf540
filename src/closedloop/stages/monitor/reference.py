"""``closedloop monitor RUN LOG --spot-check-labels FILE --set-reference``: a new reference from a
verified production period.

The rows of a spot check are drawn uniformly at random from production and labeled, so they are an
unbiased, labeled sample of the current traffic the deployed model never trained on: exactly what
the monitor stage builds a profile from. When the spot check agrees with the old reference (its
accuracy inside the spot check's interval), they become the held-out rows of a new profile, built by
the monitor stage's own code with the old profile's settings, written next to the run
(``RUN_DIR/references/<UTC time>/``), where the monitor, the live monitor and the stream test pick it up
(the stream restarts at the new reference). A period whose spot check disagrees is not verified and
never becomes a reference: that would bless a degraded model.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.errors import DataError
from closedloop.core.run_reader import RunDir
from closedloop.monitoring.logreader import RouteRows
from closedloop.monitoring.monitor import Monitor
from closedloop.monitoring.profile import table_from_inputs


def set_reference(
    monitor: Monitor,
    run_dir: Path,
    rows: RouteRows,
    pos: np.ndarray,
    y: np.ndarray,
    check: dict[str, Any],
    out_dir: Path | None = None,
    seed: int = 0,
) -> Path:
    """Build and save the new reference profile; returns its directory."""
    from closedloop.artifacts.heldout import INFO_KEY
    from closedloop.data.bundle import DatasetBundle, Split
    from closedloop.stages.monitor.stage import build_profile
    from closedloop.stages.task import TaskSpec

    info = monitor.profile.info
    if not check.get("agrees_with_reference", False):
        acc = check.get("metrics", {}).get("acc", {})
        raise DataError(
            f"--set-reference: the spot check does not verify this period: realized accuracy "
            f"{acc.get('value', float('nan')):.3f} (95% CI {_interval(acc.get('ci95'))}) on {check.get('n')} random "
            f"rows vs {check.get('reference_acc', float('nan')):.3f} at the reference. A new reference would bless a "
            "degraded model; retrain first (closedloop retrain)"
        )
    if rows.inputs is None or not rows.has_input[pos].all():
        raise DataError(
            "--set-reference: the log holds no inputs for "
            f"{int((~rows.has_input[pos]).sum()) if rows.inputs is not None else len(pos)} of the spot check's "
            "rows (the server ran with input reduction 'none'); a reference needs the rows themselves"
        )
    run = RunDir(run_dir)
    data_dirs = [p for p in run.artifact_dirs(DatasetBundle) if p.is_dir()]
    task_dirs = [p for p in run.artifact_dirs(TaskSpec) if (p / "artifact.json").is_file()]
    if not data_dirs or not task_dirs:
        raise DataError(
            f"{run_dir}: --set-reference needs the run's data and task artifacts (stages/*/artifacts/)"
        )
    data = DatasetBundle.load(data_dirs[-1])
    task = TaskSpec.load(task_dirs[-1])
    # images are logged as they are; tables as the model's float inputs (categoricals as codes)
    X = np.asarray(rows.inputs[pos]) if info.kind == "images" else table_from_inputs(info, rows.inputs[pos])
    bundle = dataclasses.replace(data, splits={**data.splits, "val": Split(X=X, y=y)})
    model = copy.copy(monitor.model)
    # the verified rows are the held-out split now: the model never trained on production
    model.info = {k: v for k, v in monitor.model.info.items() if k != INFO_KEY} | {"trained_on": "train"}
    cfg = profile_config(info)
    profile = build_profile(cfg, bundle, task, model, np.random.default_rng(seed))
    through = str(rows.time[pos].max()) + "Z"
    profile.info = profile.info.model_copy(
        update={
            "source": {
                **profile.info.source,
                "split": "production spot check",
                "evaluated_on": "production_spot_check",
                "verified_through": through,
                "spot_check": {k: v for k, v in check.items() if k != "rows"},
                "note": f"{len(pos)} production rows drawn at random and labeled; the spot check agreed "
                "with the previous reference",
            }
        }
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir else Path(run_dir) / "references" / stamp
    profile.save(out)
    return out


def profile_config(info: Any) -> Any:
    """The monitor stage's settings a profile was built with (its ``ProfileInfo``), to build another
    reference the same way (a verified period here; an adapted model's own reference in
    :mod:`closedloop.adapt.reference`)."""
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    return BuildMonitorProfileConfig(
        alpha=info.alpha,
        warn_alpha=info.warn_alpha,
        delta=info.delta,
        stream_alpha=info.stream_alpha,
        stream_delta=info.stream_delta,
        domain_alpha=info.domain_alpha,
        domain_delta=info.domain_delta,
        first_window_alpha=info.first_window_alpha,
        stream_evidence=info.stream_evidence,
        # profiles built before the budget keep their rule; the budget's own factor when they have one
        **(
            {}
            if info.stream_evidence_delta is None
            else {"stream_evidence_delta": info.stream_evidence_delta}
        ),
        stream_look_flag=info.stream_look_flag,
        low_positive_flag=info.low_positive_flag,
        stream_test=info.stream_test,
        stream_look=info.stream_look,
        stream_look_test=info.stream_look_test,
        stream_spending=info.stream_spending,
        min_ess_fraction=info.min_ess_fraction,
        tests=info.tests,
        window_sizes=sorted(int(k) for k in info.thresholds),
        permutations=info.permutations,
        calibration_windows=max(
            [
                int(v.get("windows", 0))
                for v in info.calibration.get("sizes", {}).values()
                if isinstance(v, dict)
            ]
            or [BuildMonitorProfileConfig().calibration_windows]
        ),
        pca_dims=max(info.pca_dims, 1),
        metrics=info.metrics,
        review=info.review,
        require_guarantee=info.delta is not None,
    )


def _interval(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"
