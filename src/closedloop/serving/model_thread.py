"""A thread that runs model calls for the event loop, handing each answer back with one callback.

onnxruntime releases the GIL, so while a model call runs here the event loop parses and answers other
requests on the other core. ``loop.run_in_executor`` would do the same, but it also builds a
``concurrent.futures.Future`` chained to the asyncio one, with callbacks both ways, for every call
(anyio's ``to_thread`` more again); here a call costs one queue put and one ``call_soon_threadsafe``.
The unbatched route uses one such thread, the batcher one per batch in flight (``batching.IN_FLIGHT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any


class ModelThread:
    """One daemon thread running the calls given to it, in order."""

    def __init__(self, name: str = "closedloop-model") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started by the first call

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``fn(*args)`` in this thread; await the returned future (call on the event loop)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            loop, future, fn, args = self._jobs.get()
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the awaiting request, as run_in_executor does
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile: nobody awaits
                loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the awaiting task was cancelled (e.g. at shutdown)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
