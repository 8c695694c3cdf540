"""Dynamic batching: concurrent requests gathered into one onnxruntime call (``--max-batch-size``).

As Triton's and KServe's dynamic batchers do: the first request waiting starts a clock; the batch runs
when it holds ``max_batch_size`` inputs or when that request has waited ``max_queue_delay_ms``, whichever
comes first. Each request was checked on its own before it joined the queue (a bad request is refused
there and never meets its batch-mates), keeps its own route (champion or canary), gets its own
outputs and its own log record, written before any of the batch is answered.

A client that disconnects while its request waits in the queue is taken out of it: the request is never
scored and no record claims an answer. Once its batch has started, the request is answered and logged
like any other (the same holds unbatched: a record is written before the response is sent, and a
client leaving after that is not something the server can see).

The queue lives on the event loop (no lock: only the loop touches it); a batch runs in a worker thread
so the loop keeps accepting requests while onnxruntime works; up to ``IN_FLIGHT`` batches run at once,
and while all of them are busy the queue keeps gathering, which is what makes batches grow under load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from closedloop.serving.routing import Routing
    from closedloop.serving.service import Scored, Service


IN_FLIGHT = 2
"""Batches scored at the same time: while one runs in onnxruntime, the next can too (two cores)."""


@dataclass(eq=False)
class Pending:
    """One checked request waiting for its batch."""

    routing: Routing
    x: np.ndarray
    request_id: str
    future: asyncio.Future[Scored | None]
    """The request's answer; None when its client left while it was queued (see ``InferRoute``)."""
    enqueued: float = field(default_factory=time.monotonic)
    abandoned: bool = False


class Batcher:
    """The queue of one worker process and the task that turns it into model calls."""

    def __init__(
        self,
        service: Service,
        max_batch_size: int,
        max_queue_delay_ms: float,
        run_in_thread: Callable[..., Awaitable[Any]],
    ) -> None:
        self.service = service
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_queue_delay_ms / 1000.0
        self.run_in_thread = run_in_thread
        self.queue: deque[Pending] = deque()
        self.rows = 0  # inputs waiting in the queue, abandoned requests not counted
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, routing: Routing, x: np.ndarray, request_id: str) -> Pending:
        """Queue a checked request (call on the event loop); await ``pending.future`` for its answer."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._loop())
        pending = Pending(routing, x, request_id, loop.create_future())
        self.queue.append(pending)
        self.rows += len(x)
        assert self._wakeup is not None
        self._wakeup.set()
        return pending

    def abandon(self, pending: Pending) -> bool:
        """Take a request whose client left out of the queue; False when its batch already started."""
        if pending.abandoned or pending not in self.queue:
            return False
        pending.abandoned = True
        self.rows -= len(pending.x)
        if self.service.metrics:
            self.service.metrics.abandoned.inc()
        return True

    def _take(self) -> list[Pending]:
        """The next batch: queued requests in order, up to ``max_batch_size`` inputs (a larger request
        runs alone), abandoned ones dropped."""
        batch: list[Pending] = []
        rows = 0
        while self.queue:
            head = self.queue[0]
            if head.abandoned:
                self.queue.popleft()
                continue
            if batch and rows + len(head.x) > self.max_batch_size:
                break
            self.queue.popleft()
            batch.append(head)
            rows += len(head.x)
            self.rows -= len(head.x)
        return batch

    async def _loop(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        slots = asyncio.Semaphore(IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        while True:
            while not any(not p.abandoned for p in self.queue):
                self.queue.clear()
                self.rows = 0
                wakeup.clear()
                await wakeup.wait()
            await slots.acquire()  # while every slot is busy, the queue keeps growing
            first = next((p for p in self.queue if not p.abandoned), None)
            if first is None:
                slots.release()
                continue
            deadline = first.enqueued + self.max_delay_s
            while self.rows < self.max_batch_size and not first.abandoned:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch, slots))
            running.add(task)  # a reference, so the task is not garbage-collected mid-run
            task.add_done_callback(running.discard)

    async def _run(self, batch: list[Pending], slots: asyncio.Semaphore) -> None:
        try:
            try:
                results = await self.run_in_thread(self.service.score_batch, batch)
            except Exception as exc:  # score_batch answers per request; this is a bug or a full disk
                results = [exc] * len(batch)
        finally:
            slots.release()
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)


async def wait_for_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Return when the client has gone (ASGI ``http.disconnect``; the body was already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
