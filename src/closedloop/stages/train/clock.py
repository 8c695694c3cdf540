"""The time budget's clock, kept in ``work/clock.json`` as the stage runs, so a crash does not buy a run
more time: a resumed stage starts its clock at what the interrupted attempts spent, phase by phase,
and spends only what is left of ``budget_minutes``.

A heartbeat thread adds the seconds since its last tick to the running phase and rewrites the file
atomically every ``interval`` seconds (and at every phase change), so at most one interval of work is
not counted when the process is killed. Only spent work counts: the time between the crash and the
resume does not (the machine may have been down for hours).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from closedloop.core.io import to_json, write_text_atomic

CLOCK_FILE = "clock.json"


class ClockRecord(BaseModel):
    """What ``work/clock.json`` holds."""

    spent: dict[str, float] = {}
    """Seconds spent per phase (``setup`` before the first phase), over every attempt so far."""
    attempts: int = 0
    """How many processes have run this stage (1 for a run never interrupted)."""


class BudgetClock:
    """Counts the seconds each phase spends, across crashes. Use as a context manager around the phases."""

    def __init__(self, work: Path, interval: float = 1.0) -> None:
        self.path = Path(work) / CLOCK_FILE
        self.interval = interval
        self.problem: str | None = None
        """Why an earlier attempt's clock could not be read (None when it could, or there was none)."""
        self.record = self._read()
        self.before = dict(self.record.spent)
        """What earlier attempts spent, per phase (empty for a fresh run)."""
        self.record.attempts += 1
        self.phase = "setup"
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> ClockRecord:
        if not self.path.is_file():
            return ClockRecord()
        try:
            return ClockRecord.model_validate(json.loads(self.path.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as exc:  # truncated or edited: never read half of it
            self.problem = f"{self.path.name} unreadable ({type(exc).__name__})"
            return ClockRecord()

    @property
    def resumed(self) -> bool:
        return self.record.attempts > 1

    @property
    def spent_before(self) -> float:
        """Seconds the interrupted attempts spent (0 for a fresh run)."""
        return float(sum(self.before.values()))

    def spent(self) -> dict[str, float]:
        """Seconds per phase so far, this attempt included."""
        with self._lock:
            self._tick()
            return dict(self.record.spent)

    def _tick(self) -> None:
        now = time.monotonic()
        self.record.spent[self.phase] = round(self.record.spent.get(self.phase, 0.0) + now - self._last, 3)
        self._last = now

    def save(self) -> None:
        with self._lock:
            self._tick()
            text = to_json(self.record.model_dump())
        write_text_atomic(self.path, text)

    def enter(self, phase: str) -> None:
        """The time from now on belongs to ``phase``."""
        self.save()
        with self._lock:
            self.phase = phase

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.save()

    def __enter__(self) -> BudgetClock:
        self.save()  # counts this attempt at once
        self._thread = threading.Thread(target=self._beat, name="closedloop-budget-clock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.save()
