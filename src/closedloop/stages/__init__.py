"""Pipeline stages, one module or package per stage.

Importing this package imports no stage (and so never torch): Python always runs a package's
``__init__`` before its submodules, and a stage's light parts (``closedloop.stages.monitor.cli``) are
imported by the command line. The built-in stages register themselves when
:mod:`closedloop.stages.all_stages` is imported, which the stage registry does on first lookup.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BUILTIN_STAGE_MODULES = ("audit", "baseline", "export", "load_data", "monitor", "task", "train")


def __getattr__(name: str) -> ModuleType:  # ``closedloop.stages.train`` etc. still work as attributes
    if name in BUILTIN_STAGE_MODULES or name == "all_stages":
        return importlib.import_module(f"closedloop.stages.{name}")
    raise AttributeError(name)
