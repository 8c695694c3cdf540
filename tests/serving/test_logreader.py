"""The request-log reader: merging workers and rotations, validation, truncated lines, feedback join."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from livelog_fixtures import feedback, request, write  # noqa: E402

from closedloop.monitoring.logreader import LogReadError, LogReadWarning, LogTail, is_log_dir, read_log  # noqa: E402


def _img(v: int, n: int = 1) -> np.ndarray:
    return np.full((n, 4, 4, 1), v, np.uint8)


def _proba(p: float, n: int = 1) -> np.ndarray:
    return np.tile([1 - p, p], (n, 1))


def test_merges_workers_and_rotations_by_time(tmp_path):
    # worker a writes t=0,2,4 over a rotation; worker b writes t=1,3; file order != time order
    write(tmp_path, "requests-a-000000.jsonl", [request(_img(0), _proba(0.0), t=0, request_id="r0")])
    write(
        tmp_path,
        "requests-a-000001.jsonl",
        [
            request(_img(2), _proba(0.2), t=2, request_id="r2"),
            request(_img(4), _proba(0.4), t=4, request_id="r4"),
        ],
    )
    write(
        tmp_path,
        "requests-b-000000.jsonl",
        [
            request(_img(3, 2), _proba(0.3, 2), t=3, request_id="r3"),
            request(_img(1), _proba(0.1), t=1, request_id="r1"),
        ],
    )
    log = read_log(tmp_path)
    rows = log.champion
    assert list(rows.request_id) == ["r0", "r1", "r2", "r3", "r3", "r4"]
    assert list(rows.index) == [0, 0, 0, 0, 1, 0]
    np.testing.assert_allclose(rows.proba[:, 1], [0.0, 0.1, 0.2, 0.3, 0.3, 0.4])
    assert rows.inputs.shape == (6, 4, 4, 1) and rows.inputs.dtype == np.uint8
    np.testing.assert_array_equal(rows.inputs[:, 0, 0, 0], [0, 1, 2, 3, 3, 4])  # decoded with their rows
    assert rows.n_records == 5 and len(log.files) == 3 and is_log_dir(tmp_path)
    assert np.all(np.diff(rows.time.astype(np.int64)) >= 0)


def test_routes_feedback_join_and_unmatched(tmp_path):
    write(
        tmp_path,
        "requests-a-000000.jsonl",
        [
            request(_img(1, 2), _proba(0.9, 2), t=0, request_id="x"),
            request(_img(1, 2), _proba(0.2, 2), t=0.1, request_id="x", route="shadow"),
            request(_img(5), _proba(0.6), t=1, request_id="y", route="canary"),
        ],
    )
    write(
        tmp_path,
        "feedback-b-000000.jsonl",
        [
            feedback("x", "1", t=5, index=1),
            feedback("y", "0", t=6),
            feedback("nope", "1", t=7),
            feedback("x", "0", t=4, index=1),  # older: the later label wins
        ],
    )
    log = read_log(tmp_path)
    assert len(log.champion) == 2 and len(log.shadow) == 2 and len(log.canary) == 1
    assert list(log.champion.feedback) == [None, "1"]
    assert list(log.shadow.feedback) == [None, "1"]  # the shadow scored the same input
    assert list(log.canary.feedback) == ["0"]
    assert list(log.champion.labeled) == [1]
    assert log.n_feedback_matched == 2 and len(log.feedback) == 4


def test_truncated_last_line_is_skipped_with_warning(tmp_path):
    good = [request(_img(1), _proba(0.5), t=i) for i in range(3)]
    partial = json.dumps(request(_img(1), _proba(0.5), t=9))[:57]
    path = write(tmp_path, "requests-w-000003.jsonl", good, tail=partial)
    write(tmp_path, "feedback-w-000000.jsonl", [], tail='{"kind": "feedback", "requ')
    with pytest.warns(LogReadWarning, match=rf"{path.name}:4: skipped a truncated last line"):
        log = read_log(tmp_path)
    assert len(log.champion) == 3 and len(log.warnings) == 2
    assert any("feedback-w-000000.jsonl:1" in w for w in log.warnings)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.update(route="primary"), r"requests-w-000000.jsonl:2: not a request record.*route"),
        (lambda r: r.pop("request_id"), r":2: not a request record.*request_id"),
        (lambda r: r.update(time="yesterday"), r":2: .*time"),
        (
            lambda r: r["inputs"].update(shape=[1, 5, 5, 1]),
            r":2: request .*expected 25 for shape \[1, 5, 5, 1\]",
        ),
        (
            lambda r: r.update(proba=[[0.5, 0.5], [0.5, 0.5]]),
            r":2: request .*2 probability rows for 1 inputs",
        ),
        (lambda r: r.update(surprise=1), r":2: .*surprise.*Extra inputs"),
    ],
)
def test_invalid_line_mid_file_is_an_error_naming_file_and_line(tmp_path, mutate, expected):
    bad = request(_img(1), _proba(0.5), t=1)
    mutate(bad)
    write(
        tmp_path,
        "requests-w-000000.jsonl",
        [request(_img(1), _proba(0.5), t=0), bad, request(_img(1), _proba(0.5), t=2)],
    )
    with pytest.raises(LogReadError, match=expected):
        read_log(tmp_path)


def test_directory_errors(tmp_path):
    with pytest.raises(LogReadError, match="no such log directory"):
        read_log(tmp_path / "missing")
    write(tmp_path, "feedback-a-000000.jsonl", [feedback("x", "1", t=0)])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LogReadError, match=r"no request log files \(requests-<worker>-<seq>.jsonl\)"):
        read_log(tmp_path)
    assert not is_log_dir(tmp_path)


def test_inputs_absent_when_reduction_is_none(tmp_path):
    write(tmp_path, "requests-a-000000.jsonl", [request(None, _proba(0.3, 3), t=0)])
    log = read_log(tmp_path)
    assert log.champion.inputs is None and not log.champion.has_input.any() and len(log.champion) == 3


def test_tail_reads_only_new_complete_lines(tmp_path):
    tail = LogTail(tmp_path)
    assert tail.poll() == ([], [])
    line = json.dumps(request(_img(1), _proba(0.5), t=1, request_id="b"))
    write(
        tmp_path,
        "requests-a-000000.jsonl",
        [request(_img(1), _proba(0.5), t=0, request_id="a")],
        tail=line[:40],
    )
    reqs, _ = tail.poll()
    assert [r.line.request_id for r in reqs] == ["a"]  # the half-written line waits
    write(tmp_path, "requests-a-000000.jsonl", [], tail=line[40:] + "\n" + "garbage\n")
    write(tmp_path, "feedback-a-000000.jsonl", [feedback("a", "1", t=2)])
    with pytest.warns(LogReadWarning, match=r"requests-a-000000.jsonl:3: skipped an invalid line"):
        reqs, fbs = tail.poll()
    assert [r.line.request_id for r in reqs] == ["b"] and reqs[0].lineno == 2
    assert [f.line.request_id for f in fbs] == ["a"]
    assert tail.poll() == ([], [])
