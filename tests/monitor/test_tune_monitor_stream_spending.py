"""Rule S19's scoring (benchmarks/tune_monitor_stream_spending.py): each candidate's alarm row from the same
looks, the eligibility on every training, the choice and its tie-break, and clause 3 on the report trainings."""

from __future__ import annotations

from tests.audit.test_bench_audit_common import load_bench

from closedloop.monitoring.stream_reference import spend

S19 = load_bench("tune_monitor_stream_spending")
LEVEL = 0.005


def _stream(d: int, ps: list[float]) -> dict:
    return {"d": d, "looks": [(200 * k, p, p) for k, p in enumerate(ps, start=1)]}


def test_the_same_looks_alarm_at_each_candidates_own_row():
    # look 3 p = 0.002: under first3_late's 0.0025, above harmonic's 0.00042 and first3_even's 0.0015
    looks = _stream(0, [0.5, 0.5, 0.002])["looks"]
    rows = {
        c: S19.alarm_row(looks, LEVEL, [spend(k, c) for k in range(1, 4)])
        for c in ("harmonic", "first3_late")
    }
    assert rows == {"harmonic": None, "first3_late": 600}
    # a first look at p = 0.002 alarms under harmonic (0.0025) but not first3_late (0.001)
    looks = _stream(0, [0.002, 0.5, 0.5])["looks"]
    assert S19.alarm_row(looks, LEVEL, [spend(k, "harmonic") for k in range(1, 4)]) == 200
    assert S19.alarm_row(looks, LEVEL, [spend(k, "first3_late") for k in range(1, 4)]) is None


def _training(null_alarms: list[bool], hits: list[bool]) -> dict:
    """Scores of one training: one in-distribution stream per deployment, ``hits`` orders within 600 rows."""
    n = len(null_alarms)
    return {
        "null_alarm": sum(null_alarms) / n,
        "deps_clean": sum(not a for a in null_alarms) / n,
        "within600": sum(hits) / len(hits),
        "within200": 0.5,
    }


def test_choice_needs_eligibility_in_every_training_and_a_tie_keeps_harmonic():
    clean, hit9, hit10 = [False] * 20, [True] * 9 + [False], [True] * 10
    scores = {
        "harmonic": {1: _training(clean, hit9), 2: _training(clean, hit9)},
        "geometric": {1: _training(clean, hit9), 2: _training(clean, hit9)},
        # best detection, but 3 of 20 deployments alarmed in training 2 (85% < 90%): not eligible
        "first3_even": {1: _training(clean, hit10), 2: _training([True] * 3 + [False] * 17, hit10)},
        "first3_late": {1: _training(clean, hit10), 2: _training(clean, hit9)},
    }
    ch = S19.choose(scores, [1, 2])
    assert ch["eligible"] == {"harmonic": True, "geometric": True, "first3_even": False, "first3_late": True}
    assert ch["chosen"] == "harmonic"  # first3_late's lowest training (90%) ties harmonic's
    scores["first3_late"][2] = _training(clean, hit10)
    assert S19.choose(scores, [1, 2])["chosen"] == "first3_late"


def test_clause_3_needs_a_higher_lowest_share_and_no_training_lower():
    clean = [False] * 20
    ship = {1: _training(clean, [True] * 9 + [False]), 2: _training(clean, [True] * 10)}
    better = {1: _training(clean, [True] * 10), 2: _training(clean, [True] * 10)}
    mixed = {1: _training(clean, [True] * 10), 2: _training(clean, [True] * 9 + [False] * 1)}
    assert S19.adopted({"harmonic": ship, "first3_late": better}, [1, 2], "first3_late")
    # a higher share in one training, lower in the other: the lowest ties, so nothing replaces harmonic
    assert not S19.adopted({"harmonic": ship, "first3_late": mixed}, [1, 2], "first3_late")
    # a higher lowest share (90% against 80%) but lower in training 2 (95% against 100%): harmonic stays
    ship2 = {1: _training(clean, [True] * 16 + [False] * 4), 2: _training(clean, [True] * 20)}
    lower = {1: _training(clean, [True] * 18 + [False] * 2), 2: _training(clean, [True] * 19 + [False])}
    assert not S19.adopted({"harmonic": ship2, "first3_late": lower}, [1, 2], "first3_late")
    alarmed = {1: better[1], 2: _training([True] * 2 + [False] * 18, [True] * 10)}  # 90% clean, 10% alarms
    assert not S19.adopted({"harmonic": ship, "first3_late": alarmed}, [1, 2], "first3_late")
    assert not S19.adopted({"harmonic": ship}, [1, 2], "harmonic")
