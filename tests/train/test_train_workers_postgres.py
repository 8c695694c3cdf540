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


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg2", reason="psycopg2 not installed: pip install 'closedloop[scale]'")
    bindir = _bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql; apt-get failed here)")
    root = tempfile.mkdtemp(prefix="closedloop-pg-")
    as_user: list[str] = []
    if os.getuid() == 0:  # initdb refuses root: run the server as an unprivileged user
        user = "postgres" if shutil.which("runuser") and _has_user("postgres") else "nobody"
        shutil.chown(root, user)
        as_user = ["runuser", "-u", user, "--"]
    data, port = os.path.join(root, "data"), _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "closedloop", "--no-sync")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w", "start")
    try:
        run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "closedloop", "study")
        yield f"postgresql://closedloop@127.0.0.1:{port}/study"
    finally:
        subprocess.run(
            [*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


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
    cfg = {**TINY, "n_trials": n, "max_epochs": 10}  # long enough trials for the killer to catch one
    inputs = {"data": binary_digits, "task": binary_task}
    multi_ctx = make_ctx(tmp_path / "multi")
    multi = TrainModel(**cfg, workers=2, storage=postgres_url, study_name="shared")
    killed: list[int] = []
    stop = threading.Event()

    url = rdb_url(postgres_url)

    def load():
        names = optuna.get_all_study_names(url)
        return optuna.load_study(study_name="shared", storage=url) if "shared" in names else None

    th = threading.Thread(target=killer, args=(load, killed, stop), daemon=True)
    th.start()
    try:
        out = multi.execute(inputs, multi_ctx)
    finally:
        stop.set()
        th.join()
    assert killed, "the test did not manage to kill a worker mid-trial"
    trials = optuna.load_study(study_name="shared", storage=url).get_trials()
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
