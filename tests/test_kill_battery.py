"""The kill battery: a tiny quickstart-like pipeline killed with SIGKILL inside every train phase, the
audit and the export, resumed each time, ends identical to an uninterrupted run (weights and ONNX
sha256, ledgers, summary metrics). Plus the bad input of a resume: a damaged work file, a changed
config or code version.

Kill points are named places (:mod:`closedloop.core.killpoints`), not moments: the run kills itself
when ``CLOSEDLOOP_KILL_AT`` names the point it reaches, so the test never guesses a timing. The kills
are chained: the run killed at point 1 is resumed with point 2 armed, and so on, then resumed to the
end, so one test covers every point (and resuming an already resumed run) for the cost of ~2 runs,
against one uninterrupted reference run shared by both tests, which runs in the background beside
the chain (CI time: the battery's wall time is the chain's alone where a second core is free). One
point per phase (every resume after the first restores the finished phases from their work files,
the path a kill between two phases takes), and the smallest settings that still reach every point: each point costs a process
start and the redone part of its phase. The budget is far above what the run needs: the trial and
epoch counts, not the clock, end each phase.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from closedloop.core.killpoints import cli_command, fingerprint_differences, resume_fingerprint, run_cli

pytestmark = pytest.mark.slow

KILL_CHAIN = [
    "audit/label_issues/cnn/fold1/epoch0",  # inside the audit's cross-fitted CNN (a worker thread)
    "train/sanity/step3",
    "train/beat_baseline/epoch1",
    "train/scale_up/rung2/epoch1",  # rung 1 is finished and in the ledger: it must not count twice
    "train/tune/trial1/epoch1",  # inside the second trial (the first is in the study and the ledger)
    "train/final/member0/epoch1",  # after the final fit's first checkpoint
    "export/fp32",  # the fp32 ONNX written, the int8 variant and the latency not yet
]


def write_data(root: Path) -> None:
    """Digits 0-9 as 28x28 'breastmnist' images (label: digit >= 5), 300/100/100 per split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.target))
    small = (d.images * (255 / 16)).round().astype(np.uint8)
    big = np.pad(np.kron(small, np.ones((3, 3), np.uint8)), ((0, 0), (2, 2), (2, 2)))
    arrays = {}
    for name, part in (("train", idx[:300]), ("val", idx[300:400]), ("test", idx[400:500])):
        arrays[f"{name}_images"] = big[part]
        arrays[f"{name}_labels"] = (d.target[part] >= 5).astype(np.uint8).reshape(-1, 1)
    np.savez(root / "breastmnist.npz", **arrays)


def config(root: Path, runs: Path) -> dict[str, Any]:
    return {
        "name": "kill_battery",
        "seed": 0,
        "runs_dir": str(runs),
        "data": {"source": "medmnist", "flag": "breastmnist", "root": str(root), "download": False},
        "stages": [
            {"kind": "task"},
            {
                "kind": "audit",
                "params": {
                    "checks": [
                        "samples",
                        "class_balance",
                        "duplicates",
                        {
                            "name": "label_issues",
                            "params": {"folds": 2, "cnn_epochs": 1, "cnn_min_steps": 1, "jobs": 1},
                        },
                    ]
                },
            },
            {"kind": "baseline", "params": {"knn": False}},
            {
                "kind": "train",
                "params": {
                    "preset": "quick",
                    "budget_minutes": 60,
                    "ladder": [{"width": 4}, {"width": 8}],
                    "baseline_epochs": 2,
                    "ladder_epochs": 2,
                    "n_trials": 2,
                    "max_epochs": 3,
                    "sanity_steps": 60,
                    "sanity_lr": 0.01,
                    "batch_size": 64,
                    "min_steps_per_epoch": 0,
                    "n_bootstrap": 100,
                    "threads": 1,
                    "ablate_knobs": 1,
                },
            },
            {"kind": "export", "params": {"latency": {"repeats": 5, "warmup": 1}, "bootstrap": 50}},
        ],
    }


@dataclass
class Reference:
    """The uninterrupted run, started in the background: the kill chain runs beside it (the battery's
    wall time is the chain's, not the chain's plus the reference's, where a second core is free)."""

    tmp: Path
    proc: subprocess.Popen[bytes]

    def wait(self) -> Path:
        rc = self.proc.wait(timeout=900)
        assert rc == 0, (self.tmp / "ref.stderr").read_text()[-3000:]
        return self.tmp / "ref"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    tmp = tmp_path_factory.mktemp("kill")
    write_data(tmp)
    ref_cfg = tmp / "ref.yaml"
    ref_cfg.write_text(yaml.safe_dump(config(tmp, tmp / "runs_ref")))
    cmd, env = cli_command([str(ref_cfg), "--out", str(tmp / "ref")], log=tmp / "points.txt")
    with (tmp / "ref.stderr").open("wb") as err:  # a file, not a pipe: a full pipe would stall it
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield Reference(tmp, proc)
    finally:
        if proc.poll() is None:  # a failed test left it running
            proc.kill()
            proc.wait()


@pytest.mark.timeout(1800)  # eight CLI runs, the uninterrupted one beside them
def test_killed_in_every_phase_and_resumed_is_identical(setup: Reference) -> None:
    tmp = setup.tmp
    cfg = tmp / "kill.yaml"
    cfg.write_text(yaml.safe_dump(config(tmp, tmp / "runs_kill")))
    run = tmp / "killed"
    for i, point in enumerate(KILL_CHAIN):
        args = [str(cfg), "--out", str(run)] if i == 0 else ["--resume", str(run)]
        got = run_cli(args, kill_at=point, timeout=900)
        assert got.returncode == -signal.SIGKILL, (
            f"not killed at {point}: rc {got.returncode}\n{got.stderr[-2000:]}"
        )
    last = run_cli(["--resume", str(run)], timeout=900)
    assert last.returncode == 0, last.stderr[-3000:]
    expected, actual = resume_fingerprint(setup.wait()), resume_fingerprint(run)
    assert any(k.endswith(".onnx") for k in expected["files"]), expected["files"]
    assert any("train" in k for k in expected["files"]), expected["files"]
    assert fingerprint_differences(expected, actual) == []
    train_dir = next((run / "stages").glob("*_train"))
    timings = json.loads((train_dir / "stage.json").read_text())["timings"]
    assert timings["attempts"] == 6  # sanity, beat_baseline, scale_up, tune, final, the end
    decisions = [
        d["decision"]
        for d in json.loads((train_dir / "artifacts" / "evaluation" / "artifact.json").read_text())[
            "decisions"
        ]
    ]
    assert any(d.startswith("resumed after an interruption (attempt 2) with ") for d in decisions), decisions


@pytest.mark.timeout(900)  # the uninterrupted run, when this test runs alone
def test_every_kill_point_is_on_the_uninterrupted_path(setup: Reference) -> None:
    setup.wait()
    reached = set((setup.tmp / "points.txt").read_text().split())
    assert not [p for p in KILL_CHAIN if p not in reached], sorted(reached)
