"""Ledgers: the test-set custody record and the count of configurations evaluated on validation.

The test ledger is a JSON-lines file that outlives a single run: ``<runs_dir>/<name>/test_ledger.jsonl``
keeps every opening of the test split for that pipeline name, and each run directory gets a copy of
its own openings. An evaluation opening for a fingerprint that already opened the test set in another
run is refused unless the user unseals it with a reason (``--unseal-test "reason"``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from closedloop.core.errors import SealedTestError
from closedloop.core.io import append_jsonl

Purpose = Literal["evaluation", "audit"]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a crash must not lock the test set forever
    return out


@dataclass
class TestLedger:
    """Records and polices openings of the test split."""

    __test__ = False  # not a pytest class

    global_path: Path
    run_path: Path
    run_id: str
    unseal_reason: str | None = None

    def entries(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.run_path)

    def open(self, *, stage: str, fingerprint: str, purpose: Purpose, reason: str) -> dict[str, Any]:
        if not reason or not reason.strip():
            raise SealedTestError(f"stage {stage!r}: opening the test split needs a reason")
        previous = [
            e
            for e in _read_jsonl(self.global_path)
            if e.get("fingerprint") == fingerprint
            and e.get("purpose") == "evaluation"
            and e.get("run_id") != self.run_id
        ]
        unsealed = False
        if purpose == "evaluation" and previous:
            if not self.unseal_reason:
                first = previous[0]
                raise SealedTestError(
                    f"stage {stage!r}: the test split was already opened for this exact pipeline "
                    f"(fingerprint {fingerprint[:12]}) on {first.get('time')} in run {first.get('run_id')}. "
                    "Opening it again turns the test set into a second validation set. Change the "
                    'pipeline, or rerun with --unseal-test "<reason>" to record a deliberate re-opening.'
                )
            unsealed = True
        record = {
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "run_id": self.run_id,
            "stage": stage,
            "fingerprint": fingerprint,
            "purpose": purpose,
            "reason": reason,
            "unsealed": unsealed,
            "unseal_reason": self.unseal_reason if unsealed else None,
            "previous_openings": len(previous),
        }
        append_jsonl(self.global_path, record)
        append_jsonl(self.run_path, record)
        return record


@dataclass
class ValidationLedger:
    """Every configuration evaluated on validation, so a report can say "selected among N"."""

    path: Path
    entries_: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self, *, stage: str, description: str, params: dict[str, Any], metrics: dict[str, Any]
    ) -> None:
        rec = {"stage": stage, "description": description, "params": params, "metrics": metrics}
        self.entries_.append(rec)
        append_jsonl(self.path, rec)

    def entries(self, stage: str | None = None) -> list[dict[str, Any]]:
        rows = _read_jsonl(self.path)
        return [r for r in rows if stage is None or r.get("stage") == stage]

    def count(self, stage: str | None = None) -> int:
        return len(self.entries(stage))
