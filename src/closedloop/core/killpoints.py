"""Deterministic crash points for the kill battery (``tests/test_kill_battery.py``).

A run started with ``CLOSEDLOOP_KILL_AT=<point>`` sends itself SIGKILL when it reaches the named
point: no clean-up, no ``finally``, like a crash or a pre-empted machine, but at a place a test can
name instead of a moment it must guess. Points are ``<stage>/<where>`` paths, e.g.
``train/tune/trial1/epoch1`` (after that epoch's work is done). With ``CLOSEDLOOP_KILL_LOG=<file>``
every point reached is appended to the file (how the battery lists the points of a run). Unset, a
point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

KILL_AT = "CLOSEDLOOP_KILL_AT"
KILL_LOG = "CLOSEDLOOP_KILL_LOG"


def kill_point(name: str) -> None:
    """Die here (SIGKILL) when ``$CLOSEDLOOP_KILL_AT`` names this point."""
    log = os.environ.get(KILL_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
