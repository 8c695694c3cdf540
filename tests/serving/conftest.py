"""Fixtures for the serving tests: small run directories (see serve_fixtures.py) and a real server process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# appended, not prepended: this folder must not shadow tests/conftest.py for `from conftest import ...`
sys.path.append(str(Path(__file__).parent))
from serve_fixtures import make_run_dir  # noqa: E402
from serve_helpers import ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """champion, challenger (other weights), binary, other_schema (16x16 input) and a corrupt-ONNX run."""
    root = tmp_path_factory.mktemp("runs")
    out = {
        "champion": make_run_dir(root, version="20260101-000000-champion"),
        "challenger": make_run_dir(root, version="20260102-000000-challenger", seed=1),
        "binary": make_run_dir(root, name="shapes2", version="20260103-000000-binary", n_classes=2),
        "other_schema": make_run_dir(root, version="20260104-000000-other", input_shape=(16, 16, 1)),
    }
    corrupt = make_run_dir(root, version="20260105-000000-corrupt")
    (next(corrupt.glob("stages/*/artifacts/exported")) / "model_fp32.onnx").write_bytes(b"not an onnx file")
    out["corrupt"] = corrupt
    empty = root / "20260106-000000-noexport"
    (empty / "stages" / "01_task").mkdir(parents=True)
    out["no_export"] = empty
    return out


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start servers with ``serve([RUN_DIR, options...])``; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(args: list[str], ready: bool = True) -> ServerProcess:
        server = ServerProcess([str(a) for a in args], tmp_path)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
