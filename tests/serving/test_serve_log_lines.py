"""The server's request-log lines are byte for byte what the record model writes, and readable back."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import numpy as np
import pytest

from closedloop.monitoring.logreader import RequestLine
from closedloop.monitoring.requestlog import LoggedArray, RequestRecord, utc_now
from closedloop.serving.log_lines import request_line
from closedloop.serving.model import ServedModel

CASES = {
    "uint8 image, class names": (
        np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1),
        np.array([[0.1, 0.9], [1 / 3, 2 / 3]]),
        ["cat", "dog"],
    ),
    "float32 table row with a missing value": (
        np.array([[1.5, math.nan, -2e-7]], np.float32),
        np.array([[1e-300, 1.0 - 1e-16]]),
        [1],
    ),
    "big-endian float64 input": (
        np.array([[1.0, 2.5]], dtype=">f8"),
        np.array([[0.25, 0.75]]),
        ["b"],
    ),
    "multilabel labels": (np.zeros((1, 3), np.int64), np.array([[0.6, 0.7, 0.1]]), [["a", "b"]]),
    "regression, infinite and NaN outputs": (
        np.ones((2, 2), np.float32),
        np.array([[math.inf], [math.nan]]),
        [math.inf, math.nan],
    ),
    "a non-contiguous slice": (
        np.arange(48, dtype=np.uint16).reshape(4, 12)[::2, ::3],
        np.ones((2, 1)),
        [0.5, 2.0],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("keep_inputs", [True, False])
def test_a_line_is_exactly_the_records_own_json(runs: dict[str, Path], case: str, keep_inputs: bool) -> None:
    model = ServedModel.load(runs["champion"])
    x, proba, labels = CASES[case]
    now = utc_now()
    line = request_line(model, "canary", "req-é1", now, x if keep_inputs else None, proba, labels, 1.234567)
    record = RequestRecord(
        request_id="req-é1",
        time=now,
        model_name=model.name,
        model_version=model.version,
        run_dir=str(model.run_dir),
        route="canary",
        variant=model.variant,
        inputs=LoggedArray.from_array(x) if keep_inputs else None,
        proba=proba.tolist(),
        labels=labels,
        latency_ms=round(1.234567, 4),
    )
    assert line == (record.model_dump_json() + "\n").encode()
    if not np.isfinite(proba).all():
        return  # the record writes null there, which the log reader refuses, as it did before
    back = RequestLine.model_validate_json(line)  # what the log reader reads
    if keep_inputs:
        np.testing.assert_array_equal(back.inputs.to_array(), x)


def test_the_time_stamp_is_iso_utc_with_microseconds() -> None:
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stamp = utc_now()
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    assert before - dt.timedelta(microseconds=1) <= dt.datetime.fromisoformat(stamp[:-1]) <= after


# -- the request side of the hot path -------------------------------------------------------------------
UINT8_DATA = {
    "flat ints": [0, 255, 7, 8],
    "nested ints": [[0, 255], [7, 8]],
    "booleans among ints": [True, False, 7, 8],
    "integral floats": [0.0, 255.0, 7.0, 8.0],
    "a fraction": [0, 255, 7, 8.5],
    "one over 255": [0, 256, 7, 8],
    "a negative": [0, -1, 7, 8],
    "too few": [0, 1, 2],
    "a string": [0, "1", 2, 3],
}


@pytest.mark.parametrize("case", list(UINT8_DATA))
def test_uint8_pixels_parse_as_numpy_would(case: str) -> None:
    """A flat list of UINT8 pixels takes a shortcut (bytes()); whatever it is, the answer (array or
    error) is the one numpy's general path gives."""
    import json

    from closedloop.serving.protocol import ProtocolError, parse_infer_request

    data = UINT8_DATA[case]

    def parse(payload: object) -> np.ndarray | str:
        body = {"inputs": [{"name": "x", "shape": [1, 2, 2], "datatype": "UINT8", "data": payload}]}
        try:
            return parse_infer_request(json.dumps(body).encode(), None).inputs[0].array
        except ProtocolError as exc:
            return str(exc)

    got = parse(data)
    general = parse([data])  # one more level of nesting: never the shortcut
    if isinstance(general, str):
        assert got == general
    else:
        assert isinstance(got, np.ndarray) and got.dtype == np.uint8 and got.shape == (1, 2, 2)
        np.testing.assert_array_equal(got, general)


def test_new_request_ids_are_random_hex() -> None:
    from closedloop.serving.service import new_request_id

    ids = {new_request_id(None) for _ in range(1000)}
    assert len(ids) == 1000 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert new_request_id("mine") == "mine"
