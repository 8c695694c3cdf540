"""Tuning trials in several processes sharing one Optuna study (``train: {workers: N}`` or
``closedloop run CONFIG --workers N``).

The leader (the process running the pipeline) owns the run directory, every phase before and after
tuning, the validation ledger and the report. For the tune phase it forks N worker processes (one
torch thread each) that only run trials: ask the shared study, fit, tell. The leader watches them: a
worker that dies (kill -9, out of memory) has its RUNNING trials marked FAIL (``killed``) and a fresh
worker takes its place, so the phase ends with exactly the declared number of counted trials. The
ledger is written by the leader from ``study.trials`` after the workers are done: every configuration
any worker scored, once.

Storage: several processes need a storage they can share safely. The default is Optuna's journal file
in the stage's work folder (or a ``.journal`` path the user names); an RDB URL (PostgreSQL) works too;
SQLite is refused (Optuna's FAQ: parallel writers hit "database is locked"). Seeds come from the trial's
number (``core.seeds``; a retried trial: the number of the trial it retries), never from which worker
ran it.

Liveness: every running trial carries ``worker`` = ``host:pid:number``. A trial whose process is gone is
failed (not counted) and queued again with the same parameters (Optuna's
``RetryHeartbeatStaleTrialCallback``): on this host by a pid check that any worker or the leader runs
(:func:`fail_lost`), across machines by Optuna's RDB heartbeat (``heartbeat_interval`` /
``grace_period``; the journal storage has no heartbeat in Optuna 5). A running trial that never got
its ``worker`` attribute (its process died in the moment between creating and naming it, e.g. as the
database went away) is failed and retried by any process once it is ``ORPHAN_SECONDS`` old.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from closedloop.core.errors import ConfigError, StageFailedError

# user attr a worker sets on a trial it fails itself (e.g. non-finite loss): such a trial counts. A FAIL
# trial without it was killed with its worker (the leader failed it) or was surplus: retried, not counted.
FAILURE = "failure"
RDB_SCHEMES = ("postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")
JOURNAL_SUFFIX = ".journal"
WORKER = "worker"  # user attr of a running trial: host:pid:number of the process running it
# a running trial without WORKER this old was created by a process that died before naming itself
ORPHAN_SECONDS = 60.0
# a fork still alive this long after the study held its trials is stuck (see StragglerWatch)
STRAGGLER_SECONDS = 60.0


def is_journal(url: str | None) -> bool:
    """A journal file path (``/shared/study.journal``): Optuna's append-only file storage."""
    return url is not None and "://" not in url and url.endswith(JOURNAL_SUFFIX)


def is_shared(url: str | None) -> bool:
    """A storage other processes (``closedloop worker``) can join: an RDB URL or a journal file."""
    return url is not None and (is_journal(url) or urlparse(url).scheme in RDB_SCHEMES)


def redact(url: str) -> str:
    """The URL without its password (for messages and the report)."""
    p = urlparse(url)
    if p.password:
        return url.replace(f":{p.password}@", ":***@", 1)
    return url


def storage_problem(url: str | None, workers: int) -> str | None:
    """Why ``url`` cannot serve ``workers`` processes (a storage they cannot share, a malformed URL),
    checked with the config, before any work starts; None when it can."""
    if url is None or is_journal(url):
        return None
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        if workers > 1:
            return (
                f"train.storage: {url!r} is SQLite, which several worker processes cannot share "
                f"(workers: {workers}; Optuna's FAQ: 'database is locked'). Leave storage unset for the "
                "journal file default, or give a postgresql:// URL"
            )
        return None
    if scheme not in RDB_SCHEMES:
        return (
            f"train.storage: {url!r} is not a storage URL closedloop can use; expected "
            "postgresql://user:password@host:port/db, a path ending in .journal (Optuna's journal file), "
            "or sqlite:///path for one process"
        )
    parsed = urlparse(url)
    if not parsed.hostname or not parsed.path.strip("/"):
        return f"train.storage: {url!r} needs a host and a database name (postgresql://host:port/db)"
    return None


def rdb_url(url: str) -> str:
    """``postgresql://`` with the driver of the ``scale`` extra (SQLAlchemy 2.1 would pick psycopg 3)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def check_reachable(url: str) -> None:
    """Connect once (5 s timeout) so an unreachable server fails with one clear message."""
    if is_journal(url) or urlparse(url).scheme == "sqlite":
        return
    try:
        import sqlalchemy
    except ImportError as exc:  # pragma: no cover - optuna depends on sqlalchemy
        raise ConfigError(f"train.storage: {url!r} needs sqlalchemy: {exc}") from exc
    try:
        engine = sqlalchemy.create_engine(rdb_url(url), connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"train.storage: {url!r} needs the database driver ({exc.name}): pip install 'closedloop[scale]'"
        ) from exc
    except Exception as exc:
        raise ConfigError(f"train.storage: cannot reach {redact(url)!r}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shared_storage(url: str | None, work: Path, heartbeat: int | None = None) -> Any:
    """The Optuna storage object several processes share: the journal file by default. An RDB gets
    Optuna's heartbeat (a running trial records one every ``heartbeat`` seconds; silent for three
    times that, it is failed and queued again) and a connection check before each use (a server that
    restarted is reconnected to)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None:  # the stage's own journal: processes on this machine only (no fsync per record)
        from closedloop.stages.train.phases.journal import UnsyncedJournalFile

        work.mkdir(parents=True, exist_ok=True)
        return JournalStorage(UnsyncedJournalFile(str(work / "study.journal")))
    if is_journal(url):
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if urlparse(url).scheme.startswith("postgresql"):
        engine["connect_args"] = {"connect_timeout": 5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            rdb_url(url),
            engine_kwargs=engine,
            heartbeat_interval=heartbeat,
            grace_period=None if heartbeat is None else 3 * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
        )


HOST_ENV = "CLOSEDLOOP_WORKER_HOST"
"""The name a process gives its machine in ``worker`` (default: the host name). Two containers that
share a host name need distinct ones; the tests use it to stand for another machine."""


def host_name() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def worker_id(number: int) -> str:
    """``host:pid:number``: which process runs trial ``number`` (the number ties it to this trial: a
    retried trial inherits its predecessor's user attributes until its own process overwrites them)."""
    return f"{host_name()}:{os.getpid()}:{number}"


def origin(t: Any) -> int:
    """The trial a retried trial repeats (its seed's number); the trial's own number otherwise."""
    first = t.system_attrs.get("failed_trial")
    return int(first) if first is not None else int(t.number)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        return True
    return True


def _orphaned(t: Any, now: datetime, orphan_seconds: float) -> bool:
    """A running trial that never got its ``worker`` attribute: its process died between creating it
    and naming itself (the first thing a trial does), e.g. when the database went away in that moment.
    No pid check or heartbeat can ever reach it, so once it is ``orphan_seconds`` old it is lost.
    (Ages compare the creating machine's clock with this one's: keep the grace above their skew.)"""
    if WORKER in t.user_attrs or t.datetime_start is None:
        return False
    return (now - t.datetime_start).total_seconds() >= orphan_seconds


def fail_lost(study: Any, orphan_seconds: float = ORPHAN_SECONDS) -> list[int]:
    """Fail the running trials whose process is gone and queue each again with the same parameters:
    elsewhere by the RDB heartbeat (Optuna's ``fail_stale_trials``), on this host by pid, anywhere
    when a trial never named its process (:func:`_orphaned`). Returns the numbers failed here (another
    process may have failed one first: it is skipped)."""
    import optuna

    running = (optuna.trial.TrialState.RUNNING,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat storages only; retried by the callback
    failed: list[int] = []
    host, now = host_name(), datetime.now()  # optuna stamps trials with the local naive time
    for t in study.get_trials(deepcopy=True, states=running):
        who = str(t.user_attrs.get(WORKER, "")).split(":")
        mine_and_dead = (
            len(who) == 3 and who[0] == host and who[2] == str(t.number) and not _alive(int(who[1]))
        )
        if not mine_and_dead and not _orphaned(t, now, orphan_seconds):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # no FAILURE attr: not counted
        except Exception:  # another process failed it first; it queued the retry
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback()(study, t)
        failed.append(t.number)
    return failed


def taken(trials: list[Any]) -> int:
    """Trials that hold a place among ``n_trials``: counted, running, or queued to run. A queued
    (WAITING) trial holds its place: a retry queued while another process creates a fresh trial gets
    the lower number, so the fresh one must see the retry, or both run and the study ends one over.

    >>> import optuna
    >>> study = optuna.create_study()
    >>> study.enqueue_trial({})
    >>> taken(study.get_trials())
    1
    """
    import optuna

    st = optuna.trial.TrialState
    return len([t for t in trials if counted(t) or t.state in (st.RUNNING, st.WAITING)])


def counted(t: Any) -> bool:
    """Trials that count toward ``n_trials``: complete, pruned, or failed by the model itself."""
    import optuna

    st = optuna.trial.TrialState
    if t.state in (st.COMPLETE, st.PRUNED):
        return True
    return t.state == st.FAIL and bool(t.user_attrs.get(FAILURE))


def _worker_main(run_trials: Any) -> None:
    """Body of one forked worker: one torch thread (fork after torch's thread pool is only safe
    without a parallel region in the child), then the trial loop."""
    import torch

    torch.set_num_threads(1)
    run_trials()


def run_workers(
    study: Any,
    workers: int,
    n_trials: int,
    run_trials: Any,
    log: Any,
    storage: str | None = None,
    straggler_grace: float = STRAGGLER_SECONDS,
) -> int:
    """Fork ``workers`` processes running ``run_trials()``; each returns once the study holds
    ``n_trials`` counted trials (its own, other forks' or joined ``closedloop worker``s') or the time
    is up. A dead fork is replaced (its trial failed and queued again by :func:`fail_lost`); a dead
    fork whose database is gone ends the stage with one message naming it; a fork still alive
    ``straggler_grace`` seconds after the study is complete is stopped (:class:`StragglerWatch`).
    Returns how many died."""
    ctx = mp.get_context("fork")  # the worker inherits the leader's session: data, engine, outcomes
    procs = [ctx.Process(target=_worker_main, args=(run_trials,), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    deaths = 0
    max_deaths = n_trials + workers  # a worker that dies on every start is a bug, not bad luck
    watch = StragglerWatch(study, n_trials, straggler_grace)
    try:
        while procs:
            time.sleep(0.2)
            stopped = watch.stop_stragglers(procs, log)
            procs = [p for p in procs if p not in stopped]  # stopped, not died: nothing to retry
            alive = [p for p in procs if p.is_alive()]
            for p in procs:
                if p in alive:
                    continue
                p.join()
                if p.exitcode == 0:
                    continue
                deaths += 1
                storage_lost(storage)  # a database that went away: no use starting another worker
                fail_lost(study)
                log.warning(
                    "train: tuning worker pid %s died (exit %s); its trial is retried", p.pid, p.exitcode
                )
                if deaths > max_deaths:
                    raise StageFailedError(
                        f"train: {deaths} tuning workers died; the last exit code was {p.exitcode}"
                    )
                fresh = ctx.Process(target=_worker_main, args=(run_trials,), daemon=True)
                fresh.start()
                alive.append(fresh)
            procs = alive
        n = len([t for t in study.get_trials(deepcopy=False) if counted(t)])
    except BaseException:
        for q in procs:
            if q.is_alive():
                q.kill()
                q.join()
        raise
    if n < n_trials:
        log.info("train: workers stopped with %d of %d trials (time budget)", n, n_trials)
    return deaths


class StragglerWatch:
    """Stops a fork that has not returned ``grace`` seconds after the study held its ``n_trials``
    counted trials. A healthy worker returns within one poll of that; one that has not is stuck, e.g.
    forked while another thread of the leader held a lock the child needs (fork copies the lock, not
    the thread that would release it). Without this the leader would wait for it forever.

    >>> import optuna
    >>> watch = StragglerWatch(optuna.create_study(), n_trials=1, grace=0.0)
    >>> watch.complete_since is None
    True
    """

    def __init__(self, study: Any, n_trials: int, grace: float = STRAGGLER_SECONDS, every: float = 2.0):
        self.study, self.n_trials, self.grace, self.every = study, n_trials, grace, every
        self.complete_since: float | None = None
        self._next = 0.0

    def stop_stragglers(self, procs: list[Any], log: Any) -> list[Any]:
        """Kill the live forks once the study has been complete for ``grace`` seconds; returns them."""
        now = time.monotonic()
        if self.complete_since is None:
            if now < self._next:  # the study is read at most every ``every`` seconds
                return []
            self._next = now + self.every
            try:
                trials = self.study.get_trials(deepcopy=False)
            except Exception:  # the storage is busy or gone: the dead-worker path says which
                return []
            if len([t for t in trials if counted(t)]) < self.n_trials:
                return []
            self.complete_since = now
        if now - self.complete_since < self.grace:
            return []
        stopped = []
        for p in procs:
            if p.is_alive():
                log.warning(
                    "train: tuning worker pid %s had not returned %.0f s after the study held its %d "
                    "trials; stopped it (a fork that hung)", p.pid, now - self.complete_since, self.n_trials,
                )  # fmt: skip
                p.kill()
                p.join()
                stopped.append(p)
        return stopped


def storage_lost(storage: str | None, exc: BaseException | None = None) -> None:
    """Raise one clear error when the study's database cannot be reached (after a worker died or a
    storage call failed); return when it can (or the storage is a local file)."""
    if storage is None or is_journal(storage):
        return
    try:
        check_reachable(storage)
    except ConfigError as lost:
        why = first_line(lost.__cause__ or lost)
        raise StageFailedError(
            f"train.storage: lost the study database {redact(storage)!r} during tuning ({why}); the trials "
            "it holds are kept: when it is back, continue with `closedloop run --resume <run dir>`"
        ) from (exc or lost)
