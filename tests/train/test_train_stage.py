"""The train stage end to end on tiny digits: phases, ledgers, summary, report, resume, bad input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from closedloop.core.errors import ConfigError, StageFailedError
from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.models.registry import build_network
from closedloop.models.trained import TrainedModel
from closedloop.stages.train import TrainModel
from closedloop.stages.train.engine import Engine

from .conftest import TINY, digits_bundle, make_ctx, one_rung_mlp


@pytest.fixture(scope="module")
def baseline(binary_digits, binary_task, tmp_path_factory):
    from closedloop.stages.baseline import FitBaselines

    ctx = make_ctx(tmp_path_factory.mktemp("baseline"))
    ctx.stage_name = "baseline"
    return (
        FitBaselines(n_resamples=200, knn=False)
        .execute({"data": binary_digits, "task": binary_task}, ctx)
        .baseline
    )


@pytest.fixture(scope="module")
def full_run(binary_digits, binary_task, baseline, tmp_path_factory):
    d = tmp_path_factory.mktemp("train_full")
    ctx = make_ctx(d)
    stage = TrainModel(**TINY)
    out = stage.execute({"data": binary_digits, "task": binary_task, "baseline": baseline}, ctx)
    return stage, out, ctx


def test_train_stage_phases_summary_and_ledgers(full_run, binary_digits, tmp_path) -> None:
    stage, out, ctx = full_run
    s = stage.summarize(out)
    assert set(s["test"]) == {"auc", "acc", "f1"}
    for v in s["test"].values():
        assert v["ci95"][0] <= v["value"] <= v["ci95"][1]
    assert s["test"]["auc"]["value"] > 0.9
    assert set(s["beats_baseline"]) >= {"delta", "ci95", "p_value", "n_configs", "significant"}
    # every configuration scored on validation is in the ledger and counted
    assert s["n_configs"] == ctx.validation_ledger.count("train") == s["beats_baseline"]["n_configs"]
    assert s["n_configs"] >= 1 + 1 + TINY["n_trials"]  # default model, >= 1 rung, trials
    # the test split was opened exactly once, for the final evaluation
    opened = ctx.test_ledger.entries()
    assert (
        len(opened) == 1
        and opened[0]["purpose"] == "evaluation"
        and opened[0]["reason"] == "final evaluation"
    )
    phases = {d["phase"] for d in s["decisions"]}
    assert {"sanity", "beat_baseline", "scale_up", "tune", "final"} <= phases
    json.dumps(s)  # summary.json-ready
    for f in out.evaluation.figures:
        assert (ctx.stage_dir / f["path"]).is_file()
    # artifacts round-trip and the model predicts in the package convention
    out.model.save(tmp_path / "m")
    back = TrainedModel.load(tmp_path / "m")
    X = binary_digits.val.X[:7]
    np.testing.assert_allclose(back.predict_proba(X), out.model.predict_proba(X), rtol=1e-5)
    assert back.predict_proba(X).shape == (7, 2) and back.threshold is not None
    out.evaluation.save(tmp_path / "e")
    ev = type(out.evaluation).load(tmp_path / "e")
    blocks = stage.report(type(out)(model=back, evaluation=ev), ctx.stage_dir)
    titles = [b.title for b in blocks if hasattr(b, "blocks")]
    assert "3. Scale up until it overfits" in titles and "5. Final fit and test" in titles


class _Killed(Exception):
    pass


def _resume_run(binary_digits, binary_task, baseline, tmp_path, monkeypatch, when: str) -> dict[str, Any]:
    real_fit = Engine.fit
    calls = {"tune": 0}

    def crashing_fit(self, net, train, val, hp, **kw):
        ck = kw.get("checkpoint")
        if when == "tune" and kw.get("on_epoch") is not None:
            calls["tune"] += 1
            if calls["tune"] == 2:  # second trial: killed after its first epoch
                inner = kw["on_epoch"]

                def kill(epoch, rec):
                    inner(epoch, rec)
                    if epoch == 1:
                        raise _Killed

                kw["on_epoch"] = kill
        if when == "final" and ck is not None and ck.name.startswith("final"):

            def kill_final(epoch, rec):
                raise _Killed

            kw["on_epoch"] = kill_final
        return real_fit(self, net, train, val, hp, **kw)

    ctx = make_ctx(tmp_path / when)
    with monkeypatch.context() as m:
        m.setattr(Engine, "fit", crashing_fit)
        with pytest.raises(_Killed):
            TrainModel(**TINY).execute(
                {"data": binary_digits, "task": binary_task, "baseline": baseline}, ctx
            )
    assert ctx.test_ledger.entries() == []  # killed before the test opening
    stage = TrainModel(**TINY)
    out = stage.execute(
        {"data": binary_digits, "task": binary_task, "baseline": baseline}, make_ctx(tmp_path / when)
    )
    return stage.summarize(out)


@pytest.mark.parametrize("when", ["tune", "final"])
def test_train_stage_resume_after_kill_matches_uninterrupted(
    when, full_run, binary_digits, binary_task, baseline, tmp_path, monkeypatch
) -> None:
    stage, out, _ = full_run
    expected = stage.summarize(out)
    got = _resume_run(binary_digits, binary_task, baseline, tmp_path, monkeypatch, when)
    for name, v in expected["test"].items():
        assert got["test"][name]["value"] == pytest.approx(v["value"], abs=1e-9)
    assert got["threshold"] == pytest.approx(expected["threshold"])
    assert got["n_configs"] == expected["n_configs"]


def test_train_stage_damaged_work_files_are_run_again_never_half_read(
    full_run, binary_digits, binary_task, baseline, tmp_path
) -> None:
    import shutil

    stage, out, ctx = full_run
    expected = stage.summarize(out)
    shutil.copytree(ctx.stage_dir, tmp_path / "copy")
    work = tmp_path / "copy" / "work"
    phase = work / "phase_scale_up.json"
    phase.write_bytes(phase.read_bytes()[: phase.stat().st_size // 2])  # as if cut by a kill
    (work / "final_seed0.pt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    n_ledger = ctx.validation_ledger.count()
    again = TrainModel(**TINY)
    got = again.summarize(
        again.execute(
            {"data": binary_digits, "task": binary_task, "baseline": baseline}, make_ctx(tmp_path / "copy")
        )
    )
    assert any("phase_scale_up.json) is damaged" in d["decision"] for d in got["decisions"])
    for name, v in expected["test"].items():
        assert got["test"][name]["value"] == v["value"]
    assert (got["temperature"], got["n_configs"]) == (expected["temperature"], expected["n_configs"])
    # the re-run rungs and the re-opened test split are the same evaluations, not new ones
    assert ValidationLedger(tmp_path / "copy" / "validation.jsonl").count() == n_ledger
    assert (
        len(TestLedger(tmp_path / "copy" / "g.jsonl", tmp_path / "copy" / "run_test.jsonl", "r1").entries())
        == 1
    )


class _WrongShape(TrainModel):
    def build_network(self, spec, input_shape, n_logits):
        return build_network(spec, input_shape, n_logits + 2)


class _IgnoresInput(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.head = torch.nn.Linear(1, n)

    def features(self, x):
        return torch.zeros(len(x), 1)

    def forward(self, x):
        return self.head(self.features(x))


class _CannotLearn(TrainModel):
    def build_network(self, spec, input_shape, n_logits):
        return _IgnoresInput(n_logits)


def test_train_custom_model_with_wrong_output_shape_names_both_shapes(
    binary_digits, binary_task, tmp_path
) -> None:
    with pytest.raises(ConfigError, match=r"shape \(2, 3\).*needs shape \(2, 1\)"):
        _WrongShape(**TINY).execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path))


def test_train_model_that_cannot_fit_one_batch_gets_a_diagnosis(binary_digits, binary_task, tmp_path) -> None:
    with pytest.raises(StageFailedError, match="sanity check failed.*do not depend on its input"):
        _CannotLearn(**TINY).execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path))


def test_train_tiny_budget_runs_the_minimum_and_gate_fail_raises(
    binary_digits, binary_task, baseline, tmp_path
) -> None:
    ctx = make_ctx(tmp_path)
    cfg = {**TINY, "budget_minutes": 0.001, "gate": "fail"}
    with pytest.raises(StageFailedError, match="baseline") as err:
        TrainModel(**cfg).execute({"data": binary_digits, "task": binary_task, "baseline": baseline}, ctx)
    ev = json.loads((ctx.work_dir / "evaluation.json").read_text())
    texts = [d["decision"] for d in ev["decisions"]]
    assert any("too small for one trial" in t for t in texts), texts
    # the clock cuts inside epochs and the one-batch check, and the log says what it cut
    assert any(t.startswith("the time budget cut the one-batch check short") for t in texts), texts
    assert any("fit cut short by the time budget after" in t for t in texts), texts
    assert "gate: fail" in str(err.value)


def test_train_table_multiclass_with_mlp(tmp_path) -> None:
    from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    img = digits_bundle((0, 1, 2), (150, 60, 60))
    splits = {}
    for name, sp in img.splits.items():
        df = pd.DataFrame(sp.X.reshape(len(sp.X), -1).astype(float), columns=[f"p{i}" for i in range(64)])
        df.iloc[::7, 3] = np.nan  # missing values are imputed with train medians
        splits[name] = Split(X=df, y=sp.y)
    data = DatasetBundle(meta=DatasetMeta(name="digits-table", source="sklearn", kind="table"), splits=splits)
    task = build_task_spec(DefineTaskConfig(), data)
    stage = TrainModel(**one_rung_mlp())
    out = stage.execute({"data": data, "task": task}, make_ctx(tmp_path))
    s = stage.summarize(out)
    assert s["model"]["family"] == "mlp" and s["beats_baseline"] is None
    assert s["test"]["acc"]["value"] > 0.8, s["decisions"]
    assert out.model.predict_proba(data.val.X).shape == (60, 3)


def test_train_one_epoch_budget_runs(binary_digits, binary_task, tmp_path) -> None:
    # max_epochs 1 leaves no epoch range to search: the epochs knob is dropped, nothing crashes
    cfg = {**TINY, "max_epochs": 1}
    out = TrainModel(**cfg).execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path))
    assert out.evaluation.chosen.epochs in (1, TINY["ladder_epochs"])  # a trial or the unregularized rung


def test_train_bias_corrected_calibration_is_folded_into_the_model(
    binary_digits, binary_task, tmp_path
) -> None:
    cfg = {**TINY, "calibration": "bias+temperature", "class_weight": "balanced"}
    out = TrainModel(**cfg).execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path))
    final = [d for d in out.evaluation.decisions if d["phase"] == "final" and "logit_bias" in d["evidence"]]
    assert final and "bias-corrected" in final[0]["decision"]
    assert out.model.info["calibration"] == "bias+temperature"
    assert len(out.model.info["logit_bias"]) == 1


def test_train_small_data_cross_validated_selection(binary_digits, binary_task, tmp_path) -> None:
    assert binary_task.validation.protocol == "repeated_kfold"  # 320 labeled cases: the task's rule
    task = binary_task.model_copy(
        update={"validation": binary_task.validation.model_copy(update={"folds": 3, "repeats": 2})}
    )
    ctx = make_ctx(tmp_path)
    stage = TrainModel(**{**TINY, "cv_candidates": 2})
    out = stage.execute({"data": binary_digits, "task": task}, ctx)
    cv = out.evaluation.phases["cross_validate"]
    assert (cv["folds"], cv["repeats"]) == (3, 2)
    assert len(cv["candidates"]) == 2 and cv["candidates"][0]["candidate"] == "hold-out choice"
    for row in cv["candidates"]:
        assert len(row["cv_per_repeat"]) == 2 and 0.5 < row["cv_mean"] <= 1.0
    best = max(cv["candidates"], key=lambda r: r["cv_mean"])
    assert cv["chosen"] == best["candidate"]
    assert cv["tuned"]["calibration_logits_file"].startswith("cv/")
    oof = np.load(ctx.work_dir / cv["tuned"]["calibration_logits_file"])
    assert oof.shape == (len(binary_digits.train) + len(binary_digits.val), 1)
    summary = stage.summarize(out)["cross_validation"]
    assert summary["chosen"] == cv["chosen"] and len(summary["candidates"]) == 2
    ledger = [json.loads(line) for line in (ctx.stage_dir / "validation.jsonl").read_text().splitlines()]
    assert sum("cross-validation of the" in e["description"] for e in ledger) == 2
    assert any("cross-validated 2 candidate(s)" in d["decision"] for d in out.evaluation.decisions)
    from closedloop.report.html import render_blocks

    html = render_blocks(stage.report(out, ctx.stage_dir), ctx.stage_dir)
    assert "Cross-validated selection (3-fold x 2 on train+val)" in html


def test_train_cross_validation_follows_the_task_protocol(full_run) -> None:
    # the quick preset sets cv_candidates 0: no cross-validation, the hold-out choice is final
    stage, out, ctx = full_run
    assert out.evaluation.phases["cross_validate"]["skipped"] == "cv_candidates is 0"
    # the task chose repeated k-fold (320 labeled cases): skipping it is said, with the way back
    said = [d for d in out.evaluation.decisions if "cv_candidates is 0" in d["decision"]]
    assert said and "the task chose the repeated_kfold protocol" in said[0]["decision"]
    assert said[0]["evidence"] == {"protocol": "repeated_kfold", "cv_candidates": 0, "n_validation": 80}
    from closedloop.report.html import render_blocks

    assert "but cv_candidates is 0 (preset quick)" in render_blocks(
        stage.report(out, ctx.stage_dir), ctx.stage_dir
    )
