"""The production half of the loop with a tree model (issue #25): ``closedloop retrain`` with newly labeled
table rows and ``closedloop adapt`` with production labels, on a tabular run whose model is ``lgbm``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightgbm")

from closedloop.cli import main  # noqa: E402
from common_data import run_split_table  # noqa: E402

from .test_train_trees import tree_table  # noqa: E402

pytestmark = pytest.mark.slow  # two small tree pipeline runs and an adaptation

TRAIN = {
    "preset": "quick",
    "family": "lgbm",
    "budget_minutes": 30,
    "ladder": [{"num_leaves": 4}, {"num_leaves": 16}],
    "ladder_epochs": 3,
    "n_trials": 2,
    "max_epochs": 3,
    "cv_candidates": 0,
    "n_bootstrap": 100,
}


def _rows(seed: int, n: int) -> pd.DataFrame:
    """Rows of the same table (features, ``label``, ``color`` as its names)."""
    b = tree_table(n * 5, seed)  # the generator's splits hold 60/20/20%: use all of them
    parts = [b.splits[k] for k in ("train", "val", "test")]
    X = pd.concat([p.X for p in parts], ignore_index=True).iloc[:n].copy()
    X["color"] = X["color"].astype(str)
    X["label"] = np.concatenate([np.asarray(p.y) for p in parts])[:n]
    return X


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("trees_loop")
    table = _rows(0, 500)
    table["split"] = np.array(["train"] * 300 + ["val"] * 100 + ["test"] * 100)
    stages = [{"kind": "task"}, {"kind": "train", "params": TRAIN}, {"kind": "export"}]
    return run_split_table(tmp, "trees_loop", table, stages)


def test_retrain_with_labeled_table_rows_on_a_tree_run(
    champion: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, run = champion
    labeled = tmp_path / "labeled.csv"
    _rows(7, 120).to_csv(labeled, index=False)  # production rows, labeled, categories by name
    out = tmp_path / "retrain.json"
    rc = main(
        ["retrain", str(config), "--add-labeled", str(labeled), "--champion", str(run), "--out", str(out)]
    )
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["dataset_version"]["n_added"] == 120
    assert res["comparison"]["metric"] == "auc" and res["n_heldout"] == 100
    challenger = Path(res["challenger"])
    summary = json.loads((challenger / "summary.json").read_text())
    assert summary["stages"]["train"]["model"]["family"] == "lgbm"
    assert "PROMOTE" in capsys.readouterr().out or not res["promote"]


def test_adapt_with_production_labels_on_a_tree_run(
    champion: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = champion
    prod = _rows(11, 240)
    prod["selected_by"] = "random_control"
    labels = tmp_path / "prod.csv"
    prod.to_csv(labels, index=False)
    out = tmp_path / "adapt"
    rc = main(["adapt", str(run), str(labels), "--out", str(out), "--seed", "1"])
    printed = capsys.readouterr()
    assert rc in (0, 1), printed.err  # a decision either way, not an error
    res = json.loads((out / "adapt.json").read_text())
    assert res["decision"]["metric"] == "expected_cost"
    assert sorted(res["split"]["adaptation"] + res["split"]["evaluation"]) == list(range(240))
    assert res["choice"]["candidates"] >= 1
    assert not [
        k for k in res["choice"]["cv_cost"] if "finetune" in k
    ]  # trees are not fine-tuned by gradients
