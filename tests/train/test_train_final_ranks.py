"""The data-parallel final fit the train stage launches itself (``train: {final: {nproc: 2}}``, gloo on
CPU): the model is the same family and loads as today, the decision log and summary say 2 ranks, a run
killed with SIGKILL during the final fit resumes to the same weights as an uninterrupted one, and what
it cannot run is refused before any training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from closedloop.core.errors import ConfigError
from closedloop.models.trained import TrainedModel
from closedloop.stages.train import TrainModel

from .conftest import TINY, make_ctx
from .test_train_worker_join import SRC, write_config


@pytest.mark.slow
def test_final_fit_on_two_ranks_same_family_loads_and_says_so(binary_digits, binary_task, tmp_path) -> None:
    stage = TrainModel(**{**TINY, "final_seeds": 2, "final": {"nproc": 2}})
    out = stage.execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path))
    s = stage.summarize(out)
    assert s["final_ranks"] == 2 and out.evaluation.phases["final"]["ranks"] == 2
    said = [d["decision"] for d in s["decisions"] if "data-parallel on 2 ranks" in d["decision"]]
    assert said and "each of 2 member(s)" in said[0] and "gloo" in said[0]
    model = out.model
    assert model.spec.family == "ensemble" and model.spec.params["member"]["family"] == "small_cnn"
    assert model.info["ranks"] == 2
    model.save(tmp_path / "model")
    again = TrainedModel.load(tmp_path / "model")
    x = binary_digits.val.X[:16]
    np.testing.assert_allclose(again.predict_proba(x), model.predict_proba(x), atol=1e-6)
    assert 0.5 < s["test"]["auc"]["value"] <= 1.0  # it learned (test split, once)


def test_final_ranks_refused_before_training(capsys) -> None:
    from closedloop.cli import main
    from closedloop.stages.train.data_parallel import check_ranks

    config = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    assert main(["validate", str(config), "--set", "train.final.nproc=0"]) == 2
    assert "train.final.nproc: got 0" in capsys.readouterr().err
    assert main(["validate", str(config), "--set", "train.final.nproc=2"]) == 0

    with pytest.raises(ConfigError, match="nproc"):
        TrainModel(**{**TINY, "final": {"nproc": 0}})
    with pytest.raises(ConfigError, match="final.nproc: 2 on CUDA is not launched"):
        check_ranks(2, "cuda", "network")
    with pytest.raises(ConfigError, match="tree family"):
        check_ranks(2, "cpu", "trees")
    check_ranks(1, "cuda", "trees")  # one process: nothing to refuse


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return TrainedModel.load(next(run.glob("stages/*train/artifacts/model"))).network.state_dict()


@pytest.mark.slow
@pytest.mark.timeout(900)  # three runs in separate processes
def test_final_fit_on_ranks_killed_then_resumed_equals_uninterrupted(tmp_path) -> None:
    # two pipelines alike but for their runs folder: each opens its own test split once
    config = write_config(tmp_path / "ranks.yaml", runs="runs_killed", final={"nproc": 2}, max_epochs=6)
    other = write_config(tmp_path / "whole.yaml", runs="runs_whole", final={"nproc": 2}, max_epochs=6)
    env = {**os.environ, "PYTHONPATH": str(SRC), "CI": "1"}
    cmd = [sys.executable, "-m", "closedloop", "run", str(config)]
    whole = subprocess.run(
        [sys.executable, "-m", "closedloop", "run", str(other), "--out", str(tmp_path / "whole")],
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert whole.returncode == 0, whole.stdout.decode()[-3000:]
    killed = tmp_path / "killed"
    with (tmp_path / "killed.log").open("w") as log:
        run = subprocess.Popen(
            [*cmd, "--out", str(killed)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        t_end = time.time() + 600
        while not list(killed.glob("stages/*train*/work/final_seed0.pt")):  # an epoch of the final fit done
            assert run.poll() is None and time.time() < t_end, (tmp_path / "killed.log").read_text()
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)  # the stage and its ranks, like a machine going away
        run.wait()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert not (killed / "summary.json").is_file()
    resumed = subprocess.run(
        [sys.executable, "-m", "closedloop", "run", "--resume", str(killed)],
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout.decode()[-3000:]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["stages"]["train"]["final_ranks"] == 2
    a, b = _weights(tmp_path / "whole"), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after the resume")
