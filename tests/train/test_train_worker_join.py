"""``closedloop worker CONFIG --storage URL`` joining a leader's study, as separate processes the way a
second machine would (here on one machine): a worker killed with SIGKILL mid-trial has its trial
failed and retried, the leader's phase ends with exactly the declared count and one ledger row per
counted trial; a worker with a different config is refused (exit 2) naming the fields that differ."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import TINY

SRC = Path(__file__).resolve().parents[2] / "src"
N_TRIALS = 6
#: the pruner's first rung is at max_epochs // 6: at 30 a trial lives several epochs after its first
#: report, so a test can catch it mid-trial (at 12, a trial of tens of milliseconds often finished first)
KILLABLE_EPOCHS = 30
TEN_CLASSES = {"ladder": [{"width": 8, "depth": 1}, {"width": 16, "depth": 1}], "sanity_steps": 200}
"""All ten digits (the config's data): a little more capacity than TINY's two-class ladder."""


def write_config(path: Path, runs: str = "runs", **train: Any) -> Path:
    """A digits pipeline (data, task, train) whose runs folder (and test ledger) is next to it."""
    cfg = {
        "name": "joined",
        "seed": 0,
        "runs_dir": str(path.parent / runs),
        "data": {"source": "sklearn", "name": "digits"},
        "stages": [
            {"kind": "task"},
            {
                "kind": "train",
                "params": {**TINY, **TEN_CLASSES, "n_trials": N_TRIALS, "max_epochs": 12, **train},
            },
        ],
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def cli(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """``closedloop ARGS`` in its own process (this package's source first on the path)."""
    full_env = {**os.environ, "PYTHONPATH": str(SRC), "CI": "1", **env}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "closedloop", *args], env=full_env, stdout=out, stderr=subprocess.STDOUT
        )


def open_study(storage: Any, name: str | None = None) -> Any:
    """The leader's study once its tune phase opened it (None before)."""
    import optuna

    from closedloop.stages.train.phases.joining import OPEN_ATTR

    try:
        for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False):
            if s.user_attrs.get(OPEN_ATTR) and name in (None, s.study_name):
                return optuna.load_study(study_name=s.study_name, storage=storage)
    except Exception:  # the storage is being created
        return None
    return None


def kill_worker_mid_trial(
    storage: Any, worker: subprocess.Popen, name: str | None = None, timeout: float = 240
) -> int:
    """SIGKILL ``worker`` once it runs a trial that reported an epoch; the trial's number."""
    import optuna

    t_end, study = time.time() + timeout, None
    while time.time() < t_end and worker.poll() is None:
        # a tiny trial lives for a few tens of milliseconds after its first report: open the study
        # once, then poll only its running trials
        study = study or open_study(storage, name)
        if study is None:
            time.sleep(0.05)
            continue
        time.sleep(0.005)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            who = str(t.user_attrs.get("worker", "")).split(":")
            if (
                len(who) == 3
                and who[1] == str(worker.pid)
                and who[2] == str(t.number)
                and t.intermediate_values
            ):
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
                return t.number
    raise AssertionError(f"the joined worker never ran a trial (exit {worker.poll()})")


def check_study_and_run(storage: Any, run: Path, killed: int | None, name: str | None = None) -> Any:
    """Exactly N counted trials, the killed one failed (not counted) and retried with its parameters,
    one ledger row per counted trial, the report's decision naming the joined trials."""
    import optuna

    from closedloop.stages.train.phases.joining import FINGERPRINT_ATTR, OPEN_ATTR

    (name,) = [
        s.study_name
        for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)
        if FINGERPRINT_ATTR in s.user_attrs and name in (None, s.study_name)
    ]
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.user_attrs[OPEN_ATTR] is False  # the leader closed it when the phase ended
    trials = study.get_trials()
    counted = [t for t in trials if t.state != optuna.trial.TrialState.FAIL or t.user_attrs.get("failure")]
    assert len(counted) == N_TRIALS, [(t.number, t.state.name) for t in trials]
    dead = next((t for t in trials if t.number == killed), None)
    if dead is not None:
        assert dead.state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    if dead is not None and dead.state == optuna.trial.TrialState.FAIL:  # else the pruner ended it first
        retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
        assert len(retry) == 1 and retry[0] in counted and retry[0].params == dead.params
    rows = [
        json.loads(line)["description"]
        for line in (run / "validation_ledger.jsonl").read_text().splitlines()
        if "tuning trial" in line
    ]
    assert len(rows) == len(set(rows)) == N_TRIALS
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok"
    decisions = [d["decision"] for d in summary["stages"]["train"]["decisions"] if d["phase"] == "tune"]
    assert any("joined `closedloop worker`" in d for d in decisions), decisions
    return study


def finished_by(log: Path) -> list[int]:
    """The counted trials a ``closedloop worker`` says it finished (its last line), [] if none."""
    found = (
        re.findall(r"this worker finished \d+ trial\(s\) \[([\d, ]*)\]", log.read_text())
        if log.is_file()
        else []
    )
    return [int(n) for n in found[-1].split(",") if n.strip()] if found else []


def check_joined(study: Any, run: Path, finished: list[int]) -> None:
    """Every trial a joined worker says it finished (``finished``) is counted in the study, and the
    leader copied the logits of each one that completed into work/ (a pruned or failed trial has none). A worker
    that joins after the leader's own workers took every trial, which a loaded machine can cause,
    finished none: then there is nothing to check for it."""
    import optuna

    from closedloop.stages.train.phases.workers import counted

    by_number = {t.number: t for t in study.get_trials()}
    work = next(run.glob("stages/*train/work"))
    for n in finished:
        t = by_number[n]
        assert counted(t), f"trial {n}, which a joined worker finished, is {t.state.name} and not counted"
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.user_attrs.get("val_logits"), f"trial {n} carries no logits for the leader"
            assert (work / "trials" / f"{n}.npy").is_file(), f"the leader did not copy trial {n}'s logits"
    carried = [t.number for t in by_number.values() if t.user_attrs.get("val_logits")]
    assert all((work / "trials" / f"{n}.npy").is_file() for n in carried), (
        "a joined trial's logits were not copied"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)  # separate processes, each starting torch, on a loaded CI machine
def test_joined_worker_killed_mid_trial_on_journal_file_exact_count_and_mismatch_refused(tmp_path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.journal"
    config = write_config(tmp_path / "joined.yaml", max_epochs=KILLABLE_EPOCHS)
    run = tmp_path / "run"
    leader = cli(
        ["run", str(config), "--storage", str(journal), "--workers", "1", "--out", str(run)],
        tmp_path / "leader.log",
    )
    worker = cli(["worker", str(config), "--storage", str(journal), "--wait", "300"], tmp_path / "worker.log")
    # a worker whose config differs from the leader's is refused before any trial, once the study opens
    other = cli(
        ["worker", str(config), "--storage", str(journal), "--set", "train.lr=0.01", "--wait", "300"],
        tmp_path / "other.log",
    )
    # a second worker that lives through the phase and helps finish it
    second = cli(["worker", str(config), "--storage", str(journal), "--wait", "300"], tmp_path / "second.log")
    try:
        storage = None
        while storage is None or open_study(storage) is None:
            time.sleep(0.2)
            assert leader.poll() is None, (tmp_path / "leader.log").read_text()
            if journal.is_file():
                storage = JournalStorage(JournalFileBackend(str(journal)))
        killed = kill_worker_mid_trial(storage, worker)
        assert other.wait(timeout=240) == 2
        err = (tmp_path / "other.log").read_text()
        assert "fingerprint mismatch" in err and "train.lr: 0.003 (leader) vs 0.01 (this worker)" in err, err
        assert leader.wait(timeout=600) == 0, (tmp_path / "leader.log").read_text()
        assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()
    finally:
        for p in (leader, worker, other, second):
            if p.poll() is None:
                p.kill()
                p.wait()
    # the killed worker's trial was a joined worker's; the second one may find every trial taken
    check_joined(check_study_and_run(storage, run, killed), run, finished_by(tmp_path / "second.log"))
    assert "counted trials" in (tmp_path / "second.log").read_text()


def test_worker_refuses_a_storage_it_cannot_join(tmp_path, capsys) -> None:
    from closedloop.cli import main

    config = write_config(tmp_path / "joined.yaml")
    for storage, expected in (
        (f"sqlite:///{tmp_path}/x.db", "SQLite, which several worker processes cannot share"),
        ("redis-ish://nowhere", "not a storage URL closedloop can use"),
        ("postgresql://u:secret@127.0.0.1:1/db", "cannot reach 'postgresql://u:***@127.0.0.1:1/db'"),
    ):
        assert main(["worker", str(config), "--storage", storage, "--wait", "1"]) == 2
        err = capsys.readouterr().err
        assert expected in err and "--storage" in err and "secret" not in err, err
