"""The examples in docs/serving.md run against a real server (curl and tritonclient)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_examples_run(runs, serve, tmp_path: Path) -> None:
    server = serve([runs["champion"], "--model-name", "quickstart", "--log-dir", tmp_path / "log"])
    here = f"127.0.0.1:{server.port}"
    curl = next(b for b in blocks("bash") if "/v2/models/quickstart/infer" in b)
    r = subprocess.run(
        ["bash", "-c", curl.replace("localhost:8080", here)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    meta_text, infer_text = r.stdout.split("}{", 1)
    assert json.loads(meta_text + "}")["name"] == "quickstart"
    assert json.loads("{" + infer_text)["id"] == "req-1"

    code = next(b for b in blocks("python") if "tritonclient" in b).replace("localhost:8080", here)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "20260101-000000-champion (4, 10)" in r.stdout


def test_create_app_is_exported_lazily() -> None:
    code = (
        "import sys, closedloop.serving as s; assert 'fastapi' not in sys.modules; "
        "assert callable(s.create_app) and 'onnxruntime' not in sys.modules and 'torch' not in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("block", [b for b in blocks("ini") + blocks("dockerfile")][:2])
def test_deployment_snippets_use_the_torch_free_entry_point(block: str) -> None:
    assert 'python", "-m", "closedloop.serving"' in block or "python -m closedloop.serving" in block
