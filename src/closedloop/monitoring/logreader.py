"""Reading the request log the server writes (format: docs/serving.md, "Request log").

``LOG_DIR`` holds ``requests-<worker>-<seq>.jsonl`` and ``feedback-<worker>-<seq>.jsonl`` files, one
per server process and rotation. :func:`read_log` validates every line, merges all workers' files
ordered by time, splits the rows by route (champion / canary / shadow) and attaches the feedback
labels by ``(request_id, index)``; :class:`LogTail` reads only what was appended since its last call
(the live monitor inside the server). Both tolerate the one defect a crash can leave: a truncated
last line, skipped with a warning naming the file and line. Anything else that is not a valid record
is an error naming the file, the line and what was expected.

Example:
    >>> log = read_log("logs/")                                  # doctest: +SKIP
    >>> log.champion.proba.shape, log.champion.inputs.shape      # doctest: +SKIP
    >>> log.champion.feedback[:5]                                # doctest: +SKIP

Over 400 lines but one idea: reading and validating the request-log format.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from closedloop.core.errors import DataError

Route = Literal["champion", "canary", "shadow"]
ROUTES: tuple[Route, ...] = ("champion", "canary", "shadow")
FILE_RE = re.compile(r"^(requests|feedback)-(.+)-(\d+)\.jsonl$")
DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool")
_ITEMSIZE = {d: np.dtype(d).itemsize for d in DTYPES}


class LogReadError(DataError):
    """The log directory or one of its lines does not follow the request-log format."""


class LogReadWarning(UserWarning):
    """A line was skipped (a truncated last line, as a crash mid-write leaves)."""


# -- the line formats -------------------------------------------------------------------------------
class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class TensorData(_Line):
    """A raw model input batch: C-order, little-endian bytes in base64; ``dtype`` is numpy's name."""

    shape: list[int] = Field(min_length=1)
    dtype: Literal[DTYPES]  # type: ignore[valid-type]
    encoding: Literal["base64"]
    data: str

    def nbytes(self) -> int:
        """Bytes the shape and dtype call for."""
        return math.prod(self.shape) * _ITEMSIZE[self.dtype]

    def encoded_nbytes(self) -> int:
        """Bytes the base64 text decodes to (without decoding it)."""
        n = len(self.data)
        return n // 4 * 3 - (2 if self.data.endswith("==") else 1 if self.data.endswith("=") else 0)

    def to_array(self) -> np.ndarray:
        """Decode to an array shaped ``shape`` (bad base64 or a size mismatch is a ValueError)."""
        raw = base64.b64decode(self.data, validate=True)
        if len(raw) != self.nbytes():
            raise ValueError(
                f"inputs: {len(raw)} bytes decoded, expected {self.nbytes()} for shape {self.shape} {self.dtype}"
            )
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)


class RequestLine(_Line):
    """One inference call (a batch of N inputs) by one route."""

    kind: Literal["request"]
    request_id: str = Field(min_length=1)
    time: AwareDatetime
    model_name: str
    model_version: str
    run_dir: str
    route: Route
    variant: str
    inputs: TensorData | None
    """Raw model input, or None when the server's input reduction is ``none``."""
    proba: list[list[float]] | None = None
    """N rows of calibrated probabilities (None/empty for a failed call)."""
    labels: list[str | list[str] | float | int] | None = None
    latency_ms: float
    status: Literal["ok", "error"]
    error: str | None = None


class FeedbackLine(_Line):
    """The true label of one input of an earlier request."""

    kind: Literal["feedback"]
    request_id: str = Field(min_length=1)
    index: int = Field(0, ge=0)
    label: str | list[str]
    time: AwareDatetime
    random: bool = False
    """The row was chosen at random for labeling (``FeedbackRecord.random``)."""


LINE_MODELS: dict[str, type[RequestLine] | type[FeedbackLine]] = {
    "requests": RequestLine,
    "feedback": FeedbackLine,
}


@dataclass(frozen=True)
class Located:
    """A validated line and where it came from."""

    line: RequestLine | FeedbackLine
    file: str
    lineno: int


def log_files(log_dir: str | os.PathLike[str]) -> list[Path]:
    """The log's files (both kinds, every worker and rotation), in name order; errors when there are none."""
    d = Path(log_dir)
    if not d.exists():
        raise LogReadError(f"{d}: no such log directory")
    if not d.is_dir():
        raise LogReadError(f"{d}: not a directory; expected the server's --log-dir")
    files = sorted(p for p in d.iterdir() if p.is_file() and FILE_RE.match(p.name))
    if not any(p.name.startswith("requests-") for p in files):
        raise LogReadError(
            f"{d}: no request log files (requests-<worker>-<seq>.jsonl); is this the directory the "
            "server was started with (--log-dir)?"
        )
    return files


def is_log_dir(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding at least one ``requests-*.jsonl`` file."""
    p = Path(path)
    return p.is_dir() and any(FILE_RE.match(f.name) and f.name.startswith("requests-") for f in p.iterdir())


def _describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"]) or "line"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_line(kind: str, raw: bytes, file: str, lineno: int) -> RequestLine | FeedbackLine:
    """Validate one line of a ``requests-``/``feedback-`` file; :class:`LogReadError` names the problem."""
    model = LINE_MODELS[kind]
    try:
        rec = model.model_validate_json(raw)
    except ValidationError as exc:
        what = "a request record" if kind == "requests" else "a feedback record"
        raise LogReadError(
            f"{file}:{lineno}: not {what} of the request-log format ({_describe(exc)})"
        ) from None
    if isinstance(rec, RequestLine) and rec.inputs is not None:
        t = rec.inputs
        if len(t.data) % 4 or t.encoded_nbytes() != t.nbytes():
            raise LogReadError(
                f"{file}:{lineno}: request {rec.request_id}: inputs hold {t.encoded_nbytes()} bytes of base64, "
                f"expected {t.nbytes()} for shape {t.shape} {t.dtype}"
            )
        if rec.status == "ok" and rec.proba is not None and len(rec.proba) != t.shape[0]:
            raise LogReadError(
                f"{file}:{lineno}: request {rec.request_id}: {len(rec.proba)} probability rows for "
                f"{t.shape[0]} inputs"
            )
    return rec


def read_file(
    path: Path, *, start: int = 0, first_lineno: int = 1, final: bool = True, skip_invalid: bool = False
) -> tuple[list[Located], int, int, list[str]]:
    """Validated lines of one file from byte ``start`` (line ``first_lineno``).

    Returns (lines, byte offset consumed, next line number, warnings). ``final``: the file is read as
    it stands (a last line without a newline is parsed, and skipped with a warning when invalid);
    otherwise an unterminated last line may still be being written and is left for the next call.
    ``skip_invalid``: skip any invalid line with a warning instead of raising (the live monitor).
    """
    kind = FILE_RE.match(path.name).group(1)  # type: ignore[union-attr]
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    end = len(data) if final else data.rfind(b"\n") + 1
    chunk = data[:end]
    lines = chunk.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out: list[Located] = []
    notes: list[str] = []
    name = str(path)
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        lineno = first_lineno + i
        try:
            out.append(Located(parse_line(kind, raw, name, lineno), name, lineno))
        except LogReadError as exc:
            truncated = i == last and not chunk.endswith(b"\n")
            if not (truncated or skip_invalid):
                raise
            why = "a truncated last line (a crash mid-write?)" if truncated else "an invalid line"
            msg = f"{name}:{lineno}: skipped {why}: {str(exc).removeprefix(f'{name}:{lineno}: ')}"
            warnings.warn(msg, LogReadWarning, stacklevel=3)
            notes.append(msg)
    return out, start + end, first_lineno + len(lines), notes


# -- the merged log ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteRows:
    """All rows (one per input of a batch) one route answered or scored, oldest first.

    ``inputs`` is None when no record of this route carries inputs; rows of records without inputs
    are zeros there and False in ``has_input``.
    """

    route: str
    request_id: np.ndarray
    """(R,) str: the request each row belongs to."""
    index: np.ndarray
    """(R,) int: the row's position in its request's batch."""
    time: np.ndarray
    """(R,) datetime64[us], UTC."""
    proba: np.ndarray
    """(R, K) calibrated probabilities."""
    decision: np.ndarray
    """(R,) object: the label the model returned."""
    model_version: np.ndarray
    """(R,) str."""
    latency_ms: np.ndarray
    """(R,) the latency of the row's whole request."""
    inputs: np.ndarray | None
    has_input: np.ndarray
    feedback: np.ndarray
    """(R,) object: the fed-back label, or None."""
    n_records: int
    n_errors: int
    """Failed calls of this route (no rows)."""
    run_dirs: list[str] = field(default_factory=list)
    feedback_random: np.ndarray | None = None
    """(R,) bool: the row's latest feedback says it was chosen at random (None: no such mark read)."""

    def __len__(self) -> int:
        return len(self.request_id)

    @property
    def labeled(self) -> np.ndarray:
        """Indices of the rows with feedback."""
        return np.flatnonzero(np.array([f is not None for f in self.feedback], dtype=bool))

    def keys(self) -> np.ndarray:
        """(R,) ``request_id/index`` strings, the join key between routes and feedback."""
        return np.array([f"{r}/{i}" for r, i in zip(self.request_id, self.index, strict=True)], dtype=object)

    def take(self, idx: np.ndarray) -> RouteRows:
        idx = np.asarray(idx, dtype=np.int64)
        return RouteRows(
            route=self.route,
            request_id=self.request_id[idx],
            index=self.index[idx],
            time=self.time[idx],
            proba=self.proba[idx],
            decision=self.decision[idx],
            model_version=self.model_version[idx],
            latency_ms=self.latency_ms[idx],
            inputs=None if self.inputs is None else self.inputs[idx],
            has_input=self.has_input[idx],
            feedback=self.feedback[idx],
            n_records=len(set(self.request_id[idx].tolist())),
            n_errors=0,
            run_dirs=self.run_dirs,
            feedback_random=None if self.feedback_random is None else self.feedback_random[idx],
        )


@dataclass(frozen=True)
class RequestLog:
    """A log directory read and merged (see :func:`read_log`)."""

    log_dir: str
    champion: RouteRows
    canary: RouteRows
    shadow: RouteRows
    feedback: list[FeedbackLine]
    n_feedback_matched: int
    """Feedback records whose (request_id, index) names a logged row."""
    files: list[str]
    warnings: list[str]

    def route(self, name: str) -> RouteRows:
        if name not in ROUTES:
            raise LogReadError(f"unknown route {name!r}; expected one of {list(ROUTES)}")
        return getattr(self, name)

    @property
    def time_range(self) -> tuple[str, str] | None:
        times = np.concatenate([self.route(r).time for r in ROUTES])
        if not len(times):
            return None
        return str(times.min()) + "Z", str(times.max()) + "Z"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _utc_us(t: dt.datetime) -> int:
    """Microseconds since the epoch (exact, unlike float timestamps)."""
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def build_rows(
    route: str,
    records: list[Located],
    labels: dict[tuple[str, int], object],
    random_rows: set[tuple[str, int]] | None = None,
) -> RouteRows:
    """Rows of ``records`` (already ordered) with the feedback ``labels`` attached; ``random_rows``:
    the rows whose latest feedback is marked random."""
    ok = [r for r in records if r.line.status == "ok" and r.line.proba]  # type: ignore[union-attr]
    n_err = len(records) - len(ok)
    rid, idx, times, proba, dec, ver, lat, arrs, has = [], [], [], [], [], [], [], [], []
    width = None
    shape = None
    runs: list[str] = []
    for loc in ok:
        rec: RequestLine = loc.line  # type: ignore[assignment]
        n = len(rec.proba or [])
        k = {len(row) for row in rec.proba or []}
        if len(k) != 1 or (width is not None and k != {width}):
            raise LogReadError(
                f"{loc.file}:{loc.lineno}: request {rec.request_id}: probability rows of width {sorted(k)}, "
                f"expected {width if width is not None else 'one width'} for every row of route {route}"
            )
        width = k.pop()
        rid += [rec.request_id] * n
        idx += list(range(n))
        times += [_utc_us(rec.time)] * n
        proba += rec.proba or []
        decisions = list(rec.labels or [None] * n)
        dec += decisions if len(decisions) == n else [None] * n
        ver += [rec.model_version] * n
        lat += [rec.latency_ms] * n
        if rec.run_dir not in runs:
            runs.append(rec.run_dir)
        if rec.inputs is not None:
            try:
                a = rec.inputs.to_array()
            except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
                raise LogReadError(f"{loc.file}:{loc.lineno}: request {rec.request_id}: {exc}") from None
            if shape is not None and a.shape[1:] != shape:
                raise LogReadError(
                    f"{loc.file}:{loc.lineno}: request {rec.request_id}: inputs shaped {a.shape}, expected "
                    f"(N, {', '.join(map(str, shape))}) like the route's earlier records"
                )
            shape = a.shape[1:]
            arrs.append(a)
            has += [True] * n
        else:
            arrs.append(None)
            has += [False] * n
    inputs = None
    if shape is not None:
        dtype = next(a.dtype for a in arrs if a is not None)
        inputs = np.concatenate(
            [
                a if a is not None else np.zeros((len(loc.line.proba or []), *shape), dtype)  # type: ignore[union-attr]
                for a, loc in zip(arrs, ok, strict=True)
            ]
        )
    request_id = np.array(rid, dtype=object)
    index = np.array(idx, dtype=np.int64)
    fb = np.array([labels.get((r, i)) for r, i in zip(rid, idx, strict=True)] + [0], dtype=object)[:-1]
    return RouteRows(
        route=route,
        request_id=request_id,
        index=index,
        time=np.array(times, dtype=np.int64).astype("datetime64[us]"),
        proba=np.asarray(proba, dtype=np.float64).reshape(len(rid), width or 0),
        decision=np.array([*dec, 0], dtype=object)[:-1],
        model_version=np.array(ver, dtype=object),
        latency_ms=np.asarray(lat, dtype=np.float64),
        inputs=inputs,
        has_input=np.asarray(has, dtype=bool),
        feedback=fb,
        n_records=len(ok),
        n_errors=n_err,
        run_dirs=runs,
        feedback_random=np.array(
            [(r, i) in (random_rows or set()) for r, i in zip(rid, idx, strict=True)], dtype=bool
        ),
    )


def random_feedback(feedback: list[Located]) -> set[tuple[str, int]]:
    """(request_id, index) of the rows whose latest feedback is marked ``random``."""
    latest: dict[tuple[str, int], bool] = {}
    for loc in sorted(feedback, key=lambda f: (f.line.time, f.file, f.lineno)):
        fb: FeedbackLine = loc.line  # type: ignore[assignment]
        latest[(fb.request_id, fb.index)] = fb.random
    return {k for k, v in latest.items() if v}


def feedback_map(feedback: list[Located]) -> dict[tuple[str, int], object]:
    """(request_id, index) -> label; a later feedback for the same row replaces an earlier one."""
    out: dict[tuple[str, int], object] = {}
    for loc in sorted(feedback, key=lambda f: (f.line.time, f.file, f.lineno)):
        fb: FeedbackLine = loc.line  # type: ignore[assignment]
        out[(fb.request_id, fb.index)] = fb.label
    return out


def read_log(log_dir: str | os.PathLike[str]) -> RequestLog:
    """Read every worker's files in ``log_dir`` (rotated ones too) into one time-ordered log.

    Raises :class:`LogReadError` for a missing directory, one without ``requests-*.jsonl`` files, or
    a line that is not a valid record (other than a truncated last line, which is skipped with a
    :class:`LogReadWarning` naming the file and line).
    """
    files = log_files(log_dir)
    requests: list[Located] = []
    feedback: list[Located] = []
    notes: list[str] = []
    for path in files:
        lines, _, _, warn = read_file(path)
        notes += warn
        (requests if path.name.startswith("requests-") else feedback).extend(lines)
    # time first; file and line keep a stable order for records written in the same microsecond
    requests.sort(key=lambda r: (r.line.time, r.file, r.lineno))
    labels = feedback_map(feedback)
    marked = random_feedback(feedback)
    routes = {
        name: build_rows(name, [r for r in requests if r.line.route == name], labels, marked)  # type: ignore[union-attr]
        for name in ROUTES
    }
    known = {
        (r, int(i)) for rows in routes.values() for r, i in zip(rows.request_id, rows.index, strict=True)
    }
    return RequestLog(
        log_dir=str(log_dir),
        champion=routes["champion"],
        canary=routes["canary"],
        shadow=routes["shadow"],
        feedback=[f.line for f in feedback],  # type: ignore[misc]
        n_feedback_matched=sum(1 for k in labels if k in known),
        files=[str(p) for p in files],
        warnings=notes,
    )


class LogTail:
    """Reads what was appended to a log directory since the previous :meth:`poll` (new files too).

    Lines still being written wait for the next poll; an invalid line is skipped with a warning
    (a corrupt line must not stop the service's monitor).
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        self.offsets: dict[Path, tuple[int, int]] = {}
        self.warnings: list[str] = []

    def poll(self) -> tuple[list[Located], list[Located]]:
        """New (request lines, feedback lines), each in file order."""
        reqs: list[Located] = []
        fbs: list[Located] = []
        if not self.log_dir.is_dir():
            return reqs, fbs
        for path in sorted(p for p in self.log_dir.iterdir() if FILE_RE.match(p.name)):
            start, lineno = self.offsets.get(path, (0, 1))
            try:
                if path.stat().st_size <= start:
                    continue
                lines, end, nxt, notes = read_file(
                    path, start=start, first_lineno=lineno, final=False, skip_invalid=True
                )
            except FileNotFoundError:  # removed between listing and reading
                continue
            self.offsets[path] = (end, nxt)
            self.warnings = (self.warnings + notes)[-20:]
            (reqs if path.name.startswith("requests-") else fbs).extend(lines)
        return reqs, fbs
