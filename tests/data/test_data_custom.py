"""A user's own source, named by import path (the example in docs/data.md, run as written)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.errors import ConfigError
from closedloop.core.registry import SOURCES
from closedloop.data.bundle import DatasetBundle

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"


@pytest.fixture
def my_pkg(tmp_path, monkeypatch):
    text = DOC.read_text(encoding="utf-8")
    code = re.search(r"```python\n# my_pkg/sources.py\n(.*?)```", text, re.S).group(1)
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sources.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    _forget_my_pkg()  # another test (docs/extending.md's) may have imported a different my_pkg
    rng = np.random.default_rng(0)
    data = np.column_stack([rng.normal(size=(60, 3)), np.arange(60) % 2])
    np.save(tmp_path / "readings.npy", data)
    yield tmp_path
    _forget_my_pkg()


def _forget_my_pkg() -> None:
    import sys

    for name in [m for m in sys.modules if m == "my_pkg" or m.startswith("my_pkg.")]:
        del sys.modules[name]


def test_custom_source_by_import_path(my_pkg, tmp_path):
    cls = SOURCES.resolve("my_pkg.sources:SensorSource")
    bundle = cls(path=str(my_pkg / "readings.npy")).load(seed=0)
    assert bundle.meta.feature_names == ["s0", "s1", "s2"] and sum(bundle.sizes().values()) == 60
    bundle.save(tmp_path / "bundle")
    assert DatasetBundle.load(tmp_path / "bundle").meta == bundle.meta
    with pytest.raises(ConfigError, match=r"SensorSource.*unknown key 'pth'"):
        cls(pth="x")


def test_unknown_source_key():
    with pytest.raises(ConfigError, match=r"unknown data source 'sklearnn'.*Did you mean 'sklearn'"):
        SOURCES.resolve("sklearnn")
