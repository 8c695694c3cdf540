"""The request log's lines, encoded straight from what a scored request produced.

A line is byte for byte what ``RequestRecord(...).model_dump_json()`` writes (the log's format:
``closedloop.monitoring.requestlog``; ``tests/serving/test_serve_log_lines.py`` checks the equality),
but without building two pydantic models per request and dumping them again: on the server's hot
path that cost about 30 us a request, a sixth of the model call (``benchmarks/profile_serve_path.py``).
The fields are written in the record's own order, through the same JSON encoder (pydantic-core's).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic_core import to_json

if TYPE_CHECKING:
    from closedloop.serving.model import ServedModel

_DTYPE_NAMES: dict[np.dtype, str] = {}
"""numpy's name of each dtype seen (``dtype.name`` is computed anew on every read)."""


def logged_input(x: np.ndarray) -> dict[str, Any]:
    """``LoggedArray.from_array(x)`` as the dict its JSON is written from."""
    arr = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
    name = _DTYPE_NAMES.get(arr.dtype)
    if name is None:
        name = _DTYPE_NAMES[arr.dtype] = arr.dtype.name
    return {
        "shape": list(arr.shape),
        "dtype": name,
        "encoding": "base64",
        "data": base64.b64encode(arr.tobytes()).decode("ascii"),
    }


def request_line(
    model: ServedModel,
    route: str,
    request_id: str,
    time: str,
    x: np.ndarray | None,
    proba: np.ndarray,
    labels: list[Any],
    latency_ms: float,
) -> bytes:
    """One answered request's record (status ``ok``) as a JSON line; ``x`` None when the server keeps
    no inputs (``--log-inputs none``)."""
    return (
        to_json(
            {
                "kind": "request",
                "request_id": request_id,
                "time": time,
                "model_name": model.name,
                "model_version": model.version,
                "run_dir": str(model.run_dir),
                "route": route,
                "variant": model.variant,
                "inputs": None if x is None else logged_input(x),
                "proba": proba.tolist(),
                "labels": labels,
                "latency_ms": round(latency_ms, 4),
                "status": "ok",
                "error": None,
            },
            inf_nan_mode="null",  # what the record's own dump writes for a NaN or infinite output
        )
        + b"\n"
    )
