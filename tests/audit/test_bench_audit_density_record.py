"""The re-split benchmark's record (``--record``): a run that stopped goes on where it was, counting each
re-split once, and its seed ranges and pooled counts are read back as printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.audit.test_bench_audit_common import load_bench

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split


def _table() -> DatasetBundle:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    y = rng.integers(0, 2, 120)
    meta = DatasetMeta(
        name="t", source="synthetic", kind="table", label_names=["0", "1"], feature_names=["a", "b"]
    )
    parts = (("train", slice(0, 72)), ("val", slice(72, 96)), ("test", slice(96, 120)))
    return DatasetBundle(
        meta=meta, splits={k: Split(X=X.iloc[s].reset_index(drop=True), y=y[s]) for k, s in parts}
    )


def test_a_recorded_resplit_is_not_audited_again_and_the_summary_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench("bench_audit_density")
    monkeypatch.setitem(bench.RESPLITS, "t", 4)
    monkeypatch.setattr(bench, "RESPLIT_SEEDS", bench.parse_seed_ranges(["10-11", "20-21"]))
    record = tmp_path / "t.jsonl"
    b = _table()
    bench.random_splits("t", b, 0.0, details=True, record=record)
    first = capsys.readouterr().out
    assert len(record.read_text().splitlines()) == 4
    assert "random re-splits (4, seeds 10-11, 20-21)" in first

    def no_audit(*args, **kwargs):
        raise AssertionError("a recorded re-split was audited again")

    monkeypatch.setattr(bench, "one_resplit", no_audit)
    bench.random_splits("t", b, 0.0, details=True, record=record)
    again = capsys.readouterr().out
    assert "4 re-split(s) taken from" in again
    assert again.splitlines()[1:] == first.splitlines()
    assert len(record.read_text().splitlines()) == 4  # nothing appended twice

    # a record made without an option's field cannot stand in for a run that needs it
    with pytest.raises(SystemExit, match="recorded without"):
        bench.random_splits("t", b, 0.0, before=True, record=record)


def test_a_run_that_stopped_goes_on_with_the_next_seed_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench("bench_audit_density")
    record = tmp_path / "t.jsonl"
    b = _table()
    monkeypatch.setattr(bench, "RESPLIT_SEEDS", [5, 6, 7])
    monkeypatch.setitem(bench.RESPLITS, "t", 2)
    bench.random_splits("t", b, 0.0, record=record)
    audited: list[int] = []
    real = bench.one_resplit

    def counting(b, seed, *args):
        audited.append(seed)
        return real(b, seed, *args)

    monkeypatch.setattr(bench, "one_resplit", counting)
    monkeypatch.setitem(bench.RESPLITS, "t", 3)
    bench.random_splits("t", b, 0.0, record=record)
    assert audited == [7]
    assert "random re-splits (3, seeds 5-7)" in capsys.readouterr().out
    # past the deadline: the recorded ones are still reported, nothing new is audited
    monkeypatch.setattr(bench, "DEADLINE", "00:00")
    monkeypatch.setattr(bench, "RESPLIT_SEEDS", [5, 6, 7, 8])
    monkeypatch.setitem(bench.RESPLITS, "t", 4)
    bench.random_splits("t", b, 0.0, record=record)
    out = capsys.readouterr().out
    assert audited == [7]
    assert "after 3 of 4 re-splits" in out and "random re-splits (3, seeds 5-7)" in out


def test_bad_seed_ranges_and_records_say_what_is_wrong(tmp_path: Path) -> None:
    bench = load_bench("bench_audit_density")
    assert bench.seed_ranges([8000, 8001, 8002, 10000, 10001, 12]) == "8000-8002, 10000-10001, 12"
    with pytest.raises(SystemExit, match="ends before it starts"):
        bench.parse_seed_ranges(["9-3"])
    with pytest.raises(SystemExit, match="repeat a seed"):
        bench.parse_seed_ranges(["1-5", "5-6"])
    with pytest.raises(SystemExit, match="not a seed or a range"):
        bench.parse_seed_ranges(["x-3"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"set": "t", "seed": 1}\nnot json\n')
    with pytest.raises(SystemExit, match="line 2 is not a re-split record"):
        bench.read_records(bad, "t")


def test_the_pooled_count_is_read_from_the_printed_lines_and_refuses_a_seed_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = load_bench("pool_audit_resplits")
    line = (
        "car (table): as released: ...\n   random re-splits ({n}, seeds {s}): a near-duplicate warning or error "
        "in {k} (x; target <= 5%)\n   each comparison's p under its own share of warn_alpha 0.05 (with an "
        "excess), over {n} re-splits: train-val {k} (x); train-held-out 1 (x)\n"
    )
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_text(line.format(n=400, s="7000-7399", k=16))
    b.write_text(line.format(n=1600, s="8000-8999, 10000-10599", k=50))
    c.write_text(line.format(n=10, s="7390-7399", k=0))
    runs = pool.runs_in(b, "car")
    assert (
        runs[0]["n"] == 1600
        and runs[0]["k"] == 50
        and runs[0]["under"] == {"train-val": 50, "train-held-out": 1}
    )
    pool.pooled("car", pool.runs_in(a, "car") + runs, "pooled")
    out = capsys.readouterr().out
    assert "66 of 2000 (3.30%" in out and "-> met" in out
    assert "not shown" in pool.reading(16, 400) and "not met" in pool.reading(30, 400)
    with pytest.raises(SystemExit, match="counted twice"):
        pool.pooled("car", pool.runs_in(a, "car") + pool.runs_in(c, "car"), "pooled")
    a.write_text(line.format(n=401, s="7000-7399", k=16))
    with pytest.raises(SystemExit, match="seeds 7000-7399 are 400"):
        pool.runs_in(a, "car")
