"""The domain check (classifier, importance weights, ESS), feedback marked random, recorded spot-check
picks, tables as a new reference, and the stream test's bets, with their bad inputs."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.core.errors import DataError
from closedloop.core.stage import RunContext
from closedloop.monitoring import Monitor
from closedloop.monitoring.domain import PERMUTATIONS, domain_check, weighted_platt
from closedloop.monitoring.drift import Sample
from closedloop.monitoring.features import table_features
from closedloop.monitoring.logmonitor import random_rows
from closedloop.monitoring.logreader import RouteRows, random_feedback
from closedloop.monitoring.profile import model_input, table_from_inputs
from closedloop.monitoring.requestlog import FeedbackRecord
from closedloop.monitoring.spotcheck import record_picks, recorded_picks
from closedloop.monitoring.stream import StreamTest
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import table_setup  # noqa: E402

from run_fixtures import save_artifact  # noqa: E402

FAST = {"calibration_windows": 30, "window_sizes": [50, 100], "permutations": 60}


def _sample(rng: np.random.Generator, n: int, shift: float = 0.0) -> Sample:
    p = 1 / (1 + np.exp(-(rng.normal(shift, 1.5, n))))
    emb = rng.normal(size=(n, 4)) + np.array([shift, 0, 0, 0])
    y = (rng.random(n) < p).astype(int)
    return Sample(features=np.zeros((n, 1)), embeddings=emb, proba=np.stack([1 - p, p], axis=1), labels=y)


def test_domain_check_separates_a_shift_and_weights_say_how_far():
    rng = np.random.default_rng(0)
    ref = _sample(rng, 150)
    same = [domain_check(ref, _sample(rng, 200), "binary", rng)[0] for _ in range(10)]
    assert sum(c.p_value <= 0.01 for c in same) <= 1
    assert min(c.ess_fraction for c in same) > 0.6 and max(abs(c.auc - 0.5) for c in same) < 0.15
    far, w = domain_check(ref, _sample(rng, 200, shift=1.5), "binary", rng)
    assert far.p_classifier < 1e-4 and far.auc > 0.7 and far.ess_fraction < 0.6
    assert far.p_value == pytest.approx(1 / (PERMUTATIONS + 1))  # no relabelling reaches the window's shift
    assert w.shape == (150,) and w.mean() == pytest.approx(1.0) and (w > 0).all()
    assert far.inputs[:2] == ["positive_log_odds", "confidence_log_odds"] and len(far.inputs) == 6
    # the live monitor has no embeddings: both sides then use the outputs only
    live = Sample(features=np.zeros((200, 1)), proba=_sample(rng, 200).proba)
    assert domain_check(ref, live, "binary", rng)[0].inputs == ["positive_log_odds", "confidence_log_odds"]


def test_weighted_calibration_follows_the_weights():
    rng = np.random.default_rng(1)
    ref = _sample(rng, 300)
    win = _sample(rng, 200).proba
    flat = weighted_platt(ref.proba, ref.labels, np.ones(300), win)
    assert flat.shape == (200, 2) and np.allclose(flat.sum(axis=1), 1)
    # labels consistent with the probabilities: Platt stays close to the identity
    assert np.abs(flat[:, 1] - win[:, 1]).mean() < 0.08


def test_domain_bad_input():
    rng = np.random.default_rng(2)
    ref = _sample(rng, 100)
    with pytest.raises(ValueError, match="at least 10 of each are needed"):
        domain_check(ref, _sample(rng, 5), "binary", rng)
    with pytest.raises(ValueError, match="has no probabilities"):
        domain_check(ref, Sample(features=np.zeros((50, 1))), "binary", rng)
    with pytest.raises(ValueError, match="single class"):
        weighted_platt(ref.proba, np.zeros(100), np.ones(100), ref.proba)


def test_monitor_flags_the_estimate_when_the_window_is_told_apart():
    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    out = BuildMonitorProfile(**FAST).execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", Path("."), seed=0)
    )
    assert out.reference.info.domain_alpha == 0.05 and out.reference.info.min_ess_fraction == 0.25
    mon = Monitor(out.reference, model)
    res = mon.check(bundle.splits["test"].X)
    assert res["domain"]["n_window"] == len(bundle.splits["test"].X) and 0 <= res["domain"]["auc"] <= 1
    # the reference side is every held-out row, not the reference half; the inputs include the columns
    info = out.reference.info
    assert res["domain"]["n_reference"] == info.reference_size + info.calibration_size > info.reference_size
    assert [i for i in res["domain"]["inputs"] if i.startswith("feature")]
    assert set(res["estimate_weighted"]) == set(res["estimated"] or res["estimate_withheld"])
    shifted = bundle.splits["test"].X.copy()
    shifted["a"] = shifted["a"] + 1.5
    res = mon.check(shifted)
    assert not res["estimate_reliable"] and res["estimated"] == {}
    assert "the window's inputs differ from the reference's (domain mean-shift test" in res["estimate_reason"]
    assert "domain" in res["estimate_flags"] and res["domain"]["test"] == "mean_shift"
    # switched off: no domain block
    prof = copy.copy(out.reference)
    prof.info = prof.info.model_copy(update={"domain_alpha": None, "min_ess_fraction": 0.0})
    off = Monitor(prof, model)
    assert off.check(bundle.splits["test"].X)["domain"] is None


def test_table_inputs_back_to_a_table():
    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    info = (
        BuildMonitorProfile(**FAST)
        .execute({"data": bundle, "task": task, "model": model}, RunContext("monitor", Path("."), seed=0))
        .reference.info
    )
    df = bundle.val.X
    logged = model_input(info, df)
    back = table_from_inputs(info, logged)
    assert list(back.columns) == ["a", "b", "color"] and isinstance(back["color"].dtype, pd.CategoricalDtype)
    again = table_features(back, info.input_columns, info.categories)
    assert np.array_equal(np.isnan(again), np.isnan(logged))
    assert np.allclose(np.nan_to_num(again, nan=-9), np.nan_to_num(logged, nan=-9))
    odd = logged.copy()
    odd[0, 2] = 7  # a code the reference never had: missing, not an error
    assert pd.isna(table_from_inputs(info, odd)["color"][0])
    with pytest.raises(ValueError, match=r"expected \(N, 3\) for columns \['a', 'b', 'color'\]"):
        table_from_inputs(info, logged[:, :2])
    with pytest.raises(ValueError, match="not a table"):
        table_from_inputs(info.model_copy(update={"kind": "images"}), logged)


def _rows(n: int) -> RouteRows:
    return RouteRows(
        route="champion",
        request_id=np.array([f"r{k}" for k in range(n)], dtype=object),
        index=np.zeros(n, dtype=np.int64),
        time=np.arange(n).astype("datetime64[s]").astype("datetime64[us]"),
        proba=np.full((n, 2), 0.5),
        decision=np.array(["a"] * n, dtype=object),
        model_version=np.array(["v"] * n, dtype=object),
        latency_ms=np.zeros(n),
        inputs=None,
        has_input=np.zeros(n, dtype=bool),
        feedback=np.array(["a"] * n, dtype=object),
        n_records=n,
        n_errors=0,
        feedback_random=np.arange(n) % 4 == 0,
    )


def test_feedback_marked_random_and_recorded_picks(tmp_path):
    assert FeedbackRecord(request_id="x", label="a").random is False
    assert FeedbackRecord(request_id="x", label="a", random=True).random is True
    rows = _rows(12)
    assert random_rows(rows, None).tolist() == [k % 4 == 0 for k in range(12)]
    rec = record_picks(tmp_path, rows, np.array([1, 2]), seed=3)
    doc = json.loads(rec.read_text())
    assert doc["rows"] == [["r1", 0], ["r2", 0]] and doc["seed"] == 3
    assert recorded_picks(tmp_path) == {("r1", 0), ("r2", 0)}
    assert random_rows(rows, tmp_path).tolist() == [k % 4 == 0 or k in (1, 2) for k in range(12)]
    (rec.parent / "broken.json").write_text('{"picked": []}')
    with pytest.raises(DataError, match=r"broken.json: not a spot-check record"):
        recorded_picks(tmp_path)


def test_latest_feedback_decides_the_random_mark():
    from closedloop.monitoring.logreader import FeedbackLine, Located

    def line(t: str, random: bool) -> Located:
        fb = FeedbackLine(kind="feedback", request_id="q", index=0, label="a", time=t, random=random)
        return Located(line=fb, file="f", lineno=1)

    assert random_feedback([line("2026-01-01T00:00:00Z", True)]) == {("q", 0)}
    assert random_feedback([line("2026-01-01T00:00:00Z", True), line("2026-01-02T00:00:00Z", False)]) == set()


def test_stream_bets_combine_and_refuse_bad_settings():
    rng = np.random.default_rng(0)
    cal = {"s": rng.random(200)}
    st = StreamTest(cal, 0.05, seed=0, bets=((2, 0.5), (10, 0.5)))
    status = st.update({"s": rng.random(400) * 0.3})  # p-values pile up at one end
    assert status.alarm and status.by_score["s"] == pytest.approx(status.e_value)
    for bad in ((), ((0, 0.5),), ((10, 1.5),)):
        with pytest.raises(
            ValueError, match="expected \\(bins >= 1, histogram weight in \\(0, 1\\]\\) pairs"
        ):
            StreamTest(cal, 0.05, bets=bad)


@pytest.mark.slow  # builds two profiles
def test_a_table_models_verified_period_becomes_its_reference(tmp_path):
    from closedloop.monitoring import ReferenceProfile
    from closedloop.stages.monitor.reference import set_reference

    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    profile = (
        BuildMonitorProfile(**FAST)
        .execute({"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp_path, seed=0))
        .reference
    )
    run = tmp_path / "run"
    save_artifact(run, "00_data", "data", bundle)
    save_artifact(run, "01_task", "task", task)
    save_artifact(run, "05_train", "model", model)
    save_artifact(run, "07_monitor", "reference", profile)
    mon = Monitor(profile, model)
    df = bundle.val.X
    rows = _rows(len(df))
    rows = RouteRows(
        **{
            **vars(rows),
            "inputs": model_input(profile.info, df),
            "has_input": np.ones(len(df), dtype=bool),
            "proba": mon.sample(mon.prepare(df)).proba,
        }
    )
    pos = np.arange(len(df))
    check = {"agrees_with_reference": True, "n": len(df)}
    new = set_reference(mon, run, rows, pos, bundle.val.y, check)
    ref = ReferenceProfile.load(new)
    assert ref.info.kind == "table" and ref.info.source["evaluated_on"] == "production_spot_check"
    assert ref.info.reference_size + ref.info.calibration_size == len(df)
    assert ref.info.categories == profile.info.categories
    # rows logged without their inputs cannot become a reference
    gaps = RouteRows(**{**vars(rows), "has_input": np.arange(len(df)) % 50 != 0})
    with pytest.raises(DataError, match="the log holds no inputs for 5 of the spot check's rows"):
        set_reference(mon, run, gaps, pos, bundle.val.y, check)


def test_a_logged_random_mark_reaches_the_rows(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
    from livelog_fixtures import feedback, request, write

    from closedloop.monitoring.logreader import read_log

    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    x = np.zeros((3, 4), dtype=np.float32)
    write(tmp_path, "requests-a-000000.jsonl", [request(x, proba, t=1, request_id="q", names=["a", "b"])])
    fb = [feedback("q", "b", t=2, index=0, random=True), feedback("q", "a", t=3, index=1)]
    fb.append(FeedbackRecord(request_id="q", index=2, label="b", random=True).model_dump())
    write(tmp_path, "feedback-a-000000.jsonl", fb)
    rows = read_log(tmp_path).champion
    assert rows.feedback_random.tolist() == [True, False, True]
    assert rows.take(np.array([1, 2])).feedback_random.tolist() == [False, True]


def test_domain_settings_bad_config():
    from closedloop.core.errors import ConfigError

    with pytest.raises(ConfigError, match="domain_alpha"):
        BuildMonitorProfile(domain_alpha=0.7)
    with pytest.raises(ConfigError, match="min_ess_fraction"):
        BuildMonitorProfile(min_ess_fraction=0)
    assert BuildMonitorProfile(domain_alpha=None).config.domain_alpha is None


def test_the_domain_rows_survive_a_save_and_an_older_profile_uses_its_reference(tmp_path):
    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    prof = (
        BuildMonitorProfile(**FAST)
        .execute({"data": bundle, "task": task, "model": model}, RunContext("monitor", Path("."), seed=0))
        .reference
    )
    # a binary task's stream test follows P(positive) alone (the confidence is a function of it)
    assert sorted(prof.stream) == ["positive_probability"]
    prof.save(tmp_path)
    back = type(prof).load(tmp_path)
    assert len(back.domain) == len(prof.domain) > len(back.reference)
    assert np.array_equal(back.domain.proba, prof.domain.proba)
    assert np.array_equal(back.domain.labels, prof.domain.labels)
    # a profile saved before the domain rows were kept: the domain check uses the reference sample
    with np.load(tmp_path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("domain_")}
    np.savez_compressed(tmp_path / "arrays.npz", **arrays)
    old = type(prof).load(tmp_path)
    assert old.domain is old.reference
    res = Monitor(old, model).check(bundle.splits["test"].X)
    assert res["domain"]["n_reference"] == len(old.reference)


def test_domain_inputs_skip_constant_and_fill_missing_columns():
    rng = np.random.default_rng(3)
    ref, win = _sample(rng, 120), _sample(rng, 120, shift=0.0)
    ref.features = np.c_[np.zeros(120), rng.normal(size=120)]
    win.features = np.c_[np.zeros(120), rng.normal(size=120) + 3.0]
    win.features[:10, 1] = np.nan  # missing table values are filled, not fatal
    chk, w = domain_check(ref, win, "binary", rng)
    assert "feature0" not in chk.inputs and "feature1" in chk.inputs  # the constant column says nothing
    assert (
        chk.p_classifier < 1e-6
        and chk.p_value == pytest.approx(1 / (PERMUTATIONS + 1))
        and np.isfinite(w).all()
    )
    off, _ = domain_check(ref, win, "binary", rng, features=False)
    assert "feature1" not in off.inputs and off.p_value > chk.p_value and off.p_classifier > chk.p_classifier
