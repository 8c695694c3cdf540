"""The study's default storage: Optuna's journal file, written without an fsync per record and locked
with ``flock`` instead of a lock file made and removed per record.

Optuna's ``JournalFileBackend`` takes its file lock, appends the records and calls ``os.fsync`` for every
write, and a study writes one record per parameter, per reported epoch and per trial state: about 140
writes for one family's selection phases on a small table. On this machine an fsync took about 4.6 ms
against 4 us for the append itself (``benchmarks/profile_tree_stage.py``), so the study's storage was a
fifth of the tree family's selection time (issue #25). :class:`UnsyncedJournalFile` keeps the format
(Optuna's own backend reads the file) and drops the fsync: a record is in the operating system's cache
when the call returns, so a killed process (kill -9, the resume tests) and every other process on the
machine see it at once (the same page cache). Only a crash of the machine itself can lose the last
records, and the resumed run then scores those trials again.

Its lock is :class:`FlockLock`. Optuna's default lock creates a symbolic link per record and renames and
removes it on release: three directory changes per record. Removing it took 3-5 ms inside a training run
on this shared machine (``strace -T``; 20 us in a bare loop), about a fifth of the tree family's selection
time again (session 11, ``docs/results/tree_speed.txt``). ``flock`` on a side file that stays in place
changes no directory, and the kernel drops the lock of a process that dies, so a killed trial never
leaves a stale lock behind.

Used for the journal in the stage's own work folder (``work/study.journal``), which only processes on
this machine share, all through this class (a process of an older closedloop, with Optuna's lock, would
not be excluded by this one: do not join one study from two versions). A journal path the user names
(``storage: /shared/study.journal``, which workers on other machines may join over a network file
system, where ``flock`` may not reach the other machines) keeps Optuna's fsync and lock.
"""

from __future__ import annotations

import json
import os
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock, get_lock_file

try:
    import fcntl
except ImportError:  # no flock (Windows): Optuna's own lock
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".flock"
"""The side file :class:`FlockLock` locks: ``study.journal.flock`` (empty, never removed)."""


class FlockLock(BaseJournalFileLock):
    """An exclusive ``flock`` on ``path`` (created when missing, never removed). The file is opened once
    per process: a forked worker opens its own, since a lock taken through a descriptor inherited over
    ``fork`` would be shared with the parent instead of excluding it."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._pid: int | None = None

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._pid = os.getpid()
        return self._fd

    def acquire(self) -> bool:
        fcntl.flock(self._descriptor(), fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        fcntl.flock(self._descriptor(), fcntl.LOCK_UN)

    # At interpreter shutdown the module's globals (``os`` among them) may already be None when
    # this runs, so the two functions it needs are bound when the class is made.
    def __del__(self, _getpid=os.getpid, _close=os.close) -> None:
        if self._fd is not None and self._pid == _getpid():
            try:  # noqa: SIM105 (contextlib may be gone at shutdown)
                _close(self._fd)
            except OSError:
                pass


class UnsyncedJournalFile(JournalFileBackend):
    """``JournalFileBackend`` whose appends are not followed by ``os.fsync``, locked with
    :class:`FlockLock` on ``<file_path>.flock`` (see the module doc)."""

    def __init__(self, file_path: str, lock_obj: BaseJournalFileLock | None = None) -> None:
        if lock_obj is None and fcntl is not None:
            lock_obj = FlockLock(file_path + LOCK_SUFFIX)
        super().__init__(file_path, lock_obj)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if not hasattr(self, "_lock") or not hasattr(self, "_file_path"):  # another Optuna: its own way
            return super().append_logs(logs)
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock), open(self._file_path, "ab") as f:
            f.write(text.encode("utf-8"))
