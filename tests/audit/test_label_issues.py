"""Label issues: the cross-fitted CNN and boosted trees find planted flips, knobs from YAML, re-ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.core.errors import ConfigError
from closedloop.core.pipeline import Pipeline
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit import AuditDataset
from closedloop.stages.audit.base import AuditContext
from closedloop.stages.audit.label_issues import LabelIssues
from closedloop.stages.audit.rerank import FILE, LabelIssueList, rerank_label_issues, review_after_training
from closedloop.stages.task import DefineTaskConfig, build_task_spec


def shapes(n: int, seed: int, side: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright disc; class 1: a bright horizontal bar; at random positions, on noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    yy, xx = np.mgrid[:side, :side]
    X = rng.normal(60, 25, (n, side, side))
    for i in range(n):
        cy, cx = rng.integers(4, side - 4, 2)
        if y[i] == 0:
            X[i] += 140 * (((yy - cy) ** 2 + (xx - cx) ** 2) <= 6)
        else:
            X[i] += 140 * ((np.abs(yy - cy) <= 1) & (np.abs(xx - cx) <= 4))
    return np.clip(X, 0, 255).astype(np.uint8)[..., None], y


def flipped(y: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(y), int(round(rate * len(y))), replace=False))
    out = y.copy()
    out[idx] = 1 - out[idx]
    return out, idx


def f1(found: np.ndarray, truth: np.ndarray) -> float:
    tp = len(np.intersect1d(found, truth))
    return 2 * tp / max(len(found) + len(truth), 1)


def bundle(X, y, kind: str = "images") -> DatasetBundle:  # type: ignore[no-untyped-def]
    meta = DatasetMeta(name="t", source="synthetic", kind=kind, label_names=["a", "b"])
    empty = X[:0] if kind == "images" else X.iloc[:0]
    return DatasetBundle(
        meta=meta, splits={"train": Split(X, y), "val": Split(empty, y[:0]), "test": Split(empty, y[:0])}
    )


def check(data: DatasetBundle, tmp: Path, **params):  # type: ignore[no-untyped-def]
    ctx = AuditContext(RunContext(stage_name="audit", stage_dir=tmp, seed=0), data)
    ctx.current_check = "label_issues"
    return LabelIssues(params).run(data, None, ctx)


def test_cnn_finds_planted_flips_on_tiny_images(tmp_path: Path) -> None:
    X, y = shapes(400, seed=0)
    noisy, truth = flipped(y, 0.1, seed=1)
    res = check(
        bundle(X, noisy),
        tmp_path,
        models=["cnn"],
        folds=3,
        cnn_epochs=3,
        cnn_min_steps=60,
        cnn_width=8,
        jobs=2,
    )
    found = res.tables["label_issues"]["index"].to_numpy()
    assert res.metrics["models"] == "cnn"
    assert res.metrics["oof_accuracy_cnn"] > 0.8  # it learned the shapes
    assert f1(found, truth) >= 0.6  # random scores give ~0.1
    # the most suspicious labels are planted flips
    assert len(np.intersect1d(found[:10], truth)) >= 8


def test_random_scores_would_fail_the_bar() -> None:
    """The bar above is far from chance: the same F1 on random probabilities."""
    _, y = shapes(400, seed=0)
    noisy, truth = flipped(y, 0.1, seed=1)
    P = np.random.default_rng(0).dirichlet([1, 1], len(y))
    out = rerank_label_issues(noisy, P, [("train", i) for i in range(len(y))])
    assert f1(np.array([i.index for i in out.issues]), truth) < 0.3


def test_boosted_trees_find_flips_on_a_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n)})
    df.loc[rng.random(n) < 0.1, "c"] = np.nan  # missing values are imputed before the models
    y = ((df.a + 0.5 * df.b**2) > 0.5).astype(np.int64).to_numpy()
    noisy, truth = flipped(y, 0.1, seed=2)
    res = check(bundle(df, noisy, kind="table"), tmp_path, models=["hgb"])
    found = res.tables["label_issues"]["index"].to_numpy()
    assert res.metrics["models"] == "hgb"
    assert f1(found, truth) >= 0.6
    # informative probabilities: the estimate is far below its shuffled-label null, so it warns
    assert res.metrics["noise_to_null"] < 0.5 and res.metrics["null_noise_rate"] > 0.3
    assert res.metrics["noise_is_evidence"] is True
    said = res.findings[-1]
    assert (
        said.severity == "warning"
        and "with the labels shuffled against the same probabilities" in said.message
    )


def test_labels_unrelated_to_the_features_are_not_called_label_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = rng.integers(0, 2, n).astype(np.int64)  # nothing to learn: confident learning flags about half
    res = check(bundle(df, y, kind="table"), tmp_path / "a", models=["hgb"])
    assert res.metrics["estimated_noise_rate"] > 0.3 and res.metrics["noise_to_null"] >= 0.5
    assert res.metrics["noise_is_evidence"] is False  # the report's next step does not count it
    said = res.findings[-1]
    assert said.severity == "info" and "Not evidence of label noise" in said.message
    assert "know too little about the labels" in said.message
    before = check(bundle(df, y, kind="table"), tmp_path / "b", models=["hgb"], null_shuffles=0)
    assert before.findings[-1].severity == "warning" and before.metrics["null_noise_rate"] is None


def test_cnn_on_a_table_is_left_out_with_a_note(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200)})
    y = (df.a > 0).astype(np.int64).to_numpy()
    res = check(bundle(df, y, kind="table"), tmp_path, models=["cnn", "knn"])
    assert res.metrics["models"] == "knn"
    assert any("cnn model applies to images only" in f.message for f in res.findings)


def test_knobs_from_yaml_reach_the_check(tmp_path: Path) -> None:
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text(
        """
name: knobs
data: {source: sklearn, name: digits}
stages:
  - kind: task
  - kind: audit
    params:
      stop_on: []
      checks:
        - name: label_issues
          params: {models: [cnn, knn], folds: 3, cnn_epochs: 2, cnn_min_steps: 10, cnn_width: 4, cnn_hflip: false, jobs: 1}
""",
        encoding="utf-8",
    )
    stage = next(s for s in Pipeline.from_yaml(cfg_file).stages if isinstance(s, AuditDataset))
    X, y = shapes(150, seed=3)
    data = bundle(X[:100], y[:100])
    data.splits["val"], data.splits["test"] = Split(X[100:125], y[100:125]), Split(X[125:], y[125:])
    task = build_task_spec(DefineTaskConfig(), data)
    out = stage.execute(
        {"data": data, "task": task}, RunContext(stage_name="audit", stage_dir=tmp_path, seed=0)
    )
    m = out.audit.results["label_issues"]["metrics"]
    assert m["models"] == "cnn+knn" and m["folds"] == 3 and "oof_accuracy_cnn" in m


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"cnn_epochs": 0}, "cnn_epochs"),
        ({"models": ["resnet"]}, "models"),
        ({"jobs": 0}, "jobs"),
        ({"cnn_widht": 8}, "cnn_widht"),
    ],
)
def test_bad_knobs_name_the_field(params: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        AuditDataset({"checks": [{"name": "label_issues", "params": params}]})


def test_rerank_ranks_the_confident_disagreements_first() -> None:
    y = np.array([0] * 50 + [1] * 50)
    P = np.where(y[:, None] == np.arange(2), 0.9, 0.1)
    P[[3, 70]] = P[[3, 70]][:, ::-1]  # the model disagrees, confidently
    P[70] = [0.99, 0.01]  # the most confident disagreement
    ids = [("train", i) for i in range(80)] + [("val", i) for i in range(20)]
    out = rerank_label_issues(y, P, ids, evaluated_on="validation", source="test")
    assert isinstance(out, LabelIssueList)
    assert [(i.split, i.index) for i in out.issues] == [("train", 70), ("train", 3)]
    assert out.issues[0].suggested_label == 0 and out.issues[0].given_label == 1
    assert out.n_examined == 100 and out.evaluated_on == "validation"
    assert list(out.to_frame().columns) == ["split", "index", "given_label", "suggested_label", "score"]


@pytest.mark.parametrize(
    ("labels", "proba", "n_ids", "needle"),
    [
        (np.zeros(4, int), np.full((3, 2), 0.5), 4, "same samples"),
        (np.array([0, 1, 2, 1]), np.full((4, 2), 0.5), 4, r"0\.\.1"),
        (np.array([0, 1, 0, 1]), np.full((4, 2), 0.5), 3, "ids"),
        (np.zeros(4, int), np.full((4, 2), 0.5), 4, "two classes"),
    ],
)
def test_rerank_bad_input(labels: np.ndarray, proba: np.ndarray, n_ids: int, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        rerank_label_issues(labels, proba, [("train", i) for i in range(n_ids)])


def _logits(y: np.ndarray, wrong: list[int]) -> np.ndarray:
    z = np.where(y == 1, 3.0, -3.0)
    z[wrong] = -z[wrong]
    return z[:, None]  # binary: one logit per sample


def test_review_after_training_uses_out_of_fold_predictions(tmp_path: Path) -> None:
    y_tr, y_va = np.array([0, 1] * 20), np.array([0, 1] * 5)
    data = bundle(np.zeros((40, 4, 4, 1), np.uint8), y_tr)
    data.splits["val"] = Split(np.zeros((10, 4, 4, 1), np.uint8), y_va)
    (tmp_path / "cv").mkdir()
    y = np.concatenate([y_tr, y_va])
    np.save(tmp_path / "cv" / "c0_oof.npy", _logits(y, [5, 42]))
    np.save(tmp_path / "cv" / "y.npy", y)
    tuned = {"calibration_logits_file": "cv/c0_oof.npy", "calibration_labels_file": "cv/y.npy"}
    out = review_after_training(tmp_path, tuned, data, "binary", tmp_path / "label_review")
    assert out is not None and out.evaluated_on == "out_of_fold" and out.n_examined == 50
    assert sorted((i.split, i.index) for i in out.issues) == [("train", 5), ("val", 2)]
    saved = pd.read_csv(tmp_path / "label_review" / FILE)
    assert sorted(zip(saved.split, saved["index"], strict=True)) == [("train", 5), ("val", 2)]


def test_review_after_training_on_a_holdout_reranks_val_and_says_so(tmp_path: Path) -> None:
    y_va = np.array([0, 1] * 10)
    data = bundle(np.zeros((40, 4, 4, 1), np.uint8), np.array([0, 1] * 20))
    data.splits["val"] = Split(np.zeros((20, 4, 4, 1), np.uint8), y_va)
    np.save(tmp_path / "val.npy", _logits(y_va, [7]))
    out = review_after_training(tmp_path, {"val_logits_file": "val.npy"}, data, "binary", tmp_path / "r")
    assert out is not None and out.evaluated_on == "validation"
    assert [(i.split, i.index) for i in out.issues] == [("val", 7)]
    assert "only val is re-ranked" in out.note
    assert (
        review_after_training(tmp_path, {"val_logits_file": "val.npy"}, data, "regression", tmp_path) is None
    )


def test_an_ordinal_targets_suspects_say_how_many_are_one_rank_off(tmp_path: Path) -> None:
    """Grades from a latent score cut at thresholds: the rows confident learning flags sit mostly at the cuts,
    one rank from the grade it suggests; the finding says how many, so a reader does not read them as
    wrong labels alone."""
    rng = np.random.default_rng(0)
    n = 900
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    latent = df.a + 0.5 * df.b + rng.normal(scale=0.4, size=n)
    y = np.digitize(latent, [-1.0, 0.0, 1.0]).astype(np.int64)
    data = bundle(df, y, kind="table")
    data.meta.label_names = ["D", "C", "B", "A"]
    with_val = DatasetBundle(
        meta=data.meta, splits={**data.splits, "val": Split(df, y), "test": Split(df, y)}
    )
    task = build_task_spec(DefineTaskConfig(problem_type="ordinal"), with_val)
    ctx = AuditContext(RunContext(stage_name="audit", stage_dir=tmp_path, seed=0), data)
    ctx.current_check = "label_issues"
    res = LabelIssues({"models": ["hgb"]}).run(data, task, ctx)
    flagged = res.tables["label_issues"]
    near = int((np.abs(flagged["given_label"] - flagged["suggested_label"]) == 1).sum())
    assert len(flagged) > 20 and res.metrics["one_rank_from_suggested"] == near and near >= 0.8 * len(flagged)
    assert f"Ordinal target: {near} of the {len(flagged)}" in res.findings[-1].message
    nominal = LabelIssues({"models": ["hgb"]}).run(data, None, ctx)
    assert "one_rank_from_suggested" not in nominal.metrics
