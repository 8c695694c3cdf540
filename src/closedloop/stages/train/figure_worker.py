"""The training stage's figures, drawn in one helper process while the stage goes on training.

A figure costs the stage 0.1-0.4 s of matplotlib (and the first one about a second to import it); on a
4,000-row table the tree family's fits take less than that, so its selection was half figures (issue
#25, ``benchmarks/profile_tree_stage.py``). A figure needs nothing the phases after it use, so the
stage hands each one to a helper process (this file run by a fresh Python, :data:`HELPER`: a fresh
interpreter, not a fork of a process that holds LightGBM's and torch's threads) and goes on; on two or
more cores the helper draws on a core the stage's single-threaded fits leave idle. The stage waits for
every figure before it ends, so its outputs and report are those of inline drawing. A job the helper
could not draw is drawn in the stage's own process (an error then surfaces as it would have inline),
and when the helper cannot start every figure is drawn inline.

``train: {figures: background}``, or ``inline`` (the default, ``auto``): the helper used to import the
training package before it drew its first figure, which on the shared 2-core machine cost more than the
figures it took off the stage (:meth:`~closedloop.stages.train.config.TrainConfig.figures_in_background`).
It now imports the drawing module alone (:func:`bare_package`): matplotlib, not torch.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

HELPER = "import runpy; runpy.run_path({path!r}, run_name='__main__')"
"""The helper's command: this file run as a script, not ``python -m closedloop.stages.train.figure_worker``,
which would run the training package's ``__init__`` first (:func:`bare_package`)."""
Job = tuple[str, str, tuple[Any, ...], dict[str, Any]]
"""A drawing function's module and name (the helper imports it by name, so this module imports no
drawing code and :mod:`~closedloop.stages.train.plots` can import this one), its args and kwargs."""


class FigureWorker:
    """One helper process that draws jobs (of :mod:`~closedloop.stages.train.plots`) in order."""

    def __init__(self) -> None:
        import closedloop

        # the helper imports the same closedloop as this process, however it was put on the path
        root = str(Path(closedloop.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        env["MPLBACKEND"] = "Agg"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HELPER.format(path=str(Path(__file__).resolve()))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> bool:
        """Send ``job`` to the helper; False when it is gone (the caller then draws inline)."""
        assert self.proc.stdin is not None
        try:
            pickle.dump(job, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        self.jobs.append(job)
        return True

    def finish(self) -> list[Job]:
        """Wait until the helper has drawn every job; returns the jobs it did not draw."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        replies = self.proc.stdout.read().decode("utf-8", "replace").splitlines()
        self.proc.wait()
        replies += [""] * (len(self.jobs) - len(replies))  # a helper that died answered no more
        return [job for job, reply in zip(self.jobs, replies, strict=False) if reply != "ok"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


LIGHT_PACKAGE = "closedloop.stages.train"
"""The package whose drawing module the helper imports without the package's ``__init__``."""


def bare_package(name: str) -> None:
    """Register package ``name`` without running its ``__init__``, so a module in it imports alone. The
    training package's ``__init__`` imports the stage, hence torch, LightGBM and the audit, while the
    drawing module (:mod:`~closedloop.stages.train.plots`) imports matplotlib only. For the helper process only, which
    imports nothing else from the package."""
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    package = types.ModuleType(name)
    package.__path__ = [str(Path(importlib.import_module(parent).__path__[0]) / child)]
    package.__package__ = name
    sys.modules[name] = package


def serve() -> None:
    """The helper's loop: read pickled jobs from stdin until it closes, draw each, answer one line."""
    bare_package(LIGHT_PACKAGE)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        try:
            module, name, args, kwargs = pickle.load(stdin)
        except EOFError:
            return
        try:
            getattr(importlib.import_module(module), name)(*args, **kwargs)
            stdout.write("ok\n")
        except Exception as exc:  # the stage redraws it in its own process, where the error surfaces
            stdout.write(f"failed {type(exc).__name__}\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
