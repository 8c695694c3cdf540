"""Tuning trials in several worker processes on one Optuna study (journal file): exact trial count,
one ledger row per configuration, a worker killed with SIGKILL mid-trial, and the refused inputs."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

from closedloop.stages.train import TrainModel

from .conftest import TINY, make_ctx


def _tune_rows(ctx) -> list[str]:
    return [
        e["description"]
        for e in ctx.validation_ledger.entries()
        if e["description"].startswith("tuning trial")
    ]


def _study(work):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(work / "study.journal")))
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def _journal_study(work):
    return _study(work) if (work / "study.journal").is_file() else None


def killer(load_study, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first worker seen running a trial (after its first epoch was reported)."""
    import optuna

    study = None
    while not stop.is_set() and not killed:
        # a tiny trial lives for a few epochs of tens of milliseconds: open the study once, then poll
        # only its running trials
        time.sleep(0.005 if study is not None else 0.02)
        try:
            study = study or load_study()
            if study is None:
                continue
            trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        except Exception:  # the journal is being created
            continue
        for t in trials:
            pid = t.user_attrs.get("pid")
            if pid and t.intermediate_values and _still_running_when_frozen(study, t.number, pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(t.number)
                return


def _still_running_when_frozen(study, number: int, pid: int) -> bool:
    """Freeze the worker and look again: the trial read as running may have completed since (a kill
    then lands between trials and interrupts nothing, the race CI found). True: the worker stays
    frozen, for the caller's SIGKILL; False: it runs on."""
    import optuna

    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    time.sleep(0.05)  # a state write the worker sent before it froze lands before we look
    try:
        running = {
            u.number for u in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        }
    except Exception:  # the storage is busy: let the worker go on and look at the next poll
        running = set()
    if number in running:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
    return False


@pytest.mark.slow
def test_two_workers_one_killed_mid_trial_exact_count_each_configuration_once(
    binary_digits, binary_task, tmp_path
) -> None:
    import optuna

    n = 4
    ctx = make_ctx(tmp_path)
    # max_epochs 30: the pruner's first rung at epoch 5 leaves a trial several epochs for the killer
    stage = TrainModel(**{**TINY, "n_trials": n, "max_epochs": 30, "workers": 2})
    work = tmp_path / "work"
    killed: list[int] = []
    stop = threading.Event()
    th = threading.Thread(target=killer, args=(lambda: _journal_study(work), killed, stop), daemon=True)
    th.start()
    try:
        out = stage.execute({"data": binary_digits, "task": binary_task}, ctx)
    finally:
        stop.set()
        th.join()
    assert killed, "the test did not manage to kill a worker mid-trial"
    study = _study(work)
    trials = study.get_trials()
    counted = [t for t in trials if t.state != optuna.trial.TrialState.FAIL or t.user_attrs.get("failure")]
    assert len(counted) == n  # the killed trial was retried: exactly the declared count
    dead = next(t for t in trials if t.number == killed[0])
    assert dead.state == optuna.trial.TrialState.FAIL and not dead.user_attrs.get("failure")
    rows = _tune_rows(ctx)
    assert len(rows) == n and len(set(rows)) == n  # every counted trial in the ledger, once
    assert all(f"trial {killed[0]}" not in r.split(" (")[0] + " " for r in rows)
    s = stage.summarize(out)
    assert s["n_configs"] == ctx.validation_ledger.count("train")
    assert "auc" in s["test"]


def test_workers_refuse_sqlite_malformed_url_and_more_workers_than_trials() -> None:
    from closedloop.core.errors import ConfigError

    with pytest.raises(ConfigError, match="SQLite, which several worker processes cannot share"):
        TrainModel(**{**TINY, "workers": 2, "storage": "sqlite:////tmp/x.db"})
    with pytest.raises(ConfigError, match="not a storage URL closedloop can use"):
        TrainModel(**{**TINY, "storage": "postgres-ish://nowhere"})
    with pytest.raises(ConfigError, match="workers: 3 is more than n_trials: 2"):
        TrainModel(**{**TINY, "workers": 3})


def test_unreachable_storage_fails_before_training(binary_digits, binary_task, tmp_path) -> None:
    from closedloop.core.errors import ConfigError

    url = "postgresql://u:p@127.0.0.1:1/db"  # port 1: nothing listens
    t0 = time.time()
    with pytest.raises(ConfigError, match="cannot reach|database driver"):
        TrainModel(**{**TINY, "storage": url}).execute(
            {"data": binary_digits, "task": binary_task}, make_ctx(tmp_path)
        )
    assert time.time() - t0 < 10
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_cli_workers_more_than_trials_exits_2_naming_the_field(tmp_path, capsys) -> None:
    from pathlib import Path

    from closedloop.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    rc = main(["run", str(config), "--workers", "99", "--out", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "train.workers" in err and "99 is more than n_trials" in err
    assert not (tmp_path / "run").exists()


def test_a_running_trial_that_never_named_its_process_is_failed_and_retried(tmp_path) -> None:
    """A process that died between creating a trial and naming itself (the database went away in that
    moment) leaves a RUNNING trial no pid check or heartbeat reaches: once old enough it is retried,
    while a trial a live process named is left alone."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from closedloop.stages.train.phases import workers as W

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))
    study = optuna.create_study(study_name="orphans", storage=storage)
    orphan = study.ask()  # never named: its creator is gone
    named = study.ask()
    named.set_user_attr(W.WORKER, W.worker_id(named.number))  # this live process
    assert W.fail_lost(study) == []  # younger than the grace: its creator may still name it
    assert W.fail_lost(study, orphan_seconds=0) == [orphan.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert states[named.number] == optuna.trial.TrialState.RUNNING
    retry = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert [W.origin(t) for t in retry] == [orphan.number]


def test_a_queued_retry_holds_its_place_so_a_fresh_trial_beside_it_is_surplus() -> None:
    """The race seen once in the server-lost test: a retry is queued (WAITING, the lower number) just as
    another process creates a fresh trial; the fresh trial must count the queued retry, or both run and
    the study ends with one counted trial too many."""
    import optuna

    from closedloop.stages.train.phases import workers as W

    study = optuna.create_study()
    for _ in range(4):  # four counted trials of five
        trial = study.ask()
        study.tell(trial, 0.5)
    study.enqueue_trial({})  # the retry of a lost trial, queued: number 4
    earlier = study.get_trials(deepcopy=False)
    assert [t.state for t in earlier].count(optuna.trial.TrialState.WAITING) == 1
    assert W.taken(earlier) == 5  # the fresh trial (number 5) sees five places taken: surplus at n_trials 5
