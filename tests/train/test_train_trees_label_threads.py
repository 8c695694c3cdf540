"""Multi-label trees grown as one booster per label (``train: {label_threads: N}``): the model and the
fit's record do not depend on N, and at ``feature_fraction: 1`` they are the joint fit's (one booster,
K trees a round) bit for bit. With column sampling the two ways differ only in LightGBM's draws."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("lightgbm")

from closedloop.models.families.lgbm import build_lgbm  # noqa: E402
from closedloop.stages.train.engine import TensorSet  # noqa: E402
from closedloop.stages.train.hparams import HParams  # noqa: E402
from closedloop.stages.train.tree_engine import TreeEngine  # noqa: E402


def _split(n: int, seed: int) -> TensorSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # native missing values, as tables have them
    y = np.stack(
        [x[:, 0] > 0.2, np.nan_to_num(x[:, 1] + x[:, 2]) > 0, np.nan_to_num(x[:, 3]) > 1.1], 1
    ).astype(np.float32)
    flip = rng.random(y.shape) < 0.1  # label noise, so validation stops the fit early
    y = np.where(flip, 1 - y, y).astype(np.float32)
    return TensorSet(torch.from_numpy(x), torch.from_numpy(y), y)


def _fit(
    label_threads: int | None, deadline: float | None = None, **params: Any
) -> tuple[str, Any, np.ndarray]:
    train, val = _split(500, 0), _split(200, 1)
    eng = TreeEngine("multilabel", 3, metric="auc", higher_is_better=True, label_threads=label_threads)
    net = build_lgbm(
        [6], 3, num_leaves=8, learning_rate=0.2, min_child_samples=5, rounds_per_epoch=3, **params
    )
    hp = HParams(epochs=12, patience=3, class_weight="balanced")
    res = eng.fit(net, train, val, hp, seed=7, deadline=deadline)
    return net.lgb_booster().model_to_string(), res, net.lgb_booster().predict(val.x.numpy(), raw_score=True)


def _trees(text: str) -> str:
    return text[text.index("Tree=0") : text.index("end of trees")]


def test_per_label_boosters_do_not_depend_on_the_thread_count() -> None:
    """Column sampling and bagging on: 1 and 3 threads give the same model text, history and kept
    validation logits, bit for bit; a fit with the deadline passed stops at its first epoch either way."""
    params = {"feature_fraction": 0.6, "bagging_fraction": 0.8}
    one, res1, raw1 = _fit(1, **params)
    three, res3, raw3 = _fit(3, **params)
    assert one == three
    assert res1.history == res3.history and res1.best_epoch == res3.best_epoch
    assert res1.stopped == res3.stopped == "early_stopped"  # the labels' noise makes validation stop it
    np.testing.assert_array_equal(res1.val_logits, res3.val_logits)
    np.testing.assert_array_equal(raw1, raw3)
    _, cut, _ = _fit(3, deadline=0.0, **params)
    assert cut.stopped == "time_budget" and len(cut.history) == 1


def test_per_label_boosters_are_the_joint_fit_without_column_sampling() -> None:
    """At feature_fraction 1 (bagging on) every tree, the history and the predictions equal the joint
    fit's; with feature_fraction 0.6 the trees differ (the joint fit draws columns for every label's tree
    in turn), which is why ``label_threads`` is a knob and not a silent change."""
    joint, resj, rawj = _fit(None, bagging_fraction=0.8)
    per, resp, rawp = _fit(2, bagging_fraction=0.8)
    assert _trees(joint) == _trees(per)
    assert resj.history == resp.history and resj.best_epoch == resp.best_epoch
    np.testing.assert_array_equal(rawj, rawp)
    np.testing.assert_array_equal(resj.val_logits, resp.val_logits)
    joint_cs, _, _ = _fit(None, feature_fraction=0.6)
    per_cs, _, _ = _fit(2, feature_fraction=0.6)
    assert _trees(joint_cs) != _trees(per_cs)


def test_label_threads_reaches_the_report_and_one_or_three_threads_train_the_same_stage(
    tmp_path: Any,
) -> None:
    """``train: {label_threads: N}`` on a multi-label table, N = 3 and 1: the stage says so in its decision
    log (summary.json and the report), the model exports with parity, and the two stages' validation
    ledgers (every configuration, its parameters and scores) and models are the same bit for bit."""
    import json

    from .test_train_trees import task_train_export
    from .test_train_trees_multilabel import ML_TRAIN, multilabel_table

    runs = {
        n: task_train_export(multilabel_table(), {**ML_TRAIN, "label_threads": n}, tmp_path / str(n), "ml")
        for n in (3, 1)
    }
    train = runs[3].summary["stages"]["train"]
    said = [d["decision"] for d in train["decisions"] if d["phase"] == "setup"]
    assert any(d.startswith("label_threads: 3: multi-label trees grow one booster per label") for d in said)
    assert (
        "label_threads: 3: multi-label trees grow one booster per label"
        in (runs[3].run_dir / "report.html").read_text()
    )
    assert runs[3].summary["stages"]["export"]["parity_max_abs_diff"] <= 1e-5

    def ledger(run: Any) -> list[dict[str, Any]]:
        rows = [
            json.loads(line) for line in (run.run_dir / "validation_ledger.jsonl").read_text().splitlines()
        ]
        return [{k: v for k, v in r.items() if k != "time"} for r in rows]

    assert len(ledger(runs[3])) >= 3 and ledger(runs[3]) == ledger(runs[1])
    booster = {n: bytes(r.artifact("model").network.booster.numpy()) for n, r in runs.items()}
    assert booster[3] == booster[1]


def test_label_threads_below_one_is_refused_naming_the_field() -> None:
    from pydantic import ValidationError

    from closedloop.stages.train.config import TrainConfig

    with pytest.raises(ValidationError, match=r"label_threads\n  Input should be greater than or equal to 1"):
        TrainConfig(label_threads=0)
