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


@pytest.mark.slow
def test_spawned_ranks_fit_the_same_weights_as_forked_ranks(binary_digits, binary_task, tmp_path) -> None:
    """spawn (what CUDA and macOS need) sends the ranks the session pickled; fork inherits it. The same
    fit must come back either way, bit for bit (gloo on CPU here; NCCL needs GPUs)."""
    from closedloop.models.registry import build_network
    from closedloop.models.trained import ModelSpec
    from closedloop.stages.train.data_parallel import fit_on_ranks
    from closedloop.stages.train.engine import HParams, make_engine, make_tensor_set, n_logits_for
    from closedloop.stages.train.stage import make_preprocessing

    pre = make_preprocessing(binary_digits, binary_task)
    eng = make_engine(binary_task, pre, "cpu")
    train = make_tensor_set(binary_digits.train.X, binary_digits.train.y, pre, "binary")
    val = make_tensor_set(binary_digits.val.X, binary_digits.val.y, pre, "binary")
    spec = ModelSpec(family="small_cnn", params={"width": 4})
    hp = HParams(epochs=2, batch_size=32)
    got = {}
    for start in ("fork", "spawn"):
        torch.manual_seed(0)
        net = build_network(spec, pre.input_shape, n_logits_for("binary", 1))
        how = {"train": train, "val": val, "seed": 3, "label": f"ranks/{start}"}
        net, res, n_sync = fit_on_ranks(
            net, how, eng.fit, hp, nproc=2, out=tmp_path / f"{start}.pt", threads=2, start=start
        )
        got[start] = (net.state_dict(), res.history, n_sync)
    assert got["fork"][1] == got["spawn"][1] and got["fork"][2] == got["spawn"][2]
    for key, value in got["fork"][0].items():
        assert torch.equal(value, got["spawn"][0][key]), key


@pytest.mark.slow
def test_spawned_ranks_register_the_users_knobs_the_fit_carries(binary_digits, binary_task, tmp_path) -> None:
    """A tuned knob of the user's (a class in their module, toy_knob:LogitPenalty) reaches spawned
    ranks: each imports the module before fitting, and the fit equals the forked ranks' (the parent's
    imports), bit for bit. Before, a spawned rank refused the value no class declared there."""
    from closedloop.models.registry import build_network
    from closedloop.models.trained import ModelSpec
    from closedloop.stages.train import knobs as K
    from closedloop.stages.train.data_parallel import fit_on_ranks
    from closedloop.stages.train.engine import HParams, make_engine, make_tensor_set
    from closedloop.stages.train.stage import make_preprocessing

    K.knob("toy_knob:LogitPenalty")  # imported here (the parent), as train.tune_knobs would
    pre = make_preprocessing(binary_digits, binary_task)
    eng = make_engine(binary_task, pre, "cpu")
    train = make_tensor_set(binary_digits.train.X, binary_digits.train.y, pre, "binary")
    hp = HParams(epochs=1, batch_size=32, knobs={"logit_penalty": 0.05})
    got = {}
    for start in ("fork", "spawn"):
        torch.manual_seed(0)
        net = build_network(ModelSpec(family="small_cnn", params={"width": 4}), pre.input_shape, 1)
        how = {"train": train, "val": None, "seed": 3, "label": f"knob_ranks/{start}"}
        net, res, _ = fit_on_ranks(
            net, how, eng.fit, hp, nproc=2, out=tmp_path / f"{start}.pt", threads=2, start=start
        )
        got[start] = (net.state_dict(), res.history)
    assert got["fork"][1] == got["spawn"][1]
    for key, value in got["fork"][0].items():
        assert torch.equal(value, got["spawn"][0][key]), key


def test_final_ranks_start_and_gpu_count_refused_before_training() -> None:
    from closedloop.stages.train.data_parallel import check_ranks, start_method_for

    with pytest.raises(ConfigError, match="start: 'fork' with train.device cuda"):
        check_ranks(2, "cuda", "network", "fork", gpus=2)
    with pytest.raises(ConfigError, match="need one GPU each, but 1 GPU"):
        check_ranks(2, "cuda", "network", "auto", gpus=1)
    check_ranks(2, "cuda", "network", "spawn", gpus=2)  # NCCL, one GPU per rank: allowed
    assert start_method_for("auto", "cuda") == "spawn"
    assert start_method_for("fork", "cpu") == "fork"
    with pytest.raises(ConfigError, match="start"):
        TrainModel(**{**TINY, "final": {"nproc": 2, "start": "threads"}})
