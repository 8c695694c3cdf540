"""``closedloop monitor RUN_DIR LOG_DIR``: the full drift check over a server's request log.

Offline, with the run's torch model: every test of the profile runs (the embedding test too, which
the live monitor inside the server skips), on consecutive windows of the logged champion inputs in
time order. Realized metrics come from the feedback labels and the probabilities the service
*returned* (logged), so they measure the served variant (e.g. int8), not a recomputation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.errors import DataError
from closedloop.monitoring.estimate import realized
from closedloop.monitoring.logreader import RouteRows, read_log
from closedloop.monitoring.monitor import Monitor
from closedloop.monitoring.spotcheck import recorded_picks

DEFAULT_WINDOW = 200


def label_indices(
    feedback: np.ndarray, names: list[str], problem: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Feedback labels (class names) -> (rows with a usable label, their labels, unknown names)."""
    index = {n: i for i, n in enumerate(names)}
    rows, ys, unknown = [], [], set()
    for r, lab in enumerate(feedback):
        if lab is None:
            continue
        try:
            if problem == "multilabel":
                y = np.zeros(len(names), np.int64)
                y[[index[x] for x in ([lab] if isinstance(lab, str) else lab)]] = 1
            else:
                y = index[lab]
        except (KeyError, TypeError):
            unknown.add(str(lab))
            continue
        rows.append(r)
        ys.append(y)
    return np.asarray(rows, dtype=np.int64), np.asarray(ys), sorted(unknown)


def _select_version(rows: RouteRows, run_dir: Path | None, notes: list[str]) -> RouteRows:
    """Keep the rows the run's model answered (the server logs the run directory's name as version)."""
    if run_dir is None or not len(rows):
        return rows
    mine = rows.model_version == run_dir.name
    if mine.all():
        return rows
    if not mine.any():
        notes.append(
            f"no record's model_version equals the run's name {run_dir.name!r}; monitoring all champion rows "
            f"(versions {sorted(set(rows.model_version.tolist()))[:5]})"
        )
        return rows
    notes.append(f"{int((~mine).sum())} row(s) of other model versions left out")
    return rows.take(np.flatnonzero(mine))


def champion_rows(log_dir: str | Path, run_dir: str | Path | None = None) -> tuple[RouteRows, list[str]]:
    """The logged champion rows of the run's model version (all rows when the log names none), and notes."""
    log = read_log(log_dir)
    notes = list(log.warnings)
    run = Path(run_dir) if run_dir is not None and (Path(run_dir) / "stages").is_dir() else None
    return _select_version(log.champion, run, notes), notes


def random_rows(rows: RouteRows, run_dir: str | Path | None) -> np.ndarray:
    """(R,) bool: the row's label may enter realized metrics (its feedback is marked random, or a
    recorded spot check of ``run_dir`` picked it)."""
    marked = rows.feedback_random if rows.feedback_random is not None else np.zeros(len(rows), dtype=bool)
    picks = recorded_picks(Path(run_dir) if run_dir is not None else None)
    if picks:
        picked = np.array(
            [(str(r), int(i)) in picks for r, i in zip(rows.request_id, rows.index, strict=True)], dtype=bool
        )
        marked = marked | picked
    return marked


def monitor_log(
    monitor: Monitor,
    log_dir: str | Path,
    *,
    run_dir: str | Path | None = None,
    window: int | None = None,
    review: int = 0,
    review_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Windows over the logged champion traffic (what ``closedloop monitor --out`` writes for a log).

    ``run_dir``: the champion's run directory; rows logged by other model versions are left out.
    """
    log = read_log(log_dir)
    info = monitor.profile.info
    notes = list(log.warnings)
    run_dir = Path(run_dir) if run_dir is not None and (Path(run_dir) / "stages").is_dir() else None
    rows = _select_version(log.champion, run_dir, notes)
    if not len(rows):
        raise DataError(f"{log_dir}: the log holds no successful champion request to monitor")
    if rows.inputs is None:
        raise DataError(
            f"{log_dir}: the log holds no inputs (the server ran with input reduction 'none'); the offline "
            "drift tests need them. The live monitor (GET /monitor) still runs the model-output tests."
        )
    if not rows.has_input.all():
        notes.append(f"{int((~rows.has_input).sum())} row(s) logged without inputs left out")
        rows = rows.take(np.flatnonzero(rows.has_input))
    since = info.source.get("verified_through")
    if since:  # a reference set from a verified period: monitor (and stream) what came after it
        after = rows.time > np.datetime64(str(since).removesuffix("Z"))
        notes.append(f"{int((~after).sum())} row(s) up to the reference's verified period ({since}) left out")
        rows = rows.take(np.flatnonzero(after))
        if not len(rows):
            raise DataError(f"{log_dir}: no champion row after the reference's verified period ({since}) yet")
    window = window or min(DEFAULT_WINDOW, len(rows))
    result = monitor.check_stream(rows.inputs, window=window)
    labeled, y, unknown = label_indices(rows.feedback, info.label_names, info.problem_type)
    if unknown:
        notes.append(
            f"feedback label(s) {unknown[:5]} are not classes of the model {info.label_names}; ignored"
        )
    # realized metrics from randomly chosen rows only: feedback marked random, or rows a recorded spot
    # check picked; labels chosen by uncertainty or drift (the review queue) are a biased sample
    is_random = random_rows(rows, run_dir)[labeled]
    if len(labeled) and not is_random.all():
        notes.append(
            f"{int((~is_random).sum())} feedback label(s) not marked random (not a spot check's pick, no "
            '"random": true) left out of realized metrics: labels chosen by uncertainty are biased'
        )
    windows = result.windows
    for w in windows:
        inside = (labeled >= w["start"]) & (labeled < w["end"])
        sel = inside & is_random
        w["time_start"] = str(rows.time[w["start"]]) + "Z"
        w["time_end"] = str(rows.time[w["end"] - 1]) + "Z"
        w["n_labeled"] = int(sel.sum())
        w["n_labeled_not_random"] = int((inside & ~is_random).sum())
        if sel.any():
            real = {}
            for m in info.metrics:
                try:  # AUC is undefined while one class only has come back
                    real.update(
                        realized([m], y[sel], rows.proba[labeled[sel]], info.problem_type, info.threshold)
                    )
                except ValueError:
                    continue
            w["realized"] = {k: v for k, v in real.items() if np.isfinite(v)}
            point = w["estimated"] or w["estimate_withheld"]
            w["estimate_gap"] = {m: point[m] - v for m, v in w["realized"].items() if m in point}
    out = result.to_dict()
    out["evaluated_on"] = (
        f"champion requests logged in {log_dir} ({windows[0]['time_start']} to {windows[-1]['time_end']}): "
        "production inputs the model never trained on; realized metrics from feedback labels on the "
        "logged (served) probabilities"
    )
    out["data"] = str(log_dir)
    out["log"] = {
        "files": log.files,
        "n_records": rows.n_records,
        "n_rows": len(rows),
        "n_labeled": int(is_random.sum()),
        "n_labeled_not_random": int((~is_random).sum()),
        "n_feedback_matched": log.n_feedback_matched,
        "n_canary_rows": len(log.canary),
        "n_shadow_rows": len(log.shadow),
        "n_errors": log.champion.n_errors,
        "model_versions": sorted(set(rows.model_version.tolist())),
        "warnings": notes,
    }
    if review:
        out["review_queue"] = export_review_queue(monitor, rows, labeled, review, review_dir)
    return out


def export_review_queue(
    monitor: Monitor, rows: RouteRows, labeled: np.ndarray, k: int, out_dir: str | Path | None
) -> dict[str, Any]:
    """The ``k`` unlabeled logged rows most worth labeling, exported with their request id and index
    (what ``POST /feedback`` takes) next to the usual ``queue.csv`` columns."""
    from closedloop.monitoring.flywheel import build_queue, export_queue

    assert rows.inputs is not None
    todo = np.setdiff1d(np.arange(len(rows)), labeled)
    if not len(todo):
        return {"n": 0, "dir": None, "note": "every logged row already has a feedback label"}
    prepared = monitor.prepare(rows.inputs[todo])
    win = monitor.sample(prepared)
    ids = todo[prepared.keep] if prepared.keep is not None else todo
    queue = build_queue(monitor.profile, win, ids, k=k)
    queue.insert(1, "request_id", rows.request_id[queue["id"].to_numpy()])
    queue.insert(2, "index", rows.index[queue["id"].to_numpy()])
    queue.insert(3, "time", [str(t) + "Z" for t in rows.time[queue["id"].to_numpy()]])
    if out_dir is not None:
        export_queue(queue, prepared.raw, ids, monitor.profile, Path(out_dir))
    return {"n": len(queue), "dir": str(out_dir) if out_dir is not None else None}
