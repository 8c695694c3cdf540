"""The budget's clock across crashes (``work/clock.json``): what an attempt spent is kept for the next,
the time between a crash and the resume is not counted, and a file cut by the kill is never half read."""

from __future__ import annotations

import json
import time
from pathlib import Path

from closedloop.stages.train.clock import CLOCK_FILE, BudgetClock


def test_a_resumed_clock_starts_at_what_the_interrupted_attempt_spent(tmp_path: Path) -> None:
    with BudgetClock(tmp_path, interval=0.05) as first:
        first.enter("scale_up")
        time.sleep(0.3)
        first.save()  # what the heartbeat writes; the process then dies without closing the clock
    spent = json.loads((tmp_path / CLOCK_FILE).read_text())["spent"]
    assert spent["scale_up"] >= 0.3
    time.sleep(0.3)  # between the crash and the resume: not the run's time
    again = BudgetClock(tmp_path)
    assert again.resumed and again.record.attempts == 2 and again.problem is None
    assert again.before["scale_up"] == spent["scale_up"]
    assert again.spent_before < 0.3 + 0.3  # the pause is not counted


def test_a_clock_file_cut_by_the_kill_is_detected_not_half_read(tmp_path: Path) -> None:
    with BudgetClock(tmp_path) as first:
        first.enter("tune")
    path = tmp_path / CLOCK_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again = BudgetClock(tmp_path)
    assert again.problem is not None and CLOCK_FILE in again.problem and "unreadable" in again.problem
    assert again.before == {} and again.spent_before == 0.0  # nothing from half a file
