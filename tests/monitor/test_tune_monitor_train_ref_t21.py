"""Rule T21's scoring (benchmarks/tune_monitor_train_ref_t21.py): 1(b) counts a deployment above the line
with at most one window more than shipped as shipped counts it, a development set joins T20's streams with
the extra ones only where the check window matches, and the window protocol's new option leaves older saved
sets' keys as they were."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from tests.audit.test_bench_audit_common import load_bench

T21 = load_bench("tune_monitor_train_ref_t21")
WINDOWS = load_bench("tune_monitor_test_windows")


def test_above_line_forgives_one_window_only() -> None:
    ship = {1: (6, 60), 2: (6, 60), 3: (7, 60), 4: (3, 60), 5: (8, 60)}
    cand = {1: (7, 60), 2: (8, 60), 3: (8, 60), 4: (5, 60), 5: (6, 60)}
    # d1: 6 -> 7, one window more: counted as shipped (below); d2: 6 -> 8 counts; d3: shipped is above
    # already, so 8 counts; d4 stays below; d5 falls below the line
    assert T21.above_line(cand, ship) == (2, 2 + 1)
    assert T21.above_line(ship, ship) == (2, 2)


def window(first: float) -> dict:
    return {"flags": [], "min_p": 0.5, "marginal": 0.02, "domain_p": first, "ess": 0.8, "err": 0.0, "end": 200,
            "low_positive": {}, "train_p": 0.5}  # fmt: skip


def stream(d: int, o: int, kind: str, first: float = 0.5) -> dict:
    return {"d": d, "o": o, "kind": kind, "looks": [[200, 0.5]], "windows": [window(first)]}


SETTINGS = {"nets": "/x", "remove": 2500, "half": "report", "first_draw": 10, "draws": 8, "pool": 262,
            "null_streams": 2, "orders": 10, "seed": 5, "train_reference_rows": 2000}  # fmt: skip


def write_sets(tmp_path: Path, check_first: float) -> tuple[str, str]:
    base = tmp_path / "base"
    base.mkdir()
    streams = [stream(d, o, k) for d in (10, 11, 12) for o, k in ((0, "null"), (1, "null"), (0, "test"))]
    (base / "t5_report_10.json").write_text(json.dumps({"settings": SETTINGS, "streams": streams}))
    extra = [stream(d, 0, "check", check_first if d == 12 else 0.5) for d in (10, 11, 12)]
    extra += [stream(d, o, "null") for d in (10, 11, 12) for o in range(2, 2 + T21.EXTRA)]
    extra += [stream(13, 0, "check"), stream(13, 2, "null")]  # stopped: its extra streams unfinished
    f = tmp_path / "t5_report_10.json"
    settings = {**SETTINGS, "extra_null_streams": T21.EXTRA, "extra_only": True}
    f.write_text(json.dumps({"settings": settings, "streams": extra}))
    return str(f), str(base)


def test_merge_joins_finished_deployments(tmp_path: Path) -> None:
    f, base = write_sets(tmp_path, 0.5)
    name, streams = T21.merge(f, [base])
    assert name == "t5 report 10"
    assert sorted({s["d"] for s in streams}) == [10, 11, 12]
    assert sum(s["kind"] == "null" for s in streams) == 3 * (2 + T21.EXTRA)
    assert not any(s["kind"] == "check" for s in streams)


def test_merge_refuses_a_check_window_that_differs(tmp_path: Path) -> None:
    f, base = write_sets(tmp_path, 0.01)
    with pytest.raises(SystemExit, match="check windows differ"):
        T21.merge(f, [base])


def test_protocol_key_is_unchanged_when_the_option_is_off() -> None:
    ap = argparse.ArgumentParser()
    WINDOWS.protocol_arguments(ap, [20], "report", 1000, 8)
    args = ap.parse_args(["--train-reference-rows", "2000"])
    args.nets = "/x"
    assert "extra_null_streams" not in WINDOWS.protocol_key(args, 20)
    args.extra_null_streams, args.extra_only = 4, True
    key = WINDOWS.protocol_key(args, 20)
    assert key["extra_null_streams"] == 4 and key["extra_only"] is True


def test_clause_1a_amended_allows_one_window_per_deployment() -> None:
    ship = {"in_flagged": 58 / 480, "n_in": 480, "deployments": 8}
    two_more = {**ship, "in_flagged": 60 / 480}
    nine_more = {**ship, "in_flagged": 67 / 480}
    assert not T21.clause_1a(two_more, ship, amended=False)
    assert T21.clause_1a(two_more, ship, amended=True)
    assert not T21.clause_1a(nine_more, ship, amended=True)
    low = {**ship, "in_flagged": 0.05}
    assert T21.clause_1a({**low, "in_flagged": 0.1}, low, amended=False)  # at most 10 %: eligible either way
