"""Shared fixtures: tiny hand-made datasets (tests never read the real MedMNIST files)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for the toy stages in toy_pkg.py, named by import path
os.environ.setdefault("MPLBACKEND", "Agg")

from closedloop.data.bundle import DatasetBundle  # noqa: E402
from common_data import digits_bundle  # noqa: E402


@pytest.fixture
def digits() -> DatasetBundle:
    return digits_bundle()


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"
