"""Deterministic crash points for the kill battery (``tests/test_kill_battery.py``).

A run started with ``CLOSEDLOOP_KILL_AT=<point>`` sends itself SIGKILL when it reaches the named
point: no clean-up, no ``finally``, like a crash or a pre-empted machine, but at a place a test can
name instead of a moment it must guess. Points are ``<stage>/<where>`` paths, e.g.
``train/tune/trial1/epoch1`` (after that epoch's work is done). With ``CLOSEDLOOP_KILL_LOG=<file>``
every point reached is appended to the file (how the battery lists the points of a run). Unset, a
point costs one dictionary lookup. :func:`run_cli` runs a pipeline armed to die at a point, and
:func:`resume_fingerprint` says what a resumed run must share with an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

KILL_AT = "CLOSEDLOOP_KILL_AT"
KILL_LOG = "CLOSEDLOOP_KILL_LOG"


def kill_point(name: str) -> None:
    """Die here (SIGKILL) when ``$CLOSEDLOOP_KILL_AT`` names this point."""
    log = os.environ.get(KILL_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# -- running a pipeline killed at a point, and what must be identical after the resume ---------------
# (shared by tests/test_kill_battery.py and benchmarks/bench_train_resume.py)


def run_cli(
    args: list[str],
    *,
    kill_at: str | None = None,
    log: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``closedloop run ARGS`` in a subprocess with this package's source first on the path, armed to
    die at ``kill_at`` (SIGKILL: its return code is ``-signal.SIGKILL``) and listing the points it
    passes in ``log``."""
    cmd, env = cli_command(args, kill_at=kill_at, log=log)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def cli_command(
    args: list[str], *, kill_at: str | None = None, log: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment :func:`run_cli` runs (for a caller that kills it itself)."""
    src = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(src), "CI": "1"}
    env.pop(KILL_AT, None)
    env.pop(KILL_LOG, None)
    if kill_at:
        env[KILL_AT] = kill_at
    if log:
        env[KILL_LOG] = str(log)
    return [sys.executable, "-m", "closedloop", "run", *args], env


def resume_fingerprint(run: Path) -> dict[str, Any]:
    """What a resumed run must share with an uninterrupted one (docs/training.md, "Resume"): the sha256
    of every model weight file and ONNX file, the validation and test ledgers without their times,
    and the train stage's summary metrics."""
    run = Path(run)
    files = {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((run / "stages").rglob("*"))
        if p.is_file()
        and (p.suffix == ".onnx" or (p.parent.name == "model" and "artifacts" in p.parts))
        and ".tmp" not in str(p)
    }

    def lines(name: str, drop: tuple[str, ...]) -> list[dict[str, Any]]:
        rows = [json.loads(x) for x in (run / name).read_text(encoding="utf-8").splitlines() if x.strip()]
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    train = json.loads((run / "summary.json").read_text(encoding="utf-8"))["stages"]["train"]
    keys = ("test", "val", "heldout", "temperature", "threshold", "n_configs", "model")
    return {
        "files": files,
        "validation_ledger": lines("validation_ledger.jsonl", ("time",)),
        "test_ledger": lines("test_ledger.jsonl", ("time", "run_id")),
        "metrics": {k: train.get(k) for k in keys},
    }


def fingerprint_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """The parts of two :func:`resume_fingerprint` results that differ (empty: identical)."""
    return [k for k in expected if expected[k] != actual.get(k)]
