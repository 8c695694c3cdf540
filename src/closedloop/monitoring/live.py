"""The live monitor: the drift checks over the latest window of the request log, inside the server.

The server's process never imports torch, so the live checks use what the log holds: the inputs
(monitored summary features) and the served model's probabilities (black-box shift, predicted class,
confidence, the label-free estimate), compared with the run's saved reference profile; feedback
labels give realized metrics. The embedding test needs the torch model's penultimate features, which
the exported ONNX model does not output: it is skipped here and named in ``LiveStatus.tests_skipped``
(``closedloop monitor RUN_DIR LOG_DIR`` runs it offline). Dropping a test from the min-p rule makes
the calibrated alarm threshold conservative, never looser.

Example:
    >>> live = LiveMonitor("runs/pneumonia/20261130-201500-1a2b3c4d", "logs/")   # doctest: +SKIP
    >>> s = live.status(); s.level, s.p_values, s.estimated, s.realized          # doctest: +SKIP

Over 400 lines but one idea: the torch-free live window over the log (cache, tail, tests, estimate).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.config import PluginSpec
from closedloop.core.errors import ConfigError, DataError
from closedloop.monitoring.drift.base import Sample, resolve_drift_test
from closedloop.monitoring.estimate import realized
from closedloop.monitoring.logreader import (
    FILE_RE,
    Located,
    LogReadError,
    LogTail,
    RequestLine,
    parse_line,
    read_file,
)
from closedloop.monitoring.monitor import MIN_WINDOW, Monitor, find_profile_dir
from closedloop.monitoring.profile import ReferenceProfile, summary_features
from closedloop.monitoring.spotcheck import recorded_picks
from closedloop.monitoring.stream import StreamStatus, stream_scores
from closedloop.monitoring.stream_reference import ReferenceStreamTest, new_stream_test

_ID_RE = re.compile(rb'"request_id"\s*:\s*"([^"]*)"')
_ROUTE_RE = re.compile(rb'"route"\s*:\s*"(\w+)"')
LIVE_UNAVAILABLE = {
    "embeddings": (
        "needs the torch model's penultimate-layer embeddings, which the exported ONNX model does not "
        "output; run 'closedloop monitor RUN_DIR LOG_DIR' offline for it"
    ),
}
"""Sample inputs the live monitor cannot provide, and why: a drift test whose ``uses`` names one of
them is skipped live with that sentence (derived from the test's declaration, not a list of names)."""


def live_skips(test_specs: list[str | PluginSpec]) -> dict[str, str]:
    """Test name -> why it does not run live, for the profile's tests that read an unavailable input."""
    out: dict[str, str] = {}
    for spec in test_specs:
        cls = _test_class(spec)
        missing = sorted(set(cls.uses) & set(LIVE_UNAVAILABLE))
        if missing:
            out[cls.name] = "; ".join(LIVE_UNAVAILABLE[m] for m in missing)
    return out


def _test_class(spec: str | PluginSpec) -> type:
    return resolve_drift_test(PluginSpec.parts(spec)[0], where="live monitor")


class LiveStatus(BaseModel):
    """What ``GET /monitor`` returns: the latest window's alert level and its evidence."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["ok", "warn", "alarm", "insufficient_data"]
    n_records: int
    """Champion request records in the log so far (all windows; at the first status of a large log,
    lines older than the window are counted without being validated)."""
    n_rows: int
    """Inputs in the evaluated window (a batch request contributes one row per input)."""
    window: int
    """Configured window size in rows."""
    window_start: str | None = None
    window_end: str | None = None
    p_values: dict[str, float] = Field(default_factory=dict)
    min_p: float | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Alarm/warn thresholds on the min-p for this window size (calibrated in the profile)."""
    tests_skipped: dict[str, str] = Field(default_factory=dict)
    """Tests of the profile not run live, and why."""
    evidence: list[str] = Field(default_factory=list)
    estimated: dict[str, float] = Field(default_factory=dict)
    """Label-free estimate of each metric on the window (from calibrated confidences)."""
    estimated_interval: dict[str, list[float]] = Field(default_factory=dict)
    estimate_reliable: bool = False
    estimate_reason: str = ""
    """Why the point estimate is withheld (empty when it is given)."""
    estimate_withheld: dict[str, float] = Field(default_factory=dict)
    """The label-free point estimate when it is not trusted (kept for the record, not a measurement)."""
    spot_check: dict[str, Any] = Field(default_factory=dict)
    """How many random labels would measure realized accuracy within +-0.05, and whether they are asked for."""
    reference_performance: dict[str, float] = Field(default_factory=dict)
    realized: dict[str, float] = Field(default_factory=dict)
    """Metrics on the latest champion rows with feedback labels (up to ``window`` of them)."""
    n_feedback: int = 0
    """Feedback labels matched to a champion row so far."""
    n_feedback_window: int = 0
    """Labeled rows behind ``realized``."""
    n_canary_records: int = 0
    n_shadow_records: int = 0
    n_errors: int = 0
    """Champion calls logged as failed."""
    n_other_versions: int = 0
    """Champion records of other model versions (e.g. before a promotion), not monitored here."""
    model_version: str | None = None
    reference: str | None = None
    """The reference profile's directory this monitor compares with (after ``/admin/promote``: the
    promoted model's own, e.g. the ``references/`` an adapted folder carries)."""
    evaluated_on: str
    stream: StreamStatus | None = None
    """The stream test over every champion row since the live monitor started (beside the window's
    level): its alarm controls false alarms over the whole stream, however often it is read."""
    guarantee: str = ""
    """What the window's alarm promises for this deployment (the profile's sentence)."""
    log_warnings: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    """Time this status took to compute."""


@dataclass
class _Entry:
    """A champion record in the window buffer, with its decoded inputs and features once computed."""

    rec: RequestLine
    order: tuple[Any, str, int]
    proba: np.ndarray
    features: np.ndarray | None = None
    why: str | None = None
    """Why the features cannot be computed (no inputs logged, wrong shape)."""
    features_done: bool = False


class LiveMonitor:
    """Drift checks over the latest ``window`` champion rows of a request log (torch-free).

    Args:
        run_dir: the champion's run directory (or its reference profile directory).
        log_dir: the server's ``--log-dir``.
        window: rows per evaluated window.
        model_version: only champion records of this version are monitored (default: the run
            directory's name, which is what the server logs; ``None``: all).
        seed: seed of the permutation and estimate draws (a status is reproducible for a window).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        log_dir: str | os.PathLike[str],
        window: int = 200,
        *,
        model_version: str | None = "auto",
        seed: int = 0,
        max_join: int = 100_000,
    ) -> None:
        if window < MIN_WINDOW:
            raise ConfigError(f"window={window}: at least {MIN_WINDOW} rows are needed for the drift tests")
        self.run_dir = Path(run_dir)
        self.log_dir = Path(log_dir)
        self.window = int(window)
        self.seed = seed
        self.max_join = max_join
        self.profile_dir = find_profile_dir(self.run_dir)
        profile = ReferenceProfile.load(self.profile_dir)  # loaded once: the cache
        self.profile = profile
        self.model_versions: set[str] | None = None
        if model_version == "auto":
            # a run directory (or a link to one) or a served folder (e.g. an adapted model): its name,
            # which the server logs as the version (so rows an earlier champion served are not mixed in)
            if (self.run_dir / "stages").is_dir() or (self.run_dir / "predictor.json").is_file():
                self.model_versions = {self.run_dir.name, self.run_dir.resolve().name}
        elif model_version is not None:
            self.model_versions = {model_version}
        info = profile.info
        self.test_names = [PluginSpec.parts(t)[0] for t in info.tests]
        self.skipped = live_skips(info.tests)
        live_tests = [t for t in info.tests if _test_class(t).name not in self.skipped]
        ref = profile.reference
        # the reference without embeddings: the embedding test then does not apply
        live_ref = Sample(features=ref.features, embeddings=None, proba=ref.proba, labels=ref.labels)
        dom = profile.domain
        live_domain = Sample(features=dom.features, embeddings=None, proba=dom.proba, labels=dom.labels)

        def monitor(tests: list[str | PluginSpec]) -> Monitor:
            p = ReferenceProfile(
                info.model_copy(update={"tests": tests}),
                live_ref,
                profile.pca_mean,
                profile.pca_components,
                domain=live_domain,
            )
            return Monitor(p, model=None, seed=seed, effects=False)

        self._monitor = monitor(live_tests)
        # windows whose inputs were not logged: only the tests that do not read the inputs
        self._input_tests = [_test_class(t).name for t in live_tests if "features" in _test_class(t).uses]
        self._monitor_outputs_only = monitor(
            [t for t in live_tests if _test_class(t).name not in self._input_tests]
        )
        self._tail = LogTail(self.log_dir)
        self._buffer: list[_Entry] = []
        self._proba_by_key: dict[tuple[str, int], np.ndarray] = {}
        self._pending: dict[tuple[str, int], tuple[Any, bool]] = {}
        # (probabilities, label, chosen at random): only random labels enter realized metrics
        self._labeled: deque[tuple[np.ndarray, Any, bool]] = deque(maxlen=self.window)
        self._counts = {"records": 0, "canary": 0, "shadow": 0, "errors": 0, "feedback": 0, "other": 0}
        self._notes: list[str] = []
        try:  # rows a recorded spot check picked count as random without the feedback's mark
            self._picks = recorded_picks(self.run_dir)
        except DataError as exc:
            self._picks = set()
            self._notes.append(str(exc))
        stream = new_stream_test(profile, seed)
        self._stream = stream if isinstance(stream, ReferenceStreamTest) or profile.stream else None
        self._cached: LiveStatus | None = None
        self._lock = threading.Lock()  # the server may ask for a status from several threads at once

    # -- reading ------------------------------------------------------------------------------------
    def _ingest(self, reqs: list[Located], fbs: list[Located]) -> None:
        fresh: list[_Entry] = []
        for loc in reqs:
            rec: RequestLine = loc.line  # type: ignore[assignment]
            if rec.route != "champion":
                self._counts[rec.route] += 1
                continue
            if rec.status != "ok" or not rec.proba:
                self._counts["errors"] += 1
                continue
            if self.model_versions is not None and rec.model_version not in self.model_versions:
                self._counts["other"] += 1
                continue
            self._counts["records"] += 1
            proba = np.asarray(rec.proba, dtype=np.float64)
            entry = _Entry(rec, (rec.time, loc.file, loc.lineno), proba)
            self._buffer.append(entry)
            fresh.append(entry)
            for i, row in enumerate(proba):
                key = (rec.request_id, i)
                self._proba_by_key[key] = row
                if key in self._pending:
                    self._add_label(row, *self._pending.pop(key))
        _trim_fifo(self._proba_by_key, self.max_join)
        if self._stream is not None and fresh:  # arrival order: time, then file and line
            fresh.sort(key=lambda e: e.order)
            info = self.profile.info
            rows = np.concatenate([e.proba for e in fresh])
            if isinstance(self._stream, ReferenceStreamTest):  # the served outputs against the reference's
                self._stream.update(Sample(features=np.zeros((len(rows), 0)), proba=rows))
            else:
                self._stream.update(stream_scores(rows, info.problem_type, info.threshold))
        for loc in fbs:
            key = (loc.line.request_id, loc.line.index)
            row = self._proba_by_key.get(key)
            chosen = bool(loc.line.random) or key in self._picks  # type: ignore[union-attr]
            if row is None:  # the request may sit in a file not read yet
                self._pending[key] = (loc.line.label, chosen)  # type: ignore[union-attr]
            else:
                self._add_label(row, loc.line.label, chosen)  # type: ignore[union-attr]
        _trim_fifo(self._pending, self.max_join)
        if reqs:
            self._buffer.sort(key=lambda e: e.order)
            # keep the newest records holding at least `window` rows
            rows, keep = 0, len(self._buffer)
            while keep > 0 and rows < self.window:
                keep -= 1
                rows += len(self._buffer[keep].proba)
            del self._buffer[:keep]

    def _cold_start(self) -> tuple[list[Located], list[Located]]:
        """First read of a log that may be large: all feedback, but of the request files only the
        lines that can matter - the last ``window`` lines of each file (the newest rows overall are
        among them) and the requests that feedback names. The other lines are counted by route
        without being validated; from then on every appended line is validated."""
        tail = self._tail
        if not self.log_dir.is_dir():
            return [], []
        files = sorted(p for p in self.log_dir.iterdir() if FILE_RE.match(p.name))
        fbs: list[Located] = []
        for path in (p for p in files if p.name.startswith("feedback-")):
            lines, end, nxt, notes = read_file(path, final=False, skip_invalid=True)
            tail.offsets[path] = (end, nxt)
            tail.warnings = (tail.warnings + notes)[-20:]
            fbs += lines
        wanted = {loc.line.request_id for loc in fbs}
        reqs: list[Located] = []
        for path in (p for p in files if p.name.startswith("requests-")):
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            lines = data[:end].split(b"\n")[:-1] if end else []
            first_kept = max(0, len(lines) - self.window)
            for i, raw in enumerate(lines):
                m = _ID_RE.search(raw)
                if i < first_kept and not (m and m.group(1).decode() in wanted):
                    route = _ROUTE_RE.search(raw)
                    key = route.group(1).decode() if route else ""
                    if key == "champion":
                        self._counts["records"] += 1
                    elif key in ("canary", "shadow"):
                        self._counts[key] += 1
                    continue
                try:
                    reqs.append(Located(parse_line("requests", raw, str(path), i + 1), str(path), i + 1))
                except LogReadError as exc:
                    tail.warnings = [*tail.warnings, f"{path}:{i + 1}: skipped an invalid line: {exc}"][-20:]
            tail.offsets[path] = (end, len(lines) + 1)
        return reqs, fbs

    def _add_label(self, proba_row: np.ndarray, label: Any, chosen: bool) -> None:
        self._counts["feedback"] += 1
        self._labeled.append((proba_row, label, chosen))

    # -- evaluating ---------------------------------------------------------------------------------
    def status(self) -> LiveStatus:
        """Read what was appended to the log and check the latest window (cached while nothing new)."""
        with self._lock:
            t0 = time.perf_counter()
            # the first read that finds files is the cold start; after it, only appended bytes are read
            reqs, fbs = self._tail.poll() if self._tail.offsets else self._cold_start()
            if self._cached is not None and not reqs and not fbs:
                return self._cached
            self._ingest(reqs, fbs)
            status = self._evaluate()
            status.seconds = time.perf_counter() - t0
            self._cached = status
            return status

    def _window_rows(self) -> tuple[np.ndarray, np.ndarray | None, list[_Entry], str | None]:
        """Probabilities and features of the last ``window`` rows (features None when some row
        has no usable inputs), the entries, and why features are missing."""
        entries = self._buffer
        self._compute_features([e for e in entries if not e.features_done])
        proba = np.concatenate([e.proba for e in entries]) if entries else np.zeros((0, 0))
        n = min(self.window, len(proba))
        why = next((e.why for e in entries if e.features is None), None)
        features = None
        if why is None and n:
            features = np.concatenate([e.features for e in entries])[-n:]  # type: ignore[misc]
        return proba[len(proba) - n :], features, entries, why

    def _compute_features(self, todo: list[_Entry]) -> None:
        """Monitored features of new entries, in one call (per-record calls cost more than the work)."""
        info = self.profile.info
        arrays = []
        for e in todo:
            e.features_done = True
            x, e.why = self._inputs(e.rec)
            if x is not None:
                arrays.append((e, x))
        if not arrays:
            return
        X = np.concatenate([x for _, x in arrays])
        # tables: the predictor's input is the feature matrix itself
        F = summary_features(info, X) if info.kind == "images" else np.asarray(X, dtype=np.float32)
        start = 0
        for e, x in arrays:
            e.features = F[start : start + len(x)]
            start += len(x)

    def _inputs(self, rec: RequestLine) -> tuple[np.ndarray | None, str | None]:
        """The record's decoded inputs, or why they cannot be used."""
        info = self.profile.info
        if rec.inputs is None:
            return None, "the server logs no inputs (input reduction 'none'), so the input tests cannot run"
        try:
            x = rec.inputs.to_array()
        except ValueError as exc:
            return None, f"request {rec.request_id}: {exc}"
        if tuple(x.shape[1:]) != tuple(info.input_shape):
            return None, (
                f"request {rec.request_id}: logged inputs shaped {list(x.shape[1:])}, the reference profile "
                f"has {info.input_shape}"
            )
        return x, None

    def _evaluate(self) -> LiveStatus:
        info = self.profile.info
        proba, features, entries, why = self._window_rows()
        n = len(proba)
        skipped = dict(self.skipped)
        if why is not None:
            skipped.update(dict.fromkeys(self._input_tests, why))
        versions = sorted({e.rec.model_version for e in entries})
        start = _iso(entries[0].rec) if entries else None
        end = _iso(entries[-1].rec) if entries else None
        real, n_lab, real_notes = self._realized()
        base: dict[str, Any] = {
            "n_records": self._counts["records"],
            "n_rows": n,
            "window": self.window,
            "window_start": start,
            "window_end": end,
            "tests_skipped": skipped,
            "reference_performance": dict(info.reference_performance),
            "realized": real,
            "n_feedback": self._counts["feedback"],
            "n_feedback_window": n_lab,
            "n_canary_records": self._counts["canary"],
            "n_shadow_records": self._counts["shadow"],
            "n_errors": self._counts["errors"],
            "n_other_versions": self._counts["other"],
            "model_version": ", ".join(versions) or None,
            "reference": str(self.profile_dir),
            "log_warnings": [*self._tail.warnings, *real_notes][-20:],
            "stream": self._stream.status() if self._stream is not None else None,
            "guarantee": info.guarantee,
        }
        source = (
            f"the last {n} champion rows logged in {self.log_dir} ({start} to {end}): production inputs, "
            f"never trained on; reference: the profile's validation sample ({info.reference_size} rows)"
        )
        if n_lab:
            source += f"; realized: the latest {n_lab} champion rows with feedback labels"
        if n < MIN_WINDOW:
            return LiveStatus(
                level="insufficient_data",
                evaluated_on=source + f" - fewer than {MIN_WINDOW} rows, no test run",
                **base,
            )
        if features is None:
            features = np.zeros((n, 0), np.float32)
            mon = self._monitor_outputs_only
        else:
            mon = self._monitor
        stream = self._stream.status().model_dump() if self._stream is not None else None
        res = mon.evaluate(
            Sample(features=features, proba=proba), seed=[self.seed, self._counts["records"]], stream=stream
        )
        return LiveStatus(
            level=res["alert"],
            p_values=res["p_values"],
            min_p=res["min_p"],
            thresholds=res["thresholds"],
            evidence=res["evidence"],
            estimated=_finite(res["estimated"]),
            estimated_interval={k: v for k, v in res["estimated_interval"].items() if np.all(np.isfinite(v))},
            estimate_reliable=bool(res["estimate_reliable"]),
            estimate_reason=res["estimate_reason"],
            estimate_withheld=_finite(res["estimate_withheld"]),
            spot_check=res["spot_check"],
            evaluated_on=source,
            **base,
        )

    def _realized(self) -> tuple[dict[str, float], int, list[str]]:
        """Metrics on the labeled champion rows chosen at random (feedback marked ``random`` or a
        recorded spot check's pick); labels the profile does not know are skipped."""
        info = self.profile.info
        if not self._labeled:
            return {}, 0, []
        names = {n: i for i, n in enumerate(info.label_names)}
        rows, ys, bad = [], [], set()
        not_random = sum(1 for *_, chosen in self._labeled if not chosen)
        for p, label, chosen in self._labeled:
            if not chosen:
                continue
            try:
                if info.problem_type == "multilabel":
                    labels = [label] if isinstance(label, str) else list(label)
                    y = np.zeros(len(names), np.int64)
                    y[[names[x] for x in labels]] = 1
                else:
                    y = names[label]
            except (KeyError, TypeError):
                bad.add(str(label))
                continue
            rows.append(p)
            ys.append(y)
        notes = (
            [f"feedback label(s) {sorted(bad)[:5]} are not classes of the model {info.label_names}; ignored"]
            if bad
            else []
        )
        if not_random:
            notes.append(
                f'{not_random} feedback label(s) not marked random (not a spot check\'s pick, no "random": true) '
                "left out of realized metrics: labels chosen by uncertainty are biased"
            )
        if not rows:
            return {}, 0, notes
        proba, y = np.stack(rows), np.asarray(ys)
        out: dict[str, float] = {}
        for m in info.metrics:
            try:  # AUC is undefined while only one class has come back
                out.update(realized([m], y, proba, info.problem_type, info.threshold))
            except ValueError:
                continue
        return _finite(out), len(rows), notes


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if v is not None and np.isfinite(v)}


def _iso(rec: RequestLine) -> str:
    return rec.time.isoformat().replace("+00:00", "Z")


def _trim_fifo(d: dict[Any, Any], limit: int) -> None:
    """Drop the oldest entries of an insertion-ordered dict beyond ``limit``."""
    extra = len(d) - limit
    if extra > 0:
        for key in list(d)[:extra]:
            del d[key]
