"""Rule F19's scoring (benchmarks/tune_monitor_flag_f19.py): the non-sticky look flag marks only the window
that holds a low look, the sticky budget every later one, and the shipped candidate scores as W17 did."""

from __future__ import annotations

from tests.audit.test_bench_audit_common import load_bench

F19 = load_bench("tune_monitor_flag_f19")
W16 = load_bench("tune_monitor_test_windows")
ALPHA, DELTA = 0.05, 0.1


def window(end: int, err: float, domain_p: float = 0.5) -> dict:
    """One saved window whose own drift, domain and ESS evidence flags nothing."""
    return {
        "flags": [],
        "min_p": 0.5,
        "marginal": 0.02,
        "domain_p": domain_p,
        "ess": 0.8,
        "err": err,
        "end": end,
    }


def stream(kind: str, d: int, looks: list[float], errs: list[float], first_p: float = 0.5) -> dict:
    wins = [window(200 * (i + 1), e, first_p if i == 0 else 0.5) for i, e in enumerate(errs)]
    return {
        "d": d,
        "o": 0,
        "kind": kind,
        "looks": [[200 * (k + 1), p] for k, p in enumerate(looks)],
        "windows": wins,
    }


def test_look_flag_is_not_sticky() -> None:
    # look 2 at 0.005: under the level over runs (0.05/6 = 0.0083), above the W17 budget's (0.0021);
    # look 3 back at 0.3: the look flag marks window 2 only
    st = stream("test", 0, [0.4, 0.005, 0.3], [0.1, 0.1, 0.1])
    runs = {**F19.W17, "look": "runs"}
    flagged = [min(F19.margins_f19(st, i, runs, ALPHA, DELTA).values()) <= 1 for i in range(3)]
    assert flagged == [False, True, False]
    assert abs(F19.look_margin(st, 1, "runs", ALPHA) - 0.005 / (ALPHA / 6)) < 1e-12
    # at 0.01 every look: the same window, nothing else
    assert [F19.look_margin(st, i, 0.01, ALPHA) <= 1 for i in range(3)] == [False, True, False]
    # the shipped default lets all three through; a look under the budget withholds every later window
    assert all(min(F19.margins_f19(st, i, F19.W17, ALPHA, DELTA).values()) > 1 for i in range(3))
    low = stream("test", 0, [0.4, 0.001, 0.3], [0.1, 0.1, 0.1])
    assert [min(F19.margins_f19(low, i, F19.W17, ALPHA, DELTA).values()) <= 1 for i in range(3)] == [
        False,
        True,
        True,
    ]


def test_scores_count_what_each_candidate_flags() -> None:
    streams = [
        stream("test", 0, [0.4, 0.005, 0.3], [0.1, 0.1, 0.01]),  # window 2 off, caught by the look flag only
        stream(
            "test", 1, [0.4, 0.5, 0.5], [0.1, 0.01, 0.01], first_p=0.08
        ),  # a first window at domain p 0.08
        stream("null", 0, [0.5] * 10, [0.01] * 10),
        # a look 2 at 0.009: above the level over runs there (0.0083), under 0.01
        stream("null", 1, [0.5, 0.009] + [0.5] * 8, [0.01] * 10),
    ]
    s = {c: F19.score(streams, cand, ALPHA, DELTA) for c, cand in F19.CANDIDATES.items()}
    assert s["w17"]["test_off"] == 3 and s["w17"]["in_flagged"] == 0
    assert s["w17+look_runs"]["test_off"] == 2
    assert s["w17+first_0.1"]["test_off"] == 2
    assert s["w17+look_runs+first_0.1"]["test_off"] == 1
    assert s["w17+look_0.01"]["in_flagged"] == 1 / 20 and s["w17+look_runs"]["in_flagged"] == 0
    # the shipped candidate is scored exactly as tune_monitor_test_windows scores W17's rule
    assert F19.score(streams, F19.W17, ALPHA, DELTA) == W16.score(streams, F19.W17, ALPHA, DELTA)
