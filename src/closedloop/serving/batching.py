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

The queue lives on the event loop (no lock: only the loop touches it) and has no task of its own: a
request joining the queue starts the batch when it fills it, a timer (one per queue head, not one per
request) when the head's delay is up, and a finished batch the next one when it is due. A batch runs in
one of ``IN_FLIGHT`` model threads (``model_thread.py``) so the loop keeps accepting requests while
onnxruntime works; while every thread is busy the queue keeps gathering, which is what makes batches
grow under load.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.serving.model_thread import ModelThread

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

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
    enqueued: float = field(default=0.0)
    """When it joined the queue (the event loop's clock; set by ``Batcher.submit``)."""
    abandoned: bool = False
    due: bool = False
    """Its queue delay is up (set by the timer armed for it)."""


class Batcher:
    """The queue of one worker process, turned into model calls as batches fill or their delay runs out."""

    def __init__(self, service: Service, max_batch_size: int, max_queue_delay_ms: float) -> None:
        self.service = service
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_queue_delay_ms / 1000.0
        self.queue: deque[Pending] = deque()
        self.rows = 0  # inputs waiting in the queue, abandoned requests not counted
        self._threads = [ModelThread(f"closedloop-batch-{i}") for i in range(IN_FLIGHT)]
        self._idle = list(self._threads)
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()  # references, so no task is collected mid-run
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, routing: Routing, x: np.ndarray, request_id: str) -> Pending:
        """Queue a checked request (call on the event loop); await ``pending.future`` for its answer."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the app served again on a new loop: nothing of the old one carries over
            self._loop, self._timer, self.rows = loop, None, 0
            self.queue.clear()
            self._idle = list(self._threads)
        pending = Pending(routing, x, request_id, loop.create_future(), loop.time())
        self.queue.append(pending)
        self.rows += len(x)
        if self.rows >= self.max_batch_size or self.max_delay_s <= 0:
            self._dispatch()
        elif self._timer is None:
            self._arm(pending)
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

    # -- turning the queue into batches (all on the event loop) -----------------------------------------
    def _head(self) -> Pending | None:
        """The first request still waiting (abandoned ones at the front are dropped)."""
        while self.queue and self.queue[0].abandoned:
            self.queue.popleft()
        return self.queue[0] if self.queue else None

    def _arm(self, head: Pending) -> None:
        """One timer for the queue's head: its delay is up at ``enqueued + max_delay``."""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(head.enqueued + self.max_delay_s, self._expire, head)

    def _expire(self, head: Pending) -> None:
        self._timer = None
        head.due = True
        self._dispatch()

    def _dispatch(self) -> None:
        """Start every batch that is ready (full, or its head's delay is up) while a thread is free;
        then make sure the (new) head has its timer."""
        head = self._head()
        while (
            head is not None
            and self._idle
            and (self.rows >= self.max_batch_size or head.due or self.max_delay_s <= 0)
        ):
            batch = self._take()
            thread = self._idle.pop()
            task = asyncio.get_running_loop().create_task(self._run(batch, thread))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            head = self._head()
        if head is not None and self._timer is None and not head.due:
            self._arm(head)

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

    async def _run(self, batch: list[Pending], thread: ModelThread) -> None:
        try:
            try:
                results = await thread.run(self.service.score_batch, batch)
            except Exception as exc:  # score_batch answers per request; this is a bug or a full disk
                results = [exc] * len(batch)
        finally:
            self._idle.append(thread)
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        self._dispatch()  # the queue gathered meanwhile: its head may be due or full by now


async def wait_for_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Return when the client has gone (ASGI ``http.disconnect``; the body was already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
