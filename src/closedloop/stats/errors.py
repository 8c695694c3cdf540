"""The error raised for bad statistical input (wrong shape, NaN scores, undefined metric)."""

from __future__ import annotations

from closedloop.core.errors import DataError


class StatsError(DataError, ValueError):
    """Predictions or labels cannot be scored as asked: the message says what was expected.

    A :class:`~closedloop.core.errors.DataError` (so the CLI prints it without a traceback) and a
    ``ValueError`` (so plain-Python callers can catch the usual type).
    """
