"""User-facing errors.

Every error a user can cause by bad input is a :class:`ClosedLoopError`: the CLI prints its message
(one screen, no traceback) and exits non-zero. Messages name the file, field or value and what was
expected.
"""

from __future__ import annotations


class ClosedLoopError(Exception):
    """Base class of errors caused by user input (config, data, wiring, run directory)."""


class ConfigError(ClosedLoopError):
    """A configuration file or override is malformed or invalid."""


class DataError(ClosedLoopError):
    """A data file or dataset is missing, broken, or contradicts the task."""


class WiringError(ClosedLoopError):
    """A pipeline's stages cannot be connected (missing input, wrong type, cycle)."""


class RunDirError(ClosedLoopError):
    """A run directory cannot be used (belongs to another run, missing, corrupted)."""


class SealedTestError(ClosedLoopError):
    """The test split was read outside the single sanctioned final evaluation."""


class StageFailedError(ClosedLoopError):
    """A stage raised while running; the pipeline records it and stops."""
