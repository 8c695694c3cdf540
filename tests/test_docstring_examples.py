"""Every docstring example in the package runs and prints what it says (the brief: short docstrings
with examples that run). One test per module, so a broken example names its module."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import closedloop


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(closedloop.__path__, "closedloop."):
        spec = importlib.util.find_spec(info.name)
        origin = getattr(spec, "origin", None) if spec else None
        if origin and origin.endswith(".py") and ">>>" in Path(origin).read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_package_has_examples() -> None:
    assert len(MODULES) >= 30, MODULES  # a broken walk must not pass as "nothing to check"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed
        pytest.skip(f"{name}: {exc}")
    # The examples are what a user types in a notebook: without the module's postponed annotations
    # (doctest would compile them under the module's `from __future__ import annotations`).
    globs = {k: v for k, v in vars(module).items() if k != "annotations"}
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, globs=globs, optionflags=flags, verbose=False)
    assert result.failed == 0, (
        f"{name}: {result.failed} of {result.attempted} docstring examples failed (output above)"
    )
