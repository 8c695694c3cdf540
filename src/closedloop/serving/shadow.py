"""Shadow scoring off the request path: a bounded queue and one thread that scores in micro-batches.

A request hands its (already checked) input over after its own answer is determined and returns at once;
the thread takes whatever has queued up, scores it with one model call per model, and writes one
shadow record per request. A full queue drops shadow work (counted), never delays a response. On
shutdown the queue is drained before the request log is closed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowJob:
    model: Any  # ServedModel (kept loose: this module knows nothing about loading)
    x: np.ndarray
    request_id: str


class ShadowRunner:
    """Runs ``score_batch(jobs)`` on queued jobs in a background thread.

    Args:
        score_batch: called with up to ``max_batch`` jobs of one model; must not raise.
        max_queue: jobs waiting beyond this are dropped (and counted in ``dropped``).
        max_batch: jobs scored together at most.
        linger_s: how long to wait for more jobs once one arrived.
    """

    def __init__(
        self,
        score_batch: Callable[[list[ShadowJob]], None],
        max_queue: int = 10_000,
        max_batch: int = 64,
        linger_s: float = 0.005,
    ) -> None:
        self.score_batch = score_batch
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: ShadowJob) -> bool:
        """Queue a job; False (and counted) when the queue is full."""
        self._ensure_started()
        try:
            self.queue.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def flush(self) -> None:
        """Wait until every queued job has been scored."""
        if self._thread is not None:
            self.queue.join()

    def close(self) -> None:
        """Score what is queued, then stop the thread."""
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join()
            self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="closedloop-shadow", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            # wait a little for more: fewer, larger model calls (nobody waits for a shadow's answer)
            deadline = time.monotonic() + self.linger_s
            while len(batch) < self.max_batch and batch[-1] is not None:
                try:
                    batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            jobs = [j for j in batch if j is not None]
            groups: dict[int, list[ShadowJob]] = {}
            for job in jobs:  # a promotion mid-stream can leave jobs for two different models
                groups.setdefault(id(job.model), []).append(job)
            for group in groups.values():
                try:
                    self.score_batch(group)
                except Exception:  # score_batch should not raise; a bug here must not kill the thread
                    log.exception("shadow scoring failed")
            for _ in batch:
                self.queue.task_done()
            if None in batch:
                return
