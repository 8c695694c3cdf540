"""An ordinal table through the loop from YAML: a text grade with its ranks given, scored by its ranks in the
train stage and by the monitor, whose production file holds the grades as the training file wrote them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from closedloop.cli import main

GRADES = ["low", "medium", "high"]


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    latent = 1.2 * a + 0.6 * b + rng.normal(scale=0.5, size=n)
    rank = np.digitize(latent, [-0.6, 0.6])
    return pd.DataFrame({"a": a, "b": b, "noise": rng.normal(size=n), "grade": np.array(GRADES)[rank]})


def test_a_text_ordinal_target_is_scored_by_its_ranks_in_training_and_in_the_monitor(tmp_path) -> None:
    _table(900, 0).to_csv(tmp_path / "grades.csv", index=False)
    config = {
        "name": "grades",
        "seed": 0,
        "data": {
            "source": "tabular",
            "path": str(tmp_path / "grades.csv"),
            "target": "grade",
            "class_order": GRADES,
        },
        "stages": [
            {"kind": "task", "params": {"problem_type": "ordinal"}},
            {
                "kind": "train",
                "params": {"preset": "quick", "family": "lgbm", "n_trials": 3, "n_bootstrap": 100},
            },
            {"kind": "export"},
            {"kind": "monitor"},
        ],
    }
    (tmp_path / "grades.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["run", str(tmp_path / "grades.yaml"), "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    task, train = summary["stages"]["task"], summary["stages"]["train"]
    assert task["primary_metric"] == "qwk" and task["metrics"][:2] == ["qwk", "mae"]
    assert train["test"]["qwk"]["decided_at"] == "argmax" and train["test"]["qwk"]["value"] > 0.5
    assert train["test"]["mae"]["value"] < 0.5  # in ranks: most grades right, the rest one off
    # the test confusion matrix: counts that give the reported accuracy and rank error, drawn in the report
    conf = train["test_confusion"]
    counts = np.array(conf["counts"])
    assert conf["labels"] == GRADES and conf["decided_at"] == "argmax" and conf["evaluated_on"] == "test"
    assert np.trace(counts) / counts.sum() == pytest.approx(train["test"]["acc"]["value"])
    i, j = np.indices(counts.shape)
    assert (counts * abs(i - j)).sum() / counts.sum() == pytest.approx(train["test"]["mae"]["value"])
    wrong = int(counts.sum() - np.trace(counts))
    assert any(
        d["decision"].startswith(f"ordinal errors on test: {wrong} of {counts.sum()} rows wrong")
        for d in train["decisions"]
    )
    assert list(run.glob("stages/*_train/figures/confusion.png"))
    assert "Confusion matrix on the test split" in (run / "report.html").read_text()

    prod = _table(300, 1)  # the same population, grades as text
    prod.to_csv(tmp_path / "prod.csv", index=False)
    out = tmp_path / "window.json"
    assert (
        main(["monitor", str(run), str(tmp_path / "prod.csv"), "--label-column", "grade", "--out", str(out)])
        == 0
    )
    window = json.loads(out.read_text())["windows"][0]
    assert {"qwk", "mae"} <= set(window["realized"]) and window["realized"]["qwk"] > 0.5
    estimated = window["estimated"] or window["estimate_withheld"]
    assert abs(estimated["mae"] - window["realized"]["mae"]) < 0.15
    # a grade the task does not have is named, not a traceback
    prod.assign(grade=["excellent", *prod["grade"][1:]]).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["monitor", str(run), str(tmp_path / "bad.csv"), "--label-column", "grade"]) != 0
