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


def _append(path: Path, record: dict[str, Any]) -> None:
    """Append one record, first closing a torn last line (a crash mid-write) so the new record
    starts on its own line and stays readable."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, 2)
            torn = f.read(1) != b"\n"
        if torn:
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n")
    append_jsonl(path, record)


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

    def _previous(self, fingerprint: str) -> list[dict[str, Any]]:
        """Evaluation openings of ``fingerprint`` by other runs."""
        return [
            e
            for e in _read_jsonl(self.global_path)
            if e.get("fingerprint") == fingerprint
            and e.get("purpose") == "evaluation"
            and e.get("run_id") != self.run_id
        ]

    def refuse_if_sealed(self, stage: str, fingerprint: str) -> None:
        """Raise :class:`SealedTestError` when an evaluation opening of ``fingerprint`` would be refused
        (another run opened it and this one was not unsealed). The pipeline calls it before a stage
        that scores on test runs, so the refusal costs no training time."""
        previous = self._previous(fingerprint)
        if previous and not self.unseal_reason:
            first = previous[0]
            raise SealedTestError(
                f"stage {stage!r}: the test split was already opened for this exact pipeline "
                f"(fingerprint {fingerprint[:12]}) on {first.get('time')} in run {first.get('run_id')}. "
                "Opening it again turns the test set into a second validation set. Change the "
                'pipeline, or rerun with --unseal-test "<reason>" to record a deliberate re-opening.'
            )

    def open(self, *, stage: str, fingerprint: str, purpose: Purpose, reason: str) -> dict[str, Any]:
        if not reason or not reason.strip():
            raise SealedTestError(f"stage {stage!r}: opening the test split needs a reason")
        previous = self._previous(fingerprint)
        again = [  # this run's stage opened it before a crash: the resumed attempt is the same opening
            e
            for e in self.entries()
            if e.get("run_id") == self.run_id
            and (e.get("stage"), e.get("fingerprint"), e.get("purpose"), e.get("reason"))
            == (stage, fingerprint, purpose, reason)
        ]
        if again:
            return again[0]
        unsealed = False
        if purpose == "evaluation" and previous:
            self.refuse_if_sealed(stage, fingerprint)
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
        _append(self.global_path, record)
        if Path(self.run_path) != Path(self.global_path):
            _append(self.run_path, record)
        return record

    def history(self, fingerprint: str | None = None) -> list[dict[str, Any]]:
        """Every opening recorded for this pipeline (all runs), optionally for one fingerprint."""
        rows = _read_jsonl(self.global_path)
        return [r for r in rows if fingerprint is None or r.get("fingerprint") == fingerprint]

    def is_sealed(self, fingerprint: str) -> bool:
        """True when an evaluation opening for ``fingerprint`` would be refused (without unsealing)."""
        return any(
            e.get("purpose") == "evaluation" and e.get("run_id") != self.run_id
            for e in self.history(fingerprint)
        )

    def rows(self) -> list[dict[str, Any]]:
        """This run's openings as report table rows (when, by what, why)."""
        return [
            {
                "when": e.get("time"),
                "stage": e.get("stage"),
                "purpose": e.get("purpose"),
                "reason": e.get("reason"),
                "unsealed": e.get("unseal_reason") or "",
                "earlier openings": e.get("previous_openings", 0),
            }
            for e in self.entries()
        ]


def _entry_key(rec: dict[str, Any]) -> str:
    """A validation entry without its time: equal for an evaluation re-done after a crash (the stage
    names each configuration it evaluates, and the evaluation is deterministic)."""
    from closedloop.core.io import canonical_json

    return canonical_json({k: v for k, v in rec.items() if k != "time"})


@dataclass
class ValidationLedger:
    """Every configuration evaluated on validation, so a report can say "selected among N"."""

    path: Path
    entries_: list[dict[str, Any]] = field(default_factory=list)
    _keys: set[str] | None = field(default=None, repr=False)
    """What is already in the file (loaded at the first record): an identical entry is not added twice."""

    def record(
        self, *, stage: str, description: str, params: dict[str, Any], metrics: dict[str, Any]
    ) -> None:
        rec = {
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "stage": stage,
            "description": description,
            "params": params,
            "metrics": metrics,
        }
        key = _entry_key(rec)
        if self._keys is None:
            self._keys = {_entry_key(r) for r in self.entries()}
        if key in self._keys:  # the same evaluation, re-done by a stage resumed after a crash
            return
        self._keys.add(key)
        self.entries_.append(rec)
        _append(self.path, rec)

    def entries(self, stage: str | None = None) -> list[dict[str, Any]]:
        rows = _read_jsonl(self.path)
        return [r for r in rows if stage is None or r.get("stage") == stage]

    def count(self, stage: str | None = None) -> int:
        """How many configurations were evaluated on validation (in one stage, or in all)."""
        return len(self.entries(stage))

    def by_stage(self) -> dict[str, int]:
        """Stage -> number of configurations it evaluated on validation, in first-seen order."""
        out: dict[str, int] = {}
        for r in self.entries():
            out[str(r.get("stage"))] = out.get(str(r.get("stage")), 0) + 1
        return out

    def selected_among(self, stage: str | None = None) -> str:
        """The report's sentence, e.g. "selected among 14 configurations (baseline: 6, train: 8)"."""
        n = self.count(stage)
        text = f"selected among {n} configuration{'s' if n != 1 else ''} evaluated on validation"
        parts = self.by_stage() if stage is None else {}
        if len(parts) > 1:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in parts.items()) + ")"
        return text

    def rows(self, stage: str | None = None) -> list[dict[str, Any]]:
        """Report table rows: what was evaluated and its validation metrics."""
        return [
            {"stage": r.get("stage"), "configuration": r.get("description"), **(r.get("metrics") or {})}
            for r in self.entries(stage)
        ]
