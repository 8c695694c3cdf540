"""The batcher's rules in process (no server): a full batch starts at once, a lone request when its delay
is up, a request taken out of the queue is never scored, and a new event loop starts from a clean queue."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from serve_fixtures import images

from closedloop.serving.batching import Batcher, Pending
from closedloop.serving.service import ServeOptions, Service


def _service(runs: dict[str, Path], tmp_path: Path) -> tuple[Service, list[list[str]]]:
    """A batching service whose model calls are recorded (the request ids of each batch)."""
    service = Service(
        ServeOptions(
            run_dir=str(runs["champion"]), log_dir=str(tmp_path), max_batch_size=4, max_queue_delay_ms=30
        )
    )
    calls: list[list[str]] = []
    real = service.score_batch

    def recorded(batch: list[Pending]) -> list:
        calls.append([p.request_id for p in batch])
        return real(batch)

    service.score_batch = recorded  # type: ignore[method-assign]
    return service, calls


def test_full_batches_start_at_once_lone_ones_when_due_and_leavers_are_never_scored(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    service, calls = _service(runs, tmp_path)
    batcher = Batcher(service, max_batch_size=4, max_queue_delay_ms=30)
    routing = service.router.current
    X = images(seed=31, n=8)[0]

    async def scenario() -> None:
        full = [batcher.submit(routing, X[i : i + 1], f"full{i}") for i in range(4)]
        assert calls == [] and not batcher.queue  # taken at once, scored in a model thread
        await asyncio.wait_for(asyncio.gather(*(p.future for p in full)), 30)
        assert calls == [["full0", "full1", "full2", "full3"]]
        left = batcher.submit(routing, X[4:5], "left")
        stayed = batcher.submit(routing, X[5:7], "stayed")  # two inputs: the queue holds 3 of 4
        assert batcher.abandon(left) and not batcher.abandon(left)
        scored = await asyncio.wait_for(stayed.future, 30)  # due after 30 ms, never full
        assert scored.request_id == "stayed" and len(scored.proba) == 2
        assert not left.future.done()  # its handler resolves it; the batcher never scores it

    asyncio.run(scenario())
    assert calls[1:] == [["stayed"]]
    service.close()
    ids = [json.loads(line)["request_id"] for f in tmp_path.glob("requests-*.jsonl") for line in f.open()]
    assert sorted(ids) == ["full0", "full1", "full2", "full3", "stayed"]


def test_a_new_event_loop_starts_from_a_clean_queue(runs: dict[str, Path], tmp_path: Path) -> None:
    """A loop that ends with a request queued (its timer never fired) must not leave the batcher waiting
    on that timer: the next loop's lone request is still answered when its delay is up."""
    service, calls = _service(runs, tmp_path)
    batcher = Batcher(service, max_batch_size=4, max_queue_delay_ms=30)
    routing = service.router.current
    X = images(seed=32, n=2)[0]

    async def leave_one_queued() -> None:
        batcher.submit(routing, X[:1], "orphan")

    async def lone() -> str:
        pending = batcher.submit(routing, X[1:2], "lone")
        return (await asyncio.wait_for(pending.future, 30)).request_id

    asyncio.run(leave_one_queued())
    assert asyncio.run(lone()) == "lone"
    assert calls == [["lone"]]
    service.close()
    assert np.array_equal(
        [json.loads(line)["request_id"] for f in tmp_path.glob("requests-*.jsonl") for line in f.open()],
        ["lone"],
    )
