"""A tiny run directory (digits CNN + reference profile + task) and a writer of request-log files
following docs/serving.md's format, for the log reader, live monitor and compare-live tests."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "monitor"))

FAST = {"calibration_windows": 20, "window_sizes": [50, 100, 200], "permutations": 20}
_CACHE: dict[str, Any] = {}
T0 = dt.datetime(2026, 11, 30, 21, 0, 0, tzinfo=dt.UTC)


class TinyRun:
    """The run directory plus what the tests need to plant traffic: held-out images and probabilities."""

    def __init__(self, run: Path, X: np.ndarray, y: np.ndarray, proba: np.ndarray, names: list[str]) -> None:
        self.run, self.X, self.y, self.proba, self.names = run, X, y, proba, names


def tiny_run(tmp_path_factory: Any) -> TinyRun:
    """Built once per test session (a few seconds): digits CNN, monitor profile and task artifact."""
    if "run" in _CACHE:
        return _CACHE["run"]
    bundle, model = _digits_model()
    from closedloop.core.stage import _TEST_TOKEN, RunContext
    from closedloop.stages.monitor.stage import BuildMonitorProfile
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    task = build_task_spec(DefineTaskConfig(acceptance={"acc": 0.5}), bundle)
    tmp = tmp_path_factory.mktemp("livelog_run")
    out = BuildMonitorProfile(**FAST).execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp / "ctx", seed=0)
    )
    run = tmp / "runs" / "digits" / "20261130-200000-abcd1234"
    task.save(_mk(run / "stages/01_task/artifacts/task"))
    model.save(run / "stages/05_train/artifacts/model")
    out.reference.save(_mk(run / "stages/07_monitor/artifacts/reference"))
    from serve_fixtures import record_artifact

    for stage, name, obj in (
        ("task", "task", task),
        ("train", "model", model),
        ("monitor", "reference", out.reference),
    ):
        record_artifact(run, stage, name, f"{type(obj).__module__}:{type(obj).__qualname__}")
    test = bundle.unsealed_test(_TEST_TOKEN)  # never seen by the model nor the profile
    proba = model.predict_proba(test.X)
    _CACHE["run"] = TinyRun(run, test.X, test.y, proba, list(bundle.meta.label_names))
    return _CACHE["run"]


def _digits_model() -> tuple[Any, Any]:
    """monitor_helpers' digits CNN, trained briefly on a subset, single-threaded (the cores are shared)."""
    import torch
    from monitor_helpers import digits_setup

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return digits_setup(n_train=600, n_test=400, steps=25)
    finally:
        torch.set_num_threads(threads)


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def tensor(x: np.ndarray) -> dict[str, Any]:
    x = np.ascontiguousarray(x)
    return {
        "shape": list(x.shape),
        "dtype": str(x.dtype),
        "encoding": "base64",
        "data": base64.b64encode(x.tobytes()).decode(),
    }


def stamp(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def request(
    x: np.ndarray | None,
    proba: np.ndarray,
    *,
    t: float,
    route: str = "champion",
    request_id: str | None = None,
    names: list[str] | None = None,
    version: str = "20261130-200000-abcd1234",
    run_dir: str = "/runs/digits/20261130-200000-abcd1234",
) -> dict[str, Any]:
    proba = np.atleast_2d(proba)
    names = names or [str(i) for i in range(proba.shape[1])]
    return {
        "kind": "request",
        "request_id": request_id or uuid.uuid4().hex,
        "time": stamp(t),
        "model_name": "digits",
        "model_version": version,
        "run_dir": run_dir,
        "route": route,
        "variant": "fp32",
        "inputs": None if x is None else tensor(x),
        "proba": proba.tolist(),
        "labels": [names[int(i)] for i in proba.argmax(axis=1)],
        "latency_ms": 1.5,
        "status": "ok",
        "error": None,
    }


def feedback(
    request_id: str, label: Any, *, t: float, index: int = 0, random: bool | None = None
) -> dict[str, Any]:
    rec = {"kind": "feedback", "request_id": request_id, "index": index, "label": label, "time": stamp(t)}
    return rec if random is None else {**rec, "random": random}


def write(log_dir: Path, name: str, records: list[dict[str, Any]], tail: str = "") -> Path:
    """Write records as JSON lines to ``log_dir/name`` (appending), then an optional raw ``tail``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / name
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.write(tail)
    return path
