"""Rule T20's scoring (benchmarks/tune_monitor_train_ref_t20.py): the union domain flag splits the domain level
between the held-out and the training-rows test as the monitor does, the shipped candidate scores as the
shipped replay, and the window protocol's new option leaves older saved sets' keys as they were."""

from __future__ import annotations

import argparse

import pytest
from tests.audit.test_bench_audit_common import load_bench

T20 = load_bench("tune_monitor_train_ref_t20")
DEFAULTS = load_bench("bench_monitor_defaults")
WINDOWS = load_bench("tune_monitor_test_windows")
ALPHA, DELTA = 0.05, 0.1
UNION = "shipped+train_reference_2000"
QUARTER = "shipped+train_reference_2000_share_0.25"


def window(end: int, domain_p: float, train_p: float, flags: list[str]) -> dict:
    """One saved window whose drift and ESS evidence flag nothing."""
    return {"flags": flags, "min_p": 0.5, "marginal": 0.02, "domain_p": domain_p, "ess": 0.8, "err": 0.1,
            "end": end, "low_positive": {}, "train_p": train_p}  # fmt: skip


def stream(
    pairs: list[tuple[float, float]], kind: str = "test", flags: list[list[str]] | None = None
) -> dict:
    flags = flags or [[] for _ in pairs]
    return {
        "d": 0,
        "o": 0,
        "kind": kind,
        "looks": [[200 * (k + 1), 0.5] for k in range(len(pairs))],
        "windows": [
            window(200 * (i + 1), d, t, f) for i, ((d, t), f) in enumerate(zip(pairs, flags, strict=True))
        ],
    }


def flagged(st: dict, name: str) -> list[bool]:
    c = T20.CANDIDATES[name]
    return [min(T20.margins_t20(st, i, c, ALPHA, DELTA).values()) <= 1 for i in range(len(st["windows"]))]


def test_union_splits_the_domain_level() -> None:
    # window 1 is the stream's first: its held-out level stays 0.05; later windows: 0.005 (shipped),
    # 0.0025 (union, share 0.5) or 0.00375 (share 0.25); the training-rows test at 0.0025 or 0.00125
    st = stream([(0.04, 0.5), (0.004, 0.5), (0.003, 0.5), (0.5, 0.002), (0.5, 0.001), (0.5, 0.5)])
    assert flagged(st, T20.SHIPPED) == [True, True, True, False, False, False]
    assert flagged(st, UNION) == [True, False, False, True, True, False]
    assert flagged(st, QUARTER) == [True, False, True, False, True, False]
    # the shipped candidate is bench_monitor_defaults' replay, whatever train_p says
    for i in range(len(st["windows"])):
        c = T20.CANDIDATES[T20.SHIPPED]
        assert T20.margins_t20(st, i, c, ALPHA, DELTA) == DEFAULTS.margins_shipped(st, i, c, ALPHA, DELTA)


def test_agreement_counts_the_runs_own_domain_flags() -> None:
    # the first window is left out (evaluated alone, the run's monitor had no stream for its first-window level)
    st = stream([(0.04, 0.5), (0.5, 0.001), (0.5, 0.5)], flags=[[], ["domain"], ["domain"]])
    assert T20.agreement([st], ALPHA, DELTA) == (1, 2)


def test_a_set_without_the_training_rows_test_is_refused() -> None:
    st = stream([(0.5, 0.5)])
    del st["windows"][0]["train_p"]
    with pytest.raises(ValueError, match="--train-reference-rows"):
        T20.margins_t20(st, 0, T20.CANDIDATES[UNION], ALPHA, DELTA)


def test_protocol_key_is_unchanged_when_the_option_is_off() -> None:
    ap = argparse.ArgumentParser()
    WINDOWS.protocol_arguments(ap, [20], "report", 1000, 8)
    off = ap.parse_args([])
    off.nets = "/x"
    assert "train_reference_rows" not in WINDOWS.protocol_key(off, 20)
    on = ap.parse_args(["--train-reference-rows", "2000"])
    on.nets = "/x"
    assert WINDOWS.protocol_key(on, 20)["train_reference_rows"] == 2000


def test_misses_names_the_shipped_misses_and_what_the_union_does(capsys) -> None:
    # windows 2-3 are off (err 0.1) and unflagged by the shipped defaults; the union catches window 2 only
    st = stream([(0.001, 0.5), (0.5, 0.001), (0.5, 0.004)])
    T20.misses("t0", [st], ALPHA, DELTA)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "window 2:" in out[0] and out[0].endswith("the union (share 0.5) flags it")
    assert "window 3:" in out[1] and out[1].endswith("does not flag it")
