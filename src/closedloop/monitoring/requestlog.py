"""The append-only request log the service writes (format: docs/serving.md, "Request log").

One file per worker process (``requests-<worker>-<seq>.jsonl``, ``feedback-<worker>-<seq>.jsonl``),
rotated by size. Each record is one ``os.write`` of a whole line on an ``O_APPEND`` descriptor, done
before the HTTP response is sent: once a client has its answer the record is in the kernel's page cache,
so a crash or SIGTERM of the server cannot lose it (``fsync="always"`` also survives a power cut).
Readers (``closedloop.monitoring.logreader``) tolerate a truncated last line.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time as _time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Route = Literal["champion", "canary", "shadow"]


_second: tuple[int, str] = (-1, "")
"""The last whole second formatted (the log writes thousands of records per second; formatting the date
again for each cost more than the rest of the time stamp)."""


def utc_now() -> str:
    """ISO 8601 UTC time with microseconds and a ``Z`` suffix, as the log stores it
    (``2026-12-05T16:49:19.123456Z``)."""
    global _second
    seconds, ns = divmod(_time.time_ns(), 1_000_000_000)
    cached = _second  # one read: another thread may replace it meanwhile, with an equally right value
    if cached[0] != seconds:
        cached = _second = (seconds, _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(seconds)))
    return f"{cached[1]}.{ns // 1000:06d}Z"


class LoggedArray(BaseModel):
    """A raw model input as C-order bytes, base64-encoded."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int]
    dtype: str
    encoding: Literal["base64"] = "base64"
    data: str

    @classmethod
    def from_array(cls, arr: np.ndarray) -> LoggedArray:
        """``dtype`` is numpy's name (``uint8``, ``float32``...); the bytes are little-endian."""
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        return cls.model_construct(
            shape=list(arr.shape),
            dtype=arr.dtype.name,
            encoding="base64",
            data=base64.b64encode(arr.tobytes()).decode(),
        )

    def to_array(self) -> np.ndarray:
        dtype = np.dtype(self.dtype).newbyteorder("<")
        return np.frombuffer(base64.b64decode(self.data), dtype=dtype).reshape(self.shape)


class RequestRecord(BaseModel):
    """One inference call (a batch of N inputs is one record)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["request"] = "request"
    request_id: str
    time: str = Field(default_factory=utc_now)
    model_name: str
    model_version: str
    run_dir: str
    route: Route
    variant: str
    inputs: LoggedArray | None
    """The raw model input; None when the server's input reduction is ``none``."""
    proba: list[list[float]] | None
    labels: list[Any] | None
    latency_ms: float
    status: Literal["ok", "error"] = "ok"
    error: str | None = None


class FeedbackRecord(BaseModel):
    """The true label of one input of an earlier request."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["feedback"] = "feedback"
    request_id: str
    index: int = Field(0, ge=0)
    label: str | list[str]
    time: str = Field(default_factory=utc_now)
    random: bool = False
    """True when the row was chosen uniformly at random for labeling (a spot check's pick, the
    review queue's random-control slice): only such labels enter realized metrics, because labels
    chosen by uncertainty or drift are a biased sample of production."""


class _RotatingFile:
    """An O_APPEND file ``<prefix>-<worker>-<seq>.jsonl`` that moves to the next seq past ``max_bytes``."""

    def __init__(self, directory: Path, prefix: str, worker: str, max_bytes: int, fsync: bool) -> None:
        self.directory, self.prefix, self.worker = directory, prefix, worker
        self.max_bytes, self.fsync = max_bytes, fsync
        self.seq = 0
        self.fd: int | None = None
        self.size = 0
        self.lock = threading.Lock()

    def _open(self) -> None:
        while True:
            path = self.directory / f"{self.prefix}-{self.worker}-{self.seq:06d}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(fd).st_size
            if size < self.max_bytes:
                self.fd, self.size = fd, size
                return
            os.close(fd)
            self.seq += 1

    def write(self, line: bytes) -> None:
        with self.lock:
            if self.fd is None:
                self._open()
            elif self.size and self.size + len(line) > self.max_bytes:
                os.close(self.fd)
                self.fd = None
                self.seq += 1
                self._open()
            assert self.fd is not None
            view = memoryview(line)
            while view:  # os.write may write less than asked (signals, full disk): finish the line
                n = os.write(self.fd, view)
                view = view[n:]
            self.size += len(line)
            if self.fsync:
                os.fsync(self.fd)

    def close(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.fsync(self.fd)
                os.close(self.fd)
                self.fd = None


class RequestLogWriter:
    """Appends request and feedback records to ``log_dir``; thread-safe, one instance per process.

    Args:
        log_dir: folder of the log (created when missing).
        max_bytes: rotate a file once it would grow past this size.
        fsync: ``"none"`` (records survive a crash of the server process) or ``"always"`` (fsync after
            every record: they also survive a crash of the machine, at a cost in throughput).
        worker: the file name's worker id (default: pid plus a random suffix).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        fsync: Literal["none", "always"] = "none",
        worker: str | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.worker = worker or f"{os.getpid()}x{secrets.token_hex(2)}"
        always = fsync == "always"
        self._requests = _RotatingFile(self.log_dir, "requests", self.worker, max_bytes, always)
        self._feedback = _RotatingFile(self.log_dir, "feedback", self.worker, max_bytes, always)

    def write(self, record: RequestRecord | FeedbackRecord) -> None:
        """Append one record; returns once the line is written to the file."""
        line = (record.model_dump_json() + "\n").encode("utf-8")
        (self._feedback if record.kind == "feedback" else self._requests).write(line)

    def write_many(self, records: list[RequestRecord]) -> None:
        """Append several request records with one write (the shadow thread's batches)."""
        if records:
            self._requests.write(b"".join((r.model_dump_json() + "\n").encode("utf-8") for r in records))

    def write_lines(self, lines: bytes) -> None:
        """Append request records already encoded as whole JSON lines (each ending in a newline), with one
        write: the server's hot path encodes them itself (closedloop.serving.log_lines)."""
        if lines:
            self._requests.write(lines)

    def close(self) -> None:
        self._requests.close()
        self._feedback.close()
