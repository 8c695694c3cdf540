"""Two tuning workers on one study in a real PostgreSQL server (Debian's binaries, a throwaway data
directory, a free 127.0.0.1 port): one is killed with SIGKILL mid-trial; the study ends with exactly the
declared trial count, the ledger has each configuration once, and the outputs have the shape of a
one-process run."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from closedloop.stages.train import TrainModel
from closedloop.stages.train.phases.workers import rdb_url

from .conftest import TINY, make_ctx
from .test_train_workers import killer


def _bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A throwaway PostgreSQL server: a temporary data directory, a free 127.0.0.1 port; ``stop`` and
    ``start`` stand for a database that goes away and comes back."""

    def __init__(self, bindir: str) -> None:
        self.bindir, self.root = bindir, tempfile.mkdtemp(prefix="closedloop-pg-")
        self.as_user: list[str] = []
        if os.getuid() == 0:  # initdb refuses root: run the server as an unprivileged user
            user = "postgres" if shutil.which("runuser") and _has_user("postgres") else "nobody"
            shutil.chown(self.root, user)
            self.as_user = ["runuser", "-u", user, "--"]
        self.data, self.port, self.running = os.path.join(self.root, "data"), _free_port(), False
        self.url = f"postgresql://closedloop@127.0.0.1:{self.port}/study"
        self._run(f"{bindir}/initdb", "-D", self.data, "-A", "trust", "-U", "closedloop", "--no-sync")
        self.start()
        self._run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "closedloop", "study")

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if self.running:  # a test's cleanup restarts a server it may not have stopped
            return
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = os.path.join(self.root, "log")
        self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-o", opts, "-l", log, "-w", "start")
        self.running = True

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"],
            capture_output=True,
        )
        self.running = False


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    pytest.importorskip("psycopg2", reason="psycopg2 not installed: pip install 'closedloop[scale]'")
    bindir = _bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql; apt-get failed here)")
    server = PgServer(bindir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url(postgres: PgServer) -> str:
    return postgres.url


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.slow
def test_two_workers_on_postgres_one_killed_exact_count_same_shape_as_one_process(
    postgres_url, binary_digits, binary_task, tmp_path
) -> None:
    import optuna

    n = 4
    # max_epochs 30: the pruner's first rung is at epoch 5, long enough trials for the killer to catch one
    cfg = {**TINY, "n_trials": n, "max_epochs": 30}
    inputs = {"data": binary_digits, "task": binary_task}
    multi_ctx = make_ctx(tmp_path / "multi")
    multi = TrainModel(**cfg, workers=2, storage=postgres_url, study_name="shared")
    killed: list[int] = []
    stop = threading.Event()

    # one storage, built here before the leader forks: a storage built in the killer thread (alembic
    # loading its migrations, SQLAlchemy's ORM registry lock held) while the leader forked a replacement
    # worker left that lock held, ownerless, in the child, which then hung building its own storage
    # until the straggler watch stopped it 60 s later (py-spy: the child idle in registry.__init__)
    storage = optuna.storages.RDBStorage(rdb_url(postgres_url))

    def load():
        names = optuna.get_all_study_names(storage)
        return optuna.load_study(study_name="shared", storage=storage) if "shared" in names else None

    th = threading.Thread(target=killer, args=(load, killed, stop), daemon=True)
    th.start()
    try:
        out = multi.execute(inputs, multi_ctx)
    finally:
        stop.set()
        th.join()
    assert killed, "the test did not manage to kill a worker mid-trial"
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))  # no duplicate trial
    counted = [t for t in trials if t.state != optuna.trial.TrialState.FAIL or t.user_attrs.get("failure")]
    assert len(counted) == n  # none lost: the killed one was retried
    # FAIL when the leader marked it; PRUNED when the pruner ended it in the moment of the kill: either way not counted
    killed_states = [t.state for t in trials if t.number == killed[0]]
    assert killed_states in ([optuna.trial.TrialState.FAIL], [optuna.trial.TrialState.PRUNED]), killed_states
    rows = [
        e["description"] for e in multi_ctx.validation_ledger.entries() if "tuning trial" in e["description"]
    ]
    assert len(rows) == len(set(rows)) == n

    one_ctx = make_ctx(tmp_path / "one")
    one = TrainModel(**cfg)
    one_out = one.execute(inputs, one_ctx)
    s_multi, s_one = multi.summarize(out), one.summarize(one_out)
    assert set(s_multi) == set(s_one) and set(s_multi["test"]) == set(s_one["test"])
    one_rows = [e for e in one_ctx.validation_ledger.entries() if "tuning trial" in e["description"]]
    assert len(one_rows) == n
    assert [type(b).__name__ for b in multi.report(out, tmp_path)] == [
        type(b).__name__ for b in one.report(one_out, tmp_path)
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)  # separate processes, each starting torch, on a loaded CI machine
def test_joined_worker_on_another_machine_killed_heartbeat_fails_and_retries_its_trial(
    postgres_url, tmp_path
) -> None:
    """The worker calls its machine "elsewhere": no pid check reaches it, only Optuna's heartbeat."""
    from .test_train_worker_join import (
        KILLABLE_EPOCHS,
        check_joined,
        check_study_and_run,
        cli,
        finished_by,
        kill_worker_mid_trial,
        open_study,
        write_config,
    )

    url, name = rdb_url(postgres_url), "joined-heartbeat"
    config = write_config(
        tmp_path / "joined.yaml", heartbeat_seconds=1, study_name=name, max_epochs=KILLABLE_EPOCHS
    )
    run = tmp_path / "run"
    leader = cli(["run", str(config), "--storage", postgres_url, "--out", str(run)], tmp_path / "leader.log")
    elsewhere = {"CLOSEDLOOP_WORKER_HOST": "elsewhere"}
    worker = cli(["worker", str(config), "--storage", postgres_url], tmp_path / "worker.log", **elsewhere)
    second = cli(["worker", str(config), "--storage", postgres_url], tmp_path / "second.log", **elsewhere)
    try:
        killed = kill_worker_mid_trial(url, worker, name, timeout=600)
        assert leader.wait(timeout=600) == 0, (tmp_path / "leader.log").read_text()
        assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()
    finally:
        for p in (leader, worker, second):
            if p.poll() is None:
                p.kill()
                p.wait()
    study = check_study_and_run(url, run, killed, name)
    # the killed worker's trial was a joined worker's; the second one may find every trial taken
    check_joined(study, run, finished_by(tmp_path / "second.log"))
    assert open_study(url, name) is None


@pytest.mark.slow
@pytest.mark.timeout(900)  # a run and its resume in separate processes
def test_server_lost_mid_tune_fails_clearly_and_resume_completes_once_back(postgres, tmp_path) -> None:
    import json

    import optuna

    from .test_train_worker_join import (
        KILLABLE_EPOCHS,
        N_TRIALS,
        check_study_and_run,
        cli,
        open_study,
        write_config,
    )

    url, name = rdb_url(postgres.url), "server-lost"
    # trials that live several epochs, and one storage for the polls (a new one per poll took long
    # enough that a quiet machine finished the whole tune phase between two looks)
    config = write_config(tmp_path / "lost.yaml", study_name=name, workers=2, max_epochs=KILLABLE_EPOCHS)
    run = tmp_path / "run"
    leader = cli(["run", str(config), "--storage", postgres.url, "--out", str(run)], tmp_path / "leader.log")
    storage = optuna.storages.RDBStorage(url)
    try:
        t_end = time.time() + 400
        while time.time() < t_end:  # stop the server once the study holds a finished trial
            time.sleep(0.2)
            assert leader.poll() is None, (tmp_path / "leader.log").read_text()
            study = open_study(storage, name)
            if study is not None and any(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
                break
        postgres.stop()
        assert leader.wait(timeout=300) == 1
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
        postgres.start()
    log = (tmp_path / "leader.log").read_text()
    assert f"train.storage: lost the study database '{postgres.url}'" in log, log
    assert "closedloop run --resume" in log
    summary = json.loads((run / "summary.json").read_text())
    assert "lost the study database" in summary["stages"]["train"]["error"]
    resumed = cli(["run", "--resume", str(run)], tmp_path / "resume.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()
    study = check_study_and_run(url, run, None, name)
    assert len([t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]) >= 1
    assert len({t.number for t in study.get_trials() if t.state != optuna.trial.TrialState.FAIL}) == N_TRIALS
