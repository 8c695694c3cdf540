"""Rule W20's scoring (benchmarks/tune_monitor_weak_w20.py): the low-positive flag marks the windows whose
one-sided p-value is under its level, the shipped candidate scores as F19's, and the recomputation from the
seeded draws is checked against a run's own numbers."""

from __future__ import annotations

import numpy as np
from tests.audit.test_bench_audit_common import load_bench

W20 = load_bench("tune_monitor_weak_w20")
DEFAULTS = load_bench("bench_monitor_defaults")
ALPHA, DELTA = 0.05, 0.1


def window(end: int, err: float, lp: dict) -> dict:
    """One saved window whose drift, domain and ESS evidence flags nothing, with its low-positive p-values."""
    return {"flags": [], "min_p": 0.5, "marginal": 0.02, "domain_p": 0.5, "ess": 0.8, "err": err, "end": end,
            "low_positive": lp}  # fmt: skip


def stream(kind: str, d: int, lps: list[dict], err: float) -> dict:
    return {
        "d": d,
        "o": 0,
        "kind": kind,
        "looks": [[200 * (k + 1), 0.5] for k in range(len(lps))],
        "windows": [window(200 * (i + 1), err, lp) for i, lp in enumerate(lps)],
    }


def test_low_positive_flag_reads_its_quantile_and_test() -> None:
    lps = [{"0.1": [0.0015, 0.0008], "0.2": [0.2, 0.1]}, {"0.1": [0.004, 0.003]}, {}]
    st = stream("test", 0, lps, 0.1)
    c = W20.CANDIDATES
    flagged = {
        name: [min(W20.margins_w20(st, i, c[name], ALPHA, DELTA).values()) <= 1 for i in range(3)]
        for name in c
    }
    assert flagged[W20.SHIPPED] == [False, False, False]
    assert flagged["shipped+low_positive_fisher_0.1@0.001"] == [False, False, False]
    assert flagged["shipped+low_positive_z_0.1@0.001"] == [True, False, False]
    assert flagged["shipped+low_positive_fisher_0.1@0.002"] == [True, False, False]
    assert flagged["shipped+low_positive_fisher_0.1@0.005"] == [True, True, False]
    assert flagged["shipped+low_positive_fisher_0.2@0.005"] == [False, False, False]
    null = stream("null", 0, [{"0.1": [0.001, 0.001]}] + [{}] * 9, 0.01)
    s = W20.score([st, null], c["shipped+low_positive_fisher_0.1@0.005"], ALPHA, DELTA)
    assert (s["test_off"], s["in_flagged"]) == (1, 1 / 10)
    # the shipped candidate's flags are bench_monitor_defaults' replay of the shipped monitor
    for s_ in (st, null):
        for i in range(len(s_["windows"])):
            m = W20.margins_w20(s_, i, c[W20.SHIPPED], ALPHA, DELTA)
            assert m.pop("low_positive") == float("inf")
            assert m == DEFAULTS.margins_shipped(s_, i, c[W20.SHIPPED], ALPHA, DELTA)


def test_recompute_fills_then_checks_a_runs_own_numbers() -> None:
    rng = np.random.default_rng(0)
    n, n_test = 2600, 300
    pu, pt = rng.uniform(size=n), rng.uniform(0.3, 1, size=n_test)
    outs = {"pu": np.c_[1 - pu, pu], "pt": np.c_[1 - pt, pt], "n": n, "thr": 0.5}
    settings = {"pool": 262, "null_streams": 1, "orders": 2}
    streams = [stream("null", 7, [{}] * 10, 0.01)] + [
        {**stream("test", 7, [{}] * 3, 0.1), "o": o} for o in range(2)
    ]
    for st in streams:
        for w in st["windows"]:
            del w["low_positive"]
    assert W20.recompute(streams, settings, outs) == (0, 0)  # filled, nothing to compare
    assert W20.recompute(streams, settings, outs) == (16, 16)  # the same draws give the same numbers
    streams[1]["windows"][2]["low_positive"]["0.1"][0] *= 1.5
    assert W20.recompute(streams, settings, outs) == (16, 15)
    # the test windows' scores sit high (0.3-1): more barely-positive calls than the unseen rows
    assert streams[2]["windows"][0]["low_positive"]["0.1"][0] < 0.05


def test_per_deployment_names_the_deployments_that_hold_the_misses(capsys) -> None:
    miss = {"0.1": [0.5, 0.5]}  # the low-positive check sees nothing: the chosen candidate misses it too
    caught = {"0.1": [0.001, 0.001]}  # under the chosen candidate's level (z-test, 0.002)
    sets = [
        (
            "t0 report 1",
            [
                stream("test", 1, [miss, caught, miss], 0.1),
                stream("test", 2, [{}, {}, {}], 0.01),  # within 0.03: never a miss
                stream("null", 1, [{}] * 10, 0.01),
            ],
        )
    ]
    W20.per_deployment(sets, ALPHA, DELTA)
    out = capsys.readouterr().out
    assert "1 of 2 deployments hold the shipped test windows unflagged and off: d1 3 of 3" in out
    assert "(shipped+low_positive_z_0.1@0.002: 2)" in out
    assert "over 1 sets: 3 test windows unflagged and off by shipped, in 1 of 2 deployments" in out
