"""Bad input for the tree family, each a clear error (or, for an all-missing column and an unseen
category at serving time, the documented behaviour without a crash)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from closedloop.core.errors import ClosedLoopError, ConfigError  # noqa: E402
from closedloop.data.bundle import DatasetBundle, Split  # noqa: E402
from closedloop.stages.task import DefineTaskConfig, build_task_spec  # noqa: E402
from closedloop.stages.train import TrainModel  # noqa: E402

from .conftest import digits_bundle, make_ctx  # noqa: E402
from .test_train_trees import tree_table  # noqa: E402

QUICK = {
    "preset": "quick",
    "family": "lgbm",
    "budget_minutes": 30,
    "ladder": [{"num_leaves": 4}],
    "ladder_epochs": 2,
    "n_trials": 1,
    "max_epochs": 2,
    "cv_candidates": 0,
    "n_bootstrap": 100,
}


def _train(data: DatasetBundle, tmp: Path, **over: object):
    task = build_task_spec(DefineTaskConfig(), data)
    return TrainModel(**{**QUICK, **over}).execute({"data": data, "task": task}, make_ctx(tmp))


def _with(data: DatasetBundle, **splits: Split) -> DatasetBundle:
    return DatasetBundle(meta=data.meta, splits={**data.splits, **splits})


def test_text_column_not_declared_categorical_is_refused(tmp_path: Path) -> None:
    d = tree_table(200)
    parts = {
        k: Split(v.X.assign(city=np.where(np.arange(len(v.X)) % 2, "Oslo", "Rome")), v.y)
        for k, v in d.splits.items()
    }
    with pytest.raises(
        ConfigError, match=r"column 'city' of the train split holds text .*'Rome'.* declare it categorical"
    ):
        _train(_with(d, **parts), tmp_path)


def test_single_class_validation_split_is_refused(tmp_path: Path) -> None:
    d = tree_table(200)
    keep = d.val.y == 0
    val = Split(d.val.X[keep].reset_index(drop=True), d.val.y[keep])
    with pytest.raises(ConfigError, match=r"validation split holds a single class \('no', all \d+ rows\)"):
        _train(_with(d, val=val), tmp_path)


def test_nan_label_is_refused_by_the_task() -> None:
    d = tree_table(200)
    y = d.train.y.astype(float)
    y[3] = np.nan
    with pytest.raises(
        ClosedLoopError, match=r"class labels must be integers 0..K-1, found \[0.0, 1.0, nan\]"
    ):
        build_task_spec(DefineTaskConfig(), _with(d, train=Split(d.train.X, y)))


def test_tree_family_on_images_and_the_lr_finder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'lgbm' is a tree family; it trains on tables, not images"):
        _train(digits_bundle((3, 8)), tmp_path / "a")
    with pytest.raises(ConfigError, match="lr_finder: the LR range test is for networks"):
        _train(tree_table(200), tmp_path / "c", lr_finder=True)


def test_all_missing_column_trains_and_is_never_split_on(tmp_path: Path) -> None:
    d = tree_table(300)
    parts = {k: Split(v.X.assign(c=np.nan), v.y) for k, v in d.splits.items()}
    out = _train(_with(d, **parts), tmp_path)
    imp = {f.feature: f for f in out.evaluation.feature_importance.features}
    assert imp["c"].gain == 0.0 and imp["c"].permutation == 0.0
    assert out.evaluation.test["auc"].value > 0.7


@pytest.mark.parametrize(
    ("family", "export", "field"),
    [
        ("lgbm", "ship: int8", r"export.ship: int8 - the train stage trains lgbm, a tree ensemble"),
        ("[mlp, lgbm]", "ship: int8", r"export.ship: int8 - .*family list \['mlp', 'lgbm'\] includes lgbm"),
        ("lgbm", "prune: {amount: 0.5}", r"export.prune: the train stage trains lgbm"),
        ("[mlp, small_cnn]", "ship: int8", None),  # no tree family could ship: accepted
    ],
)
def test_int8_prune_distill_with_a_tree_family_fail_at_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], family: str, export: str, field: str | None
) -> None:
    """``closedloop validate`` refuses before any training (exit 2, the field named), not when export starts."""
    from closedloop.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: t\ndata: {source: sklearn, name: breast_cancer}\nstages:\n  - kind: task\n"
        f"  - kind: train\n    params: {{family: {family}}}\n  - kind: export\n    params: {{{export}}}\n"
    )
    code = main(["validate", str(cfg)])
    err = capsys.readouterr().err
    if field is None:
        assert code == 0, err
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert re.search(field, err), err
