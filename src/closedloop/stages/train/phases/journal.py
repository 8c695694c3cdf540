"""The study's default storage: Optuna's journal file, written without an fsync per record.

Optuna's ``JournalFileBackend`` takes its file lock, appends the records and calls ``os.fsync`` for every
write, and a study writes one record per parameter, per reported epoch and per trial state: about 140
writes for one family's selection phases on a small table. On this machine an fsync took about 4.6 ms
against 4 us for the append itself (``benchmarks/profile_tree_stage.py``), so the study's storage was a
fifth of the tree family's selection time (issue #25). :class:`UnsyncedJournalFile` keeps the lock and
the format (Optuna's own backend reads the file) and drops only the fsync: a record is in the operating
system's cache when the call returns, so a killed process (kill -9, the resume tests) and every other
process on the machine see it at once (the same page cache). Only a crash of the machine itself can lose
the last records, and the resumed run then scores those trials again.

Used for the journal in the stage's own work folder (``work/study.journal``), which only processes on
this machine share; a journal path the user names (``storage: /shared/study.journal``, which workers on
other machines may join over a network file system) keeps Optuna's fsync.
"""

from __future__ import annotations

import json
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file


class UnsyncedJournalFile(JournalFileBackend):
    """``JournalFileBackend`` whose appends are not followed by ``os.fsync`` (see the module doc)."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if not hasattr(self, "_lock") or not hasattr(self, "_file_path"):  # another Optuna: its own way
            return super().append_logs(logs)
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock), open(self._file_path, "ab") as f:
            f.write(text.encode("utf-8"))
