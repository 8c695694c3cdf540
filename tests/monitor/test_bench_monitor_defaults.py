"""The shipped defaults' replay (benchmarks/bench_monitor_defaults.py): the sticky stream alarm at the
spending's shares withholds where W17's budget and the look flag do not, and the stream numbers count it."""

from __future__ import annotations

from tests.audit.test_bench_audit_common import load_bench
from tests.monitor.test_tune_monitor_flag_f19 import stream

DEF = load_bench("bench_monitor_defaults")
ALPHA, DELTA = 0.05, 0.1


def shipped() -> dict:
    return DEF.shipped(DEF.before_t21())


def flagged(st: dict, cand: dict) -> list[bool]:
    return [
        min(DEF.margins_shipped(st, i, cand, ALPHA, DELTA).values()) <= 1 for i in range(len(st["windows"]))
    ]


def test_alarm_at_third_look_withholds_every_later_window() -> None:
    cand = shipped()
    assert cand["alarm"] == "first3_late" and cand["look"] == "runs"
    # look 3 at 0.002: above the budget's level there (0.05 * 0.25 / 12 = 0.00104), under first3_late's alarm
    # (0.05 * 0.1 * 0.5 = 0.0025) and the look flag over runs (0.05 / 12 = 0.0042)
    st = stream("null", 0, [0.5, 0.5, 0.002] + [0.5] * 7, [0.01] * 10)
    assert flagged(st, cand) == [False, False] + [True] * 8
    # with the harmonic shares the alarm's third look is 0.05 * 0.1 / 12 = 0.00042: only the look flag's window
    assert flagged(st, {**cand, "alarm": "harmonic"}) == [False, False, True] + [False] * 7
    assert DEF.alarm_row(st["looks"], "first3_late", ALPHA, DELTA) == 600
    assert DEF.alarm_row(st["looks"], "harmonic", ALPHA, DELTA) is None


def test_training_counts_streams_and_windows() -> None:
    cand = shipped()
    streams = [
        stream(
            "null", 0, [0.5, 0.5, 0.002] + [0.5] * 7, [0.01] * 10
        ),  # alarmed at row 600: windows 3-10 withheld
        stream("null", 1, [0.5] * 10, [0.01] * 9 + [0.05]),  # quiet; its last window off by 0.05
        stream("test", 0, [0.0009, 0.5, 0.5], [0.1, 0.1, 0.1]),  # alarm at row 200: every window withheld
        stream(
            "test", 1, [0.5, 0.5, 0.5], [0.1, 0.01, 0.01]
        ),  # never alarms; its first window off, unflagged
    ]
    r = DEF.training(streams, cand, ALPHA, DELTA)
    assert (r["null_runs"], r["null_alarms"], r["deps_no_alarm"]) == (2, 1, 1)
    assert (r["orders"], r["w600"], r["w200"]) == (2, 1, 1)
    assert (r["test_n"], r["test_flagged"], r["test_off"]) == (6, 3, 1)
    assert r["in_n"] == 20 and r["in_flagged"] == 8 / 20 and r["over"] == 1 and r["dep_max"] == 0.8
    assert (r["in_kept"], r["in_ok"]) == (12, 11)
    # window 3 of the first null stream is the look flag's too, the 7 after it the alarm's alone; the alarmed
    # test stream's windows are the budget's too (0.0009 <= 0.05 * 0.25 / 2)
    assert r["by_alarm_only"] == 7


def test_s19_protocol_read_back_scores_the_shipped_spending(tmp_path, capsys) -> None:
    import json

    def looks(ps: list[float]) -> list[list[float]]:
        return [[200 * (k + 1), p, 1.0] for k, p in enumerate(ps)]

    # first3_late alarms at look 3 on p 0.002 (0.005 * 0.5), harmonic would not (0.005 / 12)
    res = {
        "null": [
            {"d": 0, "looks": looks([0.5, 0.5, 0.002] + [0.5] * 7)},
            {"d": 1, "looks": looks([0.5] * 10)},
        ],
        "test": [{"d": 0, "looks": looks([0.0009, 0.5, 0.5])}, {"d": 1, "looks": looks([0.5, 0.5, 0.5])}],
    }
    f = tmp_path / "t7_report_1440.json"
    f.write_text(json.dumps({"settings": {}, "results": res}))
    DEF.report_s19([str(f)], "first3_late", ALPHA * DELTA)
    out = capsys.readouterr().out
    assert (
        "[t7 S19 protocol, first3_late] 2 deployments; in-distribution streams of 2,000 alarmed 1 of 2" in out
    )
    assert "within 600 rows 50.0% of 2 orders (within 200 50.0%" in out
    assert "pooled 1 of 2 (50.0%) -> NOT met" in out
    DEF.report_s19([str(f)], "harmonic", ALPHA * DELTA)
    assert "alarmed 0 of 2" in capsys.readouterr().out


def test_e19_diagnosis_names_unflagged_test_windows_and_worst_deployments(tmp_path, capsys) -> None:
    import json

    ev = {"min_p": 0.5, "drift_level": 0.02, "domain_p": 0.2, "ess_fraction": 0.8}

    def win(kind: str, d: int, flagged: bool, acc: float, **more) -> dict:
        return (
            {"t": 9, "d": d, "kind": kind, "saved_flag": flagged, "evidence": ev, "acc_signed": acc}
            | {"heldout_platt": {"auc": 0.01, "acc": abs(acc)}}
            | more
        )

    test = {"order": 1, "pos": 0, "stream_p": 0.2, "stream_looks": 1}
    rows = [
        win("test", 5, False, 0.11, **test),  # unflagged and off: printed
        win("test", 5, True, 0.2, **test),  # flagged: not printed
        win("test", 6, False, 0.01, **test),  # within 0.03: not printed
        win("in", 5, False, 0.05),
        win("in", 5, False, -0.04),
        win("in", 6, False, 0.01),
        win("in", 6, True, 0.2),  # flagged: not counted
    ]
    f = tmp_path / "t9_1460.json"
    f.write_text(json.dumps(rows))
    DEF.diagnose_e19([str(f)])
    out = capsys.readouterr().out
    assert (
        out.count("unflagged, off") == 1
        and "test d5 order 1 window 1: unflagged, off AUC 0.010 ACC 0.110" in out
    )
    assert "off by > 0.03: 2 of 3; mean signed ACC error +0.0067; most off: d5 2 of 2" in out


def test_the_replay_models_the_defaults_before_t21() -> None:
    """Main's defaults keep 2,000 training rows since rule T21: ``before_t21`` models the defaults before it, and
    the replay of main's own adds the training rows' share of the domain level (session 21)."""
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    assert DEF.before_t21().train_reference_rows == 0 and "train" not in shipped()
    assert DEF.shipped(BuildMonitorProfileConfig()) == {**shipped(), "train": 0.5}


def test_main_defaults_replay_the_training_rows_union() -> None:
    """Session 21: with the training rows' share the domain flag is the union (held-out test at 0.0025, or the
    first window's 0.05; training-rows test at 0.0025), and a set without the training-rows test is refused."""
    import pytest

    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    cand = DEF.shipped(BuildMonitorProfileConfig())
    st = stream("test", 0, [0.5, 0.5, 0.5], [0.1, 0.1, 0.1])
    for w, domain_p, train_p in zip(st["windows"], [0.5, 0.004, 0.5], [0.5, 0.5, 0.002], strict=True):
        w["domain_p"], w["train_p"] = domain_p, train_p
    # window 2: held-out p 0.004 flags under the shipped level 0.005, not under the union's 0.0025;
    # window 3: the training rows alone flag it
    assert flagged(st, shipped()) == [False, True, False]
    union = [min(DEF.margins_now(st, i, cand, ALPHA, DELTA).values()) <= 1 for i in range(3)]
    assert union == [False, False, True]
    r = DEF.training([st], cand, ALPHA, DELTA)
    assert (r["test_n"], r["test_flagged"], r["test_off"]) == (3, 1, 2)
    # what the union moved against the held-out test alone: window 3 gained, window 2 lost
    moved = DEF.union_moves([st], cand, shipped(), ALPHA, DELTA)
    assert moved == {"test": (1, 1), "in-distribution": (0, 0)}
    del st["windows"][0]["train_p"]
    with pytest.raises(ValueError, match="train-reference-rows"):
        DEF.training([st], cand, ALPHA, DELTA)
