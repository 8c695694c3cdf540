"""Send a finished pipeline run to the configured tracker; a tracking failure never loses the run.

Called once, by the pipeline, after every stage ran: the run's files are already complete on disk.
What is sent: the resolved config as parameters, each stage's headline figures (from the summary) and
the training curves (with epochs as steps) as metrics, the report, summary, config, model card and ONNX
files as artifacts, and the exported model as a new registered-model version.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from closedloop.artifacts.evaluation import EvaluationReport
from closedloop.artifacts.export import ExportBundle
from closedloop.artifacts.figures import WithInterval
from closedloop.artifacts.summary import RunSummary, TrackingStatus
from closedloop.core.run_reader import RunDir
from closedloop.tracking.base import TRACKERS, Tracker
from closedloop.tracking.config import TrackingSpec

if TYPE_CHECKING:
    from closedloop.tracking.worker import TrackerProcess

log = logging.getLogger("closedloop")

MODEL_FOLDER = "model"


def redact(uri: str | None) -> str | None:
    """The URI without a password (``http://user:***@host``)."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


class _Named(BaseModel):
    """An entry of a config list that names itself (a stage: ``{name: train, params: {...}}``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Any


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists of stages are keyed by their ``name``."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) and "name" in x for x in obj):
        for entry in (_Named.model_validate(x) for x in obj):
            out.update(flatten(dict(entry.model_extra or {}), f"{prefix}.{entry.name}"))
    else:
        out[prefix] = obj
    return out


def config_params(config: dict[str, Any]) -> dict[str, str]:
    """The resolved config as ``dotted.key -> text`` (``stages.train.params.max_epochs -> "6"``)."""
    return {k: ("" if v is None else str(v)) for k, v in flatten(config).items()}


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(float(v)):
        return float(v)
    return None


def headline_metrics(summary: RunSummary | dict[str, Any]) -> dict[str, float]:
    """Every finite number in each stage's summary (``train/test/auc``, ``train/test/auc/ci_low``, ...)."""
    summary = RunSummary.model_validate(summary)
    out: dict[str, float] = {"run/seconds": summary.seconds}

    def walk(obj: Any, key: str, depth: int) -> None:
        if depth > 5:
            return
        if isinstance(obj, dict):
            figure = WithInterval.read(obj)  # a value with its 95% interval: both bounds too
            bounds = figure.bounds if figure is not None else None
            if bounds is not None:
                for suffix, x in zip(("ci_low", "ci_high"), bounds, strict=True):
                    n = _number(x)
                    if n is not None:
                        out[f"{key}/{suffix}"] = n
            for k, v in obj.items():
                if k not in ("ci95", "seconds", "dir", "artifacts", "cached"):
                    walk(v, f"{key}/{k}", depth + 1)
            return
        n = _number(obj)
        if n is not None:
            out[key] = n

    for name, st in summary.stages.items():
        if st.status == "ok":  # the entry as written: the stage's own keys and its timings
            walk(st.model_dump(mode="json", exclude={"status"}, exclude_unset=True), name, 0)
            out[f"{name}/seconds"] = st.seconds
    return out


def training_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``curves/<curve>/<quantity>`` -> [(epoch, value), ...] from the training stage's evaluation."""
    out: dict[str, list[tuple[int, float]]] = {}
    for evaluation in RunDir(run_dir).artifacts(EvaluationReport):
        for curve, points in evaluation.curve_points().items():
            for i, point in enumerate(points):
                step = point.epoch if "epoch" in point.model_fields_set else i + 1
                for k, v in point.quantities.items():
                    n = _number(v)
                    if n is not None and not isinstance(v, bool):
                        out.setdefault(f"curves/{curve}/{k}", []).append((int(step), n))
    return out


def model_files(run_dir: Path) -> list[Path]:
    """The exported bundle's files (ONNX models, model card, predictor metadata)."""
    files: list[Path] = []
    for d in RunDir(run_dir).artifact_dirs(ExportBundle):
        if d.is_dir():
            files += sorted(p for p in d.iterdir() if p.is_file())
    return files


def prepare_tracking(spec: TrackingSpec | None) -> TrackerProcess | None:
    """Start loading the backend's library while the stages run: in a helper process for a backend
    marked ``out_of_process`` (returned; pass it to :func:`track_run`), else in a background thread."""
    if spec is None or spec.backend == "none":
        return None
    try:
        cls = TRACKERS.resolve(spec.backend)
        if cls.out_of_process:
            from closedloop.tracking.worker import TrackerProcess

            return TrackerProcess(spec)
    except Exception:  # the tracking call itself reports any problem
        return None
    import threading

    def load() -> None:
        with contextlib.suppress(Exception):
            cls.prepare()

    threading.Thread(target=load, name="closedloop-tracking-prepare", daemon=True).start()
    return None


def make_tracker(spec: TrackingSpec, process: TrackerProcess | None = None) -> Tracker:
    """The configured backend, or its stand-in talking to ``process`` when one was prepared."""
    if process is not None:
        from closedloop.tracking.worker import RemoteTracker

        return RemoteTracker(spec, process)
    cls = TRACKERS.resolve(spec.backend, where="tracking.backend")
    return cls(spec)


def describe_error(exc: BaseException) -> str:
    """``"ErrorClass: message"``, with the class name from the helper process when it came from there."""
    return f"{getattr(exc, 'kind', type(exc).__name__)}: {exc}".strip()


@dataclass
class TrackingSession:
    """A run logged to the tracker, waiting for its summary and report to be uploaded."""

    spec: TrackingSpec
    run_dir: Path
    status: TrackingStatus
    tracker: Tracker | None
    process: TrackerProcess | None


def track_run(
    spec: TrackingSpec | None,
    run_dir: Path,
    summary: dict[str, Any],
    config: dict[str, Any],
    write: Callable[[dict[str, Any]], None],
    process: TrackerProcess | None = None,
) -> None:
    """Log the run, put the outcome in ``summary["tracking"]``, call ``write(summary)`` (summary.json
    and report.html), then upload the report. Without a backend this is just ``write(summary)``.
    ``process`` (from :func:`prepare_tracking`) is used for the calls, then closed. The pipeline does
    the same through :class:`closedloop.tracking.callback.TrackRun`."""
    session = log_tracking(spec, Path(run_dir), summary, config, process)
    write(summary)
    if session is not None and finish_tracking(session, summary):
        write(summary)


def log_tracking(
    spec: TrackingSpec | None,
    run_dir: Path,
    summary: dict[str, Any],
    config: dict[str, Any],
    process: TrackerProcess | None = None,
) -> TrackingSession | None:
    """Log the finished run (params, metrics, curves, model files) and put the outcome in
    ``summary["tracking"]``; None without a backend. Pass the session to :func:`finish_tracking`
    once summary.json and report.html are written."""
    if spec is None or spec.backend == "none":
        return None
    t0 = time.perf_counter()
    status = TrackingStatus(backend=spec.backend, uri=redact(spec.uri))
    tracker: Tracker | None = None
    record = RunSummary.model_validate(summary)
    name = record.name or "pipeline"
    try:
        tracker = make_tracker(spec, process)
        status.uri = redact(getattr(tracker, "uri", spec.uri))
        status.experiment = spec.experiment or name
        tags = {
            "closedloop.pipeline": name,
            "closedloop.run_dir": str(run_dir.resolve()),
            "closedloop.run_id": run_dir.name,
            "closedloop.status": record.status,
        }
        status.run_id = tracker.start(status.experiment, run_dir.name, tags)
        status.url = tracker.url()
        params = config_params(config)
        if "tracking.uri" in params:  # the config's tracking.uri is the spec's: never send a password along
            params["tracking.uri"] = redact(spec.uri) or ""
        tracker.log_params(params)
        status.n_params = len(params)
        metrics = headline_metrics(summary)
        tracker.log_metrics(metrics)
        status.n_metrics = len(metrics)
        for key, points in training_curves(run_dir).items():
            tracker.log_curve(key, points)
            status.n_curve_points += len(points)
        for f in (run_dir / "config.yaml", run_dir / "manifest.json"):
            if f.is_file():
                tracker.log_artifact(f)
                status.n_artifacts += 1
        files = model_files(run_dir)
        for f in files:
            tracker.log_artifact(f, MODEL_FOLDER)
            status.n_artifacts += 1
        if files:
            status.registered_model = spec.registered_model or name
            status.model_version = tracker.register_model(
                status.registered_model, MODEL_FOLDER, {"closedloop.run_dir": str(run_dir.resolve())}
            )
        status.ok = True
    except Exception as exc:  # tracking is optional: the run's own files are what must not be lost
        status.ok = False
        status.error = describe_error(exc)[:1000]
        log.warning(
            "tracking (%s) failed: %s; the run's files are complete in %s",
            spec.backend,
            status.error,
            run_dir,
        )
    status.seconds = round(time.perf_counter() - t0, 3)
    summary["tracking"] = status.model_dump()
    return TrackingSession(spec, run_dir, status, tracker, process)


def finish_tracking(session: TrackingSession, summary: dict[str, Any]) -> bool:
    """Upload summary.json and report.html and close the tracker run; True when the upload failed
    and ``summary["tracking"]`` changed (write the summary again)."""
    status, tracker = session.status, session.tracker
    try:
        if tracker is None or not status.ok:
            return False
        try:
            for f in (session.run_dir / "summary.json", session.run_dir / "report.html"):
                if f.is_file():
                    tracker.log_artifact(f)
                    status.n_artifacts += 1
            tracker.finish(RunSummary.model_validate(summary).status == "ok")
        except Exception as exc:
            status.ok = False
            status.error = f"uploading the report failed: {describe_error(exc)}"[:1000]
            log.warning("tracking (%s): %s", session.spec.backend, status.error)
            summary["tracking"] = status.model_dump()
            return True
        return False
    finally:
        if session.process is not None:
            session.process.close()
