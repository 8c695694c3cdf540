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
in the stage's work folder; an RDB URL (PostgreSQL) works too; SQLite is refused (Optuna's FAQ: parallel
writers hit "database is locked"). Seeds come from the trial's number (``core.seeds``), never from which
worker ran it.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from closedloop.core.errors import ConfigError, StageFailedError

# user attr a worker sets on a trial it fails itself (e.g. non-finite loss): such a trial counts. A FAIL
# trial without it was killed with its worker (the leader failed it) or was surplus: retried, not counted.
FAILURE = "failure"
RDB_SCHEMES = ("postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")


def storage_problem(url: str | None, workers: int) -> str | None:
    """Why ``url`` cannot serve ``workers`` processes (a storage they cannot share, a malformed URL),
    checked with the config, before any work starts; None when it can."""
    if url is None:
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
            "postgresql://user:password@host:port/db (or sqlite:///path for one process)"
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
    if urlparse(url).scheme == "sqlite":
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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"train.storage: cannot reach {url!r}: {first}") from exc


def shared_storage(url: str | None, work: Path) -> Any:
    """The Optuna storage object several processes share: the journal file by default."""
    if url is not None:
        return rdb_url(url)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(work / "study.journal")))


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


def run_workers(study: Any, workers: int, n_trials: int, run_trials: Any, log: Any) -> int:
    """Fork ``workers`` processes running ``run_trials()`` until the study holds ``n_trials`` counted
    trials; replace dead ones (their trials marked killed). Returns how many workers died."""
    import optuna

    ctx = mp.get_context("fork")  # the worker inherits the leader's session: data, engine, outcomes
    procs = [ctx.Process(target=_worker_main, args=(run_trials,), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    deaths = 0
    max_deaths = n_trials + workers  # a worker that dies on every start is a bug, not bad luck
    while True:
        time.sleep(0.2)
        alive = []
        for p in procs:
            if p.is_alive():
                alive.append(p)
                continue
            p.join()
            if p.exitcode == 0:
                continue
            deaths += 1
            mark_killed(study, p.pid)
            log.warning("train: tuning worker pid %s died (exit %s); its trial is retried", p.pid, p.exitcode)
            if deaths > max_deaths:
                for q in alive:
                    q.kill()
                raise StageFailedError(
                    f"train: {deaths} tuning workers died; the last exit code was {p.exitcode}"
                )
            fresh = ctx.Process(target=_worker_main, args=(run_trials,), daemon=True)
            fresh.start()
            alive.append(fresh)
        procs = alive
        if not procs:
            break
    n = len([t for t in study.get_trials(deepcopy=False) if counted(t)])
    running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    if running:
        # a worker ended without telling (cannot happen for exit 0); keep the study consistent
        for number in running:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
    if n < n_trials:
        log.info("train: workers stopped with %d of %d trials (time budget)", n, n_trials)
    return deaths


def mark_killed(study: Any, pid: int | None) -> None:
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("pid") == pid:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # no FAILURE attr: not counted
