"""The serving process runs in a fresh environment that has no torch at all (not only a blocked import).

Builds a virtual environment with closedloop (without its dependencies) plus only what serving needs:
the ``serve`` extra and the numeric core (numpy, scipy, pandas, pydantic, pyyaml, onnxruntime), then
starts ``closedloop serve`` from it and talks to it with ``tritonclient``. Slow (a pip install).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from serve_fixtures import images
from serve_helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
CORE_FOR_SERVING = ("numpy", "scipy", "pandas", "pydantic", "pyyaml", "onnxruntime")

pytestmark = pytest.mark.slow


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = [r for r in project["dependencies"] if r.split(">")[0].split("=")[0].strip() in CORE_FOR_SERVING]
    assert len(core) == len(CORE_FOR_SERVING), core
    return core + list(project["optional-dependencies"]["serve"])


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True, timeout=300)
    subprocess.run([*pip, *_requirements()], check=True, timeout=600)
    probe = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    return py


def test_serve_in_an_environment_without_torch(fresh_python: Path, runs, tmp_path: Path) -> None:
    import httpx
    import tritonclient.http as httpclient

    port = free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen(
        [str(fresh_python), "-m", "closedloop", "serve", str(runs["champion"]), "--port", str(port),
         "--log-dir", str(tmp_path / "log")],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        model = "shapes"  # the fixture pipeline's name
        X = images(seed=3, n=4)[0].astype(np.float32)
        inp = httpclient.InferInput("x", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=True)
        proba = client.infer(model, [inp]).as_numpy("proba")
        assert proba.shape[0] == 4 and np.allclose(proba.sum(axis=1), 1.0)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert metrics.status_code == 200 and "closedloop" in metrics.text
        # this fixture run has no reference profile: /monitor answers with a clear error, not a crash
        monitor = httpx.get(f"http://127.0.0.1:{port}/monitor", timeout=30)
        assert monitor.status_code == 503 and "no reference profile" in monitor.json()["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "torch" not in log.read_text().lower()
