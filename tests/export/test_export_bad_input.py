"""Bad input for the export stage and the predictor: each fails cleanly with a message that says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from export_fixtures import (  # noqa: E402
    TinyCNN,
    digits_bundle,
    digits_model,
    table_bundle,
    table_model,
    task_for,
)

from closedloop.core.errors import ClosedLoopError, DataError  # noqa: E402
from closedloop.core.stage import RunContext  # noqa: E402
from closedloop.models.registry import MODELS, register_model  # noqa: E402
from closedloop.models.trained import ModelSpec, TrainedModel  # noqa: E402
from closedloop.serving import Predictor, PredictorError  # noqa: E402
from closedloop.stages.export import ExportError, ExportModel, ParityError  # noqa: E402
from closedloop.stages.export.onnx_export import export_onnx, onnx_session  # noqa: E402
from closedloop.stages.export.parity import compare_outputs, require_parity  # noqa: E402
from closedloop.stages.export.quantize import quantize_model  # noqa: E402

FAST = {"latency": {"repeats": 5, "warmup": 1}, "bootstrap": 10, "calibration_samples": 64}


class SvdNet(TinyCNN):
    """Uses an op the ONNX exporter does not know (singular values)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(x[:, 0]).reshape(len(x), -1)[:, :1].repeat(1, 16)


if "test_export_svd" not in MODELS._items:

    @register_model("test_export_svd")
    def _svd(input_shape: list[int], n_logits: int) -> nn.Module:
        return SvdNet(input_shape[-1], n_logits)


@pytest.fixture(scope="module")
def small():
    b = digits_bundle(binary=True)
    return b, digits_model(b, steps=40), task_for(b)


@pytest.fixture(scope="module")
def exported(small, tmp_path_factory: pytest.TempPathFactory) -> Path:
    b, m, t = small
    d = tmp_path_factory.mktemp("exp")
    out = ExportModel(**FAST).execute(
        {"data": b, "task": t, "model": m}, RunContext(stage_name="export", stage_dir=d, seed=0)
    )
    return out.exported.directory


def test_export_unsupported_op_names_the_op(small, tmp_path: Path) -> None:
    b, m, t = small
    bad = TrainedModel(
        spec=ModelSpec(family="test_export_svd"),
        network=MODELS.resolve("test_export_svd")([8, 8, 1], 1),
        preprocessing=m.preprocessing,
        problem_type="binary",
        n_outputs=2,
        label_names=["low", "high"],
    )
    with pytest.raises(ExportError, match="svdvals") as info:
        ExportModel(**FAST).execute(
            {"data": b, "task": t, "model": bad}, RunContext(stage_name="export", stage_dir=tmp_path, seed=0)
        )
    assert isinstance(info.value, ClosedLoopError)


def test_export_calibration_of_the_wrong_shape(small, tmp_path: Path) -> None:
    _, m, _ = small
    path = export_onnx(m.raw_module(), torch.zeros(2, 8, 8, 1), tmp_path / "m.onnx")
    with pytest.raises(
        DataError, match=r"calibration data has shape \(10, 8, 8\).*expected \(N>0, 8, 8, 1\)"
    ):
        quantize_model(
            path, tmp_path / "q.onnx", mode="static", calibration=np.zeros((10, 8, 8)), input_shape=[8, 8, 1]
        )


def test_export_int8_beyond_tolerance_is_rejected_not_shipped(small, tmp_path: Path) -> None:
    b, m, t = small
    stage = ExportModel(**FAST, int8_max_prob_diff=1e-9)
    out = stage.execute(
        {"data": b, "task": t, "model": m}, RunContext(stage_name="export", stage_dir=tmp_path, seed=0)
    )
    meas = out.exported.measurements
    assert meas.variants["int8"].accepted is False
    assert "P(int8) - P(fp32)" in meas.variants["int8"].reason
    assert meas.shipped != "int8"
    meta = json.loads((out.exported.directory / "predictor.json").read_text())
    assert "int8" not in meta["models"] and "int8" in meta["rejected"]
    assert stage.summarize(out)["int8"]["accepted"] is False


def test_export_parity_failure_lists_the_largest_differences() -> None:
    ref = np.zeros((20, 3), np.float32)
    got = ref.copy()
    got[7, 2] = 0.5
    res = compare_outputs(ref, got, 1e-3, 1e-5)
    assert not res.passed and res.worst[0]["sample"] == 7 and res.worst[0]["output"] == 2
    with pytest.raises(ParityError, match=r"sample 7 out 2: torch 0 vs onnx 0.5"):
        require_parity(res, "model.onnx", 1e-3, 1e-5)
    assert compare_outputs(ref, ref + 1e-7, 1e-3, 1e-5).passed


def test_export_predictor_rejects_wrong_shape_and_dtype(exported: Path) -> None:
    p = Predictor(exported)
    with pytest.raises(PredictorError, match=r"expected \(N, 8, 8, 1\)"):
        p.predict_proba(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(PredictorError, match="without a batch axis"):
        p.predict_proba(np.zeros((8, 8, 1), np.uint8))
    with pytest.raises(PredictorError, match="not numeric"):
        p.predict_proba(np.array([[["a"] * 1] * 8] * 8 * 2, dtype=object).reshape(2, 8, 8, 1))
    with pytest.raises(PredictorError, match="0..255"):
        p.predict_proba(np.full((1, 8, 8, 1), 0.5, np.float32) * -1)
    with pytest.raises(PredictorError, match="variant 'nope'"):
        Predictor(exported, variant="nope")


def test_export_corrupted_model_file_gives_a_clear_error(exported: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(exported, d)
    meta = json.loads((d / "predictor.json").read_text())
    f = d / meta["models"][meta["shipped"]]["file"]
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    with pytest.raises(PredictorError, match="cannot load the ONNX model"):
        Predictor(d)
    with pytest.raises(ExportError, match="cannot load"):
        onnx_session(f)
    (d / "predictor.json").write_text("{not json")
    with pytest.raises(PredictorError, match="not valid JSON"):
        Predictor(d)
    # and in a separate process the host survives: a clean error line and exit code 2, no crash
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.uint8))
    (d / "predictor.json").write_text(json.dumps(meta))
    r = subprocess.run(
        [sys.executable, str(d / "predictor.py"), str(d), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "cannot load the ONNX model" in r.stderr


def test_export_serving_does_not_import_torch() -> None:
    code = "import sys, closedloop.serving; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def validate_export_params(tmp_path: Path, dataset: str, params: str) -> subprocess.CompletedProcess[str]:
    """`closedloop validate` on task -> train -> export over sklearn's ``dataset``, export taking ``params``."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        f"name: bad\ndata: {{source: sklearn, name: {dataset}}}\nstages:\n  - kind: task\n  - kind: train\n"
        f"  - kind: export\n    params: {params}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "closedloop", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("params", "needed"),
    [
        ("{ship: student}", "distill: section"),
        ("{ship: pruned}", "prune: section"),
        ("{ship: int8, quantize: none}", "contradicts quantize: none"),
    ],
)
def test_export_ship_without_its_variant_fails_at_validate(params: str, needed: str, tmp_path: Path) -> None:
    """Caught by `closedloop validate` (the config's validators), not after the whole training."""
    r = validate_export_params(tmp_path, "digits", params)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "export.ship" in r.stderr and needed in r.stderr and "Traceback" not in r.stderr


def test_export_ship_int8_on_a_table_under_quantize_auto_is_refused_before_any_work(tmp_path: Path) -> None:
    """quantize: auto makes no int8 variant for a small table network; ship: int8 then names the modes
    that would make one."""
    b = table_bundle()
    m, t = table_model(b, steps=20), task_for(b)
    ctx = RunContext(stage_name="export", stage_dir=tmp_path, seed=0)
    with pytest.raises(ExportError) as info:
        ExportModel(**FAST, ship="int8").execute({"data": b, "task": t, "model": m}, ctx)
    msg = str(info.value)
    assert "export.ship: int8 - quantize: auto makes no int8 variant for this table model" in msg
    assert "< table_int8_min_parameters 100,000" in msg
    assert "quantize: static" in msg and "quantize: dynamic" in msg and "ship: auto" in msg
    assert not (ctx.work_dir / "export").exists()  # refused before the fp32 export
    # asked for explicitly, a table gets its int8 variant and ships it
    out = ExportModel(**FAST, ship="int8", quantize="static").execute(
        {"data": b, "task": t, "model": m}, RunContext(stage_name="export", stage_dir=tmp_path / "ok", seed=0)
    )
    assert out.exported.measurements.shipped == "int8"


def test_export_table_int8_threshold_from_yaml_is_checked_at_validate(tmp_path: Path) -> None:
    r = validate_export_params(tmp_path, "breast_cancer", "{table_int8_min_parameters: -5}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "table_int8_min_parameters" in r.stderr and "-5" in r.stderr and "Traceback" not in r.stderr


def test_export_config_checks_run_when_the_stage_is_built() -> None:
    from closedloop.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ship: got 'student'; expected a distill: section"):
        ExportModel(ship="student")
    assert ExportModel(ship="student", distill={}).config.ship == "student"
    # a broken distill section is reported as itself, not as a second complaint about ship
    with pytest.raises(ConfigError) as info:
        ExportModel(ship="student", distill={"epochs": 0})
    assert "distill.epochs" in str(info.value) and "ship" not in str(info.value)
