"""Rule I21's scoring and diagnosis (benchmarks/tune_monitor_indist_i21.py, diag_monitor_indist_i21.py): the drift
flag at a share of its marginal threshold, the union domain flag of rule T20, clause 1's eligibility and clause
2's order, and the diagnosis' dominant cause per deployment."""

from __future__ import annotations

from tests.audit.test_bench_audit_common import load_bench

I21 = load_bench("tune_monitor_indist_i21")
DIAG = load_bench("diag_monitor_indist_i21")
DEFAULTS = load_bench("bench_monitor_defaults")
ALPHA, DELTA = 0.05, 0.1


def window(end: int, drift: float, domain_p: float = 0.5, train_p: float = 0.5, err: float = 0.0) -> dict:
    """One saved window; ``drift`` is its min-p over the marginal threshold 0.02."""
    return {"flags": [], "min_p": 0.02 * drift, "marginal": 0.02, "domain_p": domain_p, "ess": 0.8, "err": err,
            "end": end, "low_positive": {}, "train_p": train_p}  # fmt: skip


def stream(wins: list[dict], kind: str = "null", d: int = 0, look_p: float = 0.5) -> dict:
    return {"d": d, "o": 0, "kind": kind, "looks": [[w["end"], look_p] for w in wins], "windows": wins}


def flagged(st: dict, name: str) -> list[bool]:
    c = I21.CANDIDATES[name]
    return [min(I21.margins_i21(st, i, c, ALPHA, DELTA).values()) <= 1 for i in range(len(st["windows"]))]


def test_the_drift_flag_moves_with_its_factor_only() -> None:
    # drift min-p at 0.1, 0.3 and 0.8 of the marginal threshold: shipped flags all three, 0.5 the first two,
    # 0.2 the first only
    st = stream([window(200 * (i + 1), r) for i, r in enumerate((0.1, 0.3, 0.8))])
    assert flagged(st, "shipped") == [True, True, True]
    assert flagged(st, "shipped+drift_0.5") == [True, True, False]
    assert flagged(st, "shipped+drift_0.2") == [True, False, False]
    # the shipped candidate is bench_monitor_defaults' replay
    c = I21.CANDIDATES["shipped"]
    for i in range(3):
        assert I21.margins_i21(st, i, c, ALPHA, DELTA) == DEFAULTS.margins_shipped(st, i, c, ALPHA, DELTA)


def test_the_union_adds_the_training_rows_test() -> None:
    # window 2: the training-rows p 0.001 is under its share of the domain level (0.0025); the held-out p 0.004 is
    # under the shipped level 0.005 but not the union's held-out share 0.0025
    st = stream([window(200, 5.0), window(400, 5.0, train_p=0.001), window(600, 5.0, domain_p=0.004)])
    assert flagged(st, "shipped+drift_0.2") == [False, False, True]
    assert flagged(st, "shipped+drift_0.2+train_reference_2000") == [False, True, False]


def scores(over: int, flagged_n: int, test_off: int) -> list[dict]:
    return [{"over": over, "in_flagged": flagged_n / 100, "n_in": 100, "deployments": 8, "test_off": test_off,
             "n_test": 240, "in_off": 0, "in_kept": 100 - flagged_n}]  # fmt: skip


def test_eligibility_and_order(capsys) -> None:
    # more test windows off than shipped is not eligible, however few deployments it leaves above 10%
    sc = {
        "shipped": scores(3, 20, 5),
        "shipped+drift_0.2": scores(0, 5, 6),
        "shipped+drift_0.5": scores(1, 9, 5),
        "shipped+drift_0.2+train_reference_2000": scores(1, 8, 2),
    }
    keys, ok = I21.summarize(sc)
    assert ok == {
        "shipped": True,
        "shipped+drift_0.2": False,
        "shipped+drift_0.5": True,
        "shipped+drift_0.2+train_reference_2000": True,
    }
    assert I21.choose(keys, ok) == "shipped+drift_0.2+train_reference_2000"
    assert len(capsys.readouterr().out.splitlines()) == 4
    # a tie with the shipped defaults keeps them
    tie = {"shipped": scores(1, 8, 5), "shipped+drift_0.5": scores(1, 8, 0)}
    keys, ok = I21.summarize(tie)
    assert I21.choose(keys, ok) == "shipped"


def test_diagnosis_names_the_dominant_flag(capsys) -> None:
    cand = DEFAULTS.shipped(DEFAULTS.before_t21())
    # deployment 1: 3 of 4 windows flagged by drift (one with the domain test too); deployment 2: none flagged
    bad = stream(
        [window(200, 0.5, domain_p=0.001), window(400, 0.5), window(600, 0.9), window(800, 5.0)], d=1
    )
    good = stream([window(200 * (i + 1), 20.0) for i in range(4)], d=2)
    found = DIAG.diagnose_set("t0", [bad, good], cand, ALPHA, DELTA)
    assert found == ["drift"]
    out = capsys.readouterr().out
    assert "d1: 75% of 4" in out and "by that flag alone drift 2" in out and "d2" not in out


def test_heldout_summary_splits_at_ten_percent(capsys) -> None:
    # (in-distribution windows flagged, p against the training rows, KS p against the unseen pool, mean shift)
    DIAG.heldout_summary([(1.0, 0.001, 0.7, 0.03), (0.15, 0.02, 0.01, -0.05), (0.05, 0.6, 0.3, 0.0)])
    above, others = capsys.readouterr().out.splitlines()
    assert above.startswith("held-out draws of deployments above 10% (2):")
    assert "p median 0.011, under 0.05 in 2" in above and "KS p median 0.355, under 0.05 in 1" in above
    assert others.startswith("held-out draws of deployments the others (1):") and "under 0.05 in 0" in others
