"""The standalone predictor runs in a fresh virtual environment with only numpy and onnxruntime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from export_fixtures import digits_bundle, digits_model, task_for  # noqa: E402

from closedloop.core.stage import RunContext  # noqa: E402
from closedloop.stages.export import ExportModel  # noqa: E402

SERVING = Path(__file__).resolve().parents[2] / "src" / "closedloop" / "serving"


@pytest.mark.slow
def test_export_predictor_in_a_fresh_venv_without_torch(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "numpy", "onnxruntime"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if pip.returncode != 0:
        pytest.skip(f"pip cannot install numpy+onnxruntime here (offline?): {pip.stderr[-300:]}")

    b = digits_bundle(binary=False)
    m = digits_model(b, steps=40)
    out = ExportModel(latency={"repeats": 5, "warmup": 1}, bootstrap=10).execute(
        {"data": b, "task": task_for(b), "model": m},
        RunContext(stage_name="export", stage_dir=tmp_path / "st", seed=0),
    )
    served = tmp_path / "served"
    shutil.copytree(SERVING, served, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    X = b.val.X[:20]
    np.save(tmp_path / "x.npy", X)
    script = (
        "import sys, json, numpy as np\n"
        "try:\n    import torch\n    print('TORCH_PRESENT'); sys.exit(3)\nexcept ImportError: pass\n"
        "try:\n    import closedloop\n    print('CLOSEDLOOP_PRESENT'); sys.exit(4)\nexcept ImportError: pass\n"
        "from predictor import Predictor\n"
        f"p = Predictor({str(out.exported.directory)!r}, variant='fp32')\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "print(json.dumps({'proba': p.predict_proba(x).tolist(), 'labels': p.predict_labels(x)}))\n"
    )
    r = subprocess.run(
        [str(py), "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(served), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(res["proba"]), m.predict_proba(X), rtol=1e-4, atol=1e-5)
    assert res["labels"] == [m.label_names[i] for i in m.predict_proba(X).argmax(1)]
