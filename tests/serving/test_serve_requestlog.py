"""The request log writer: whole lines under concurrency, rotation by size, records readable back."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from closedloop.monitoring.requestlog import FeedbackRecord, LoggedArray, RequestLogWriter, RequestRecord
from closedloop.serving.shadow import ShadowJob, ShadowRunner


def _record(i: int) -> RequestRecord:
    x = np.full((2, 3), i % 256, np.uint8)
    return RequestRecord(
        request_id=f"r{i}",
        model_name="m",
        model_version="v1",
        run_dir="/runs/v1",
        route="champion",
        variant="fp32",
        inputs=LoggedArray.from_array(x),
        proba=[[0.25, 0.75]] * 2,
        labels=["a", "b"],
        latency_ms=1.5,
    )


def test_concurrent_writes_rotate_and_keep_every_line_whole(tmp_path: Path) -> None:
    writer = RequestLogWriter(tmp_path, max_bytes=4096, worker="w1")
    threads = [
        threading.Thread(target=lambda k=k: [writer.write(_record(k * 100 + i)) for i in range(100)])
        for k in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.write(FeedbackRecord(request_id="r3", label="b"))
    writer.close()
    files = sorted(tmp_path.glob("requests-w1-*.jsonl"))
    assert len(files) > 10 and files[0].name == "requests-w1-000000.jsonl"
    assert all(f.stat().st_size <= 4096 for f in files)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(r["request_id"] for r in lines) == sorted(f"r{i}" for i in range(800))
    back = RequestRecord.model_validate(lines[0])
    assert back.inputs is not None and back.inputs.to_array().shape == (2, 3)
    fb = (tmp_path / "feedback-w1-000000.jsonl").read_text().splitlines()
    assert json.loads(fb[0])["kind"] == "feedback" and json.loads(fb[0])["index"] == 0


def test_a_restarted_worker_appends_to_its_file_or_moves_on(tmp_path: Path) -> None:
    w = RequestLogWriter(tmp_path, max_bytes=2048, worker="w")
    w.write(_record(1))
    w.close()
    w = RequestLogWriter(tmp_path, max_bytes=2048, worker="w")
    w.write(_record(2))
    w.close()
    lines = (tmp_path / "requests-w-000000.jsonl").read_text().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == ["r1", "r2"]


def test_records_reject_unknown_fields_and_routes() -> None:
    with pytest.raises(ValidationError):
        RequestRecord.model_validate({**_record(1).model_dump(), "route": "blue"})
    with pytest.raises(ValidationError):
        FeedbackRecord.model_validate({"request_id": "a", "label": "x", "color": 1})


def test_default_worker_ids_differ_between_writers(tmp_path: Path) -> None:
    a, b = RequestLogWriter(tmp_path), RequestLogWriter(tmp_path)
    assert a.worker != b.worker and "-" not in a.worker


def test_shadow_runner_batches_and_drops_when_full() -> None:
    seen: list[int] = []
    gate = threading.Event()

    def score(jobs: list[ShadowJob]) -> None:
        gate.wait(5)
        seen.append(len(jobs))

    runner = ShadowRunner(score, max_queue=3, max_batch=10)
    model = object()
    results = [runner.submit(ShadowJob(model, np.zeros((1, 2)), str(i))) for i in range(6)]
    gate.set()
    runner.close()
    assert sum(seen) == sum(results) and runner.dropped == 6 - sum(results) >= 2
