"""Knob ablation after tuning: what each knob bought on validation, with a paired bootstrap interval,
in the tune phase, the decision log, summary.json, the report and the validation ledger."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from closedloop.stages.train import TrainModel
from closedloop.stages.train.phases.ablation import knob_ablation
from closedloop.stages.train.phases.space import search_space
from closedloop.stages.train.stage import KNOB_GAINS_TITLE, TrainConfig

from .conftest import TINY, make_ctx

NEUTRAL_REG = {"weight_decay", "dropout", "l1", "strength", "label_smoothing", "mixup"}


@pytest.fixture(scope="module")
def ablated_run(binary_digits, binary_task, tmp_path_factory):
    ctx = make_ctx(tmp_path_factory.mktemp("train_ablate"))
    # no augmentation on 8x8 digits and longer trials than the rung: a tuned trial beats the rung
    cfg = {
        **TINY,
        "ladder": [{"width": 8, "depth": 1}],
        "ladder_epochs": 2,
        "max_epochs": 6,
        "tune_knobs": ["weight_decay", "dropout", "l1", "label_smoothing"],
        "ablate_knobs": 2,
    }
    stage = TrainModel(**cfg)
    out = stage.execute({"data": binary_digits, "task": binary_task}, ctx)
    return stage, out, ctx


def test_train_presets_fill_ablate_knobs() -> None:
    got = {p: TrainConfig(preset=p).resolved()["ablate_knobs"] for p in ("quick", "default", "thorough")}
    assert got == {"quick": 0, "default": 2, "thorough": 4}
    assert TrainConfig(preset="quick", ablate_knobs=3).resolved()["ablate_knobs"] == 3


def test_train_knob_gains_in_tune_summary_report_and_ledger(ablated_run) -> None:
    stage, out, ctx = ablated_run
    tune = out.evaluation.phases["tune"]
    gains = tune["knob_gains"]
    assert len(gains) == 2, (gains, tune["knob_gains_skipped"], out.evaluation.decisions)
    assert tune["knob_gains_skipped"] == []
    ledger = ctx.validation_ledger.entries("train")
    ablations = [e for e in ledger if e["description"].startswith("knob ablation")]
    assert len(ablations) == 2
    for (knob, g), e in zip(gains.items(), ablations, strict=True):
        assert g["knob"] == knob and knob in tune["space"] and knob in e["description"]
        assert g["metric"] == "auc"
        assert g["chosen"] == tune["knobs"][knob] and g["chosen"] != g["neutral"]
        if knob in NEUTRAL_REG:
            assert g["neutral"] == 0.0
        # the ablated fit is the chosen configuration with that one knob reset
        assert e["params"][knob] == pytest.approx(g["neutral"], rel=1e-5, abs=1e-6)
        for other, v in tune["knobs"].items():
            if other != knob:
                assert e["params"][other] == pytest.approx(v, rel=1e-5, abs=1e-6), (
                    other
                )  # ledger rounds to 6 places
        assert g["ci95"][0] <= g["delta"] <= g["ci95"][1]
        assert g["delta"] == pytest.approx(g["value_chosen"] - g["value_ablated"], abs=1e-12)
        assert g["value_chosen"] == pytest.approx(tune["val_metric"], abs=1e-6)
        assert g["value_ablated"] == pytest.approx(e["metrics"]["auc"], abs=1e-6)
    # each ablation fit is a configuration chosen among: counted like a trial
    s = stage.summarize(out)
    assert s["n_configs"] == len(ledger)
    assert s["n_configs"] == 1 + len(out.evaluation.phases["scale_up"]["rungs"]) + tune["n_trials"] + 2
    assert set(s["knob_gains"]) == set(gains)
    for k, g in s["knob_gains"].items():
        assert set(g) == {"chosen", "neutral", "delta", "ci95", "metric", "importance"}
        assert g["delta"] == gains[k]["delta"] and g["ci95"] == gains[k]["ci95"]
    json.dumps(s)
    said = [d["decision"] for d in s["decisions"] if d["phase"] == "tune"]
    assert any("what each knob bought" in t and all(k in t for k in gains) for t in said), said
    blocks = stage.report(out, ctx.stage_dir)
    tune_sec = next(b for b in blocks if getattr(b, "title", "") == "4. Regularize and tune")
    tables = [b for b in tune_sec.blocks if getattr(b, "title", None) == KNOB_GAINS_TITLE]
    assert len(tables) == 1 and [r["knob"] for r in tables[0].rows] == list(gains)
    assert "Δ auc" in tables[0].rows[0] and tables[0].rows[0]["95% CI"].startswith("[")


def test_train_ablate_knobs_zero_skips_the_ablation(binary_digits, binary_task, tmp_path) -> None:
    ctx = make_ctx(tmp_path)
    stage = TrainModel(**{**TINY, "ablate_knobs": 0, "ladder": [{"width": 8, "depth": 1}]})
    out = stage.execute({"data": binary_digits, "task": binary_task}, ctx)
    tune = out.evaluation.phases["tune"]
    assert tune["knob_gains"] == {} and tune["knob_gains_skipped"] == []
    s = stage.summarize(out)
    assert s["knob_gains"] == {}
    assert not [e for e in ctx.validation_ledger.entries() if "ablation" in e["description"]]
    assert not [d for d in s["decisions"] if "knob" in d["decision"]]
    assert s["n_configs"] == 1 + 1 + tune["n_trials"]
    assert not (ctx.work_dir / "ablation").exists()


def _session(binary_digits, binary_task, tmp_path, **cfg):
    stage = TrainModel(**{**TINY, **cfg})
    ctx = make_ctx(tmp_path)
    return stage.make_session(stage.Inputs(data=binary_digits, task=binary_task), ctx), ctx


def test_knob_ablation_follows_importance_and_respects_the_budget(
    binary_digits, binary_task, tmp_path
) -> None:
    sess, ctx = _session(binary_digits, binary_task, tmp_path / "a", ablate_knobs=2)
    space = search_space(sess)
    knobs = {"lr": sess.base_hp.lr, "dropout": 0.2, "weight_decay": 0.01, "l1": 1e-6, "epochs": 2}
    importance = {"lr": 0.5, "l1": 0.3, "dropout": 0.15, "weight_decay": 0.05}
    logits = np.zeros((len(sess.val), 1), np.float32)
    mp = {"width": 8, "depth": 1}
    # over budget before the first fit: every selected knob is skipped, and the log says so
    gains, skipped = knob_ablation(sess, mp, knobs, space, importance, logits, seed=0, deadline=0.0)
    # lr equals its un-tuned default: not a candidate; then by importance
    assert gains == {} and [s.knob for s in skipped] == ["l1", "dropout"]
    assert all(s.reason == "time budget spent" for s in skipped)
    assert any("ablation skipped for l1, dropout" in d["decision"] for d in sess.decisions)
    assert ctx.validation_ledger.count() == 0 and sess.n_configs == 0
    # in budget: the most important differing knob is refitted; a resumed run reuses the fit
    sess, ctx = _session(binary_digits, binary_task, tmp_path / "b", ablate_knobs=1)
    gains, skipped = knob_ablation(sess, mp, knobs, space, importance, logits, seed=0, deadline=math.inf)
    assert list(gains) == ["l1"] and skipped == []
    g = gains["l1"]
    assert g.neutral == 0.0 and g.chosen == 1e-6 and g.importance == 0.3
    assert g.value_chosen == pytest.approx(0.5)  # constant logits score AUC 0.5
    assert g.ci95 is not None and g.delta is not None and g.value_ablated is not None
    assert g.ci95[0] <= g.delta <= g.ci95[1]
    assert g.delta == pytest.approx(0.5 - g.value_ablated, abs=1e-12)
    assert ctx.validation_ledger.entries()[0]["metrics"]["auc"] == pytest.approx(g.value_ablated)
    assert ctx.validation_ledger.count() == 1 and sess.n_configs == 1
    again, _ = knob_ablation(sess, mp, knobs, space, importance, logits, seed=0, deadline=math.inf)
    assert again == gains and ctx.validation_ledger.count() == 1 and sess.n_configs == 2
