"""The study's default storage (``work/study.journal``): Optuna's journal format and lock, no fsync per
record (``stages/train/phases/journal.py``); a journal path the user names keeps Optuna's fsync."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from closedloop.stages.train.phases.journal import UnsyncedJournalFile
from closedloop.stages.train.phases.workers import shared_storage


def test_unsynced_journal_is_read_back_by_optunas_own_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fsync(fd: int) -> None:
        raise AssertionError("fsync called")

    path = tmp_path / "study.journal"
    monkeypatch.setattr(os, "fsync", no_fsync)
    study = optuna.create_study(
        study_name="s", storage=JournalStorage(UnsyncedJournalFile(str(path))), direction="maximize"
    )
    study.optimize(lambda t: -((t.suggest_float("x", -1, 1) - 0.3) ** 2), n_trials=5)
    monkeypatch.undo()
    back = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    assert [t.params for t in back.trials] == [t.params for t in study.trials]
    assert back.best_value == study.best_value
    assert not Path(str(path) + ".lock").exists()  # the lock was taken and released for every record


def test_the_stage_journal_skips_fsync_a_named_journal_keeps_it(tmp_path: Path) -> None:
    own = shared_storage(None, tmp_path / "work")
    named = shared_storage(str(tmp_path / "shared" / "study.journal"), tmp_path / "work")
    assert type(own._backend) is UnsyncedJournalFile
    assert type(named._backend) is JournalFileBackend
    assert (tmp_path / "work" / "study.journal").is_file()
