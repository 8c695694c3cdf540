"""A forked tuning worker that never returns (e.g. it was forked while another thread of the leader held
a lock it needs) does not make the leader wait forever: once the study holds its trials, the leader
stops it after a grace period, and counts it as stopped, not as a death to retry."""

from __future__ import annotations

import logging
import os
import time

from closedloop.stages.train.phases import workers as W


def test_a_hung_fork_is_stopped_once_the_study_is_complete(tmp_path, caplog) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = str(tmp_path / "study.journal")
    storage = JournalStorage(JournalFileBackend(journal))
    study = optuna.create_study(study_name="s", storage=storage)
    n = 3
    flag = tmp_path / "hung"

    def run_trials() -> None:
        try:  # the first fork to get here hangs, as a deadlocked one would
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            own = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(journal)))
            while len([t for t in own.get_trials() if W.counted(t)]) < n:
                own.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
            return
        time.sleep(3600)

    log = logging.getLogger("closedloop.test.straggler")
    with caplog.at_level(logging.WARNING, logger=log.name):
        deaths = W.run_workers(study, 2, n, run_trials, log, straggler_grace=1.0)
    assert deaths == 0  # stopped, not died: nothing was retried
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n
    assert "had not returned" in caplog.text and "stopped it" in caplog.text


def test_healthy_workers_are_never_stopped(tmp_path, caplog) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = str(tmp_path / "study.journal")
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(journal)))

    def run_trials() -> None:
        own = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(journal)))
        while len([t for t in own.get_trials() if W.counted(t)]) < 4:
            own.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)

    log = logging.getLogger("closedloop.test.straggler")
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert W.run_workers(study, 2, 4, run_trials, log, straggler_grace=30.0) == 0
    assert "had not returned" not in caplog.text
