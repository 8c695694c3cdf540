"""Persistence per entity (``baseline: {entity_column: state}``): each row gets its own entity's latest earlier
target, the forecaster's "same as last period"; an entity not seen before gets the latest earlier row of any.
A table split by ``time_column`` declares its time column, so persistence runs without more config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from closedloop.stages.baseline.builtin import PersistenceModel


def test_each_entity_repeats_its_own_latest_earlier_target() -> None:
    X = pd.DataFrame({"year": [1, 1, 2, 2], "state": ["a", "b", "a", "b"]})
    y = np.array([10.0, 50.0, 12.0, 55.0])
    model = PersistenceModel("year", "regression", 1, entity_column="state").fit(X, y)
    new = pd.DataFrame({"year": [3, 3, 3, 2], "state": ["a", "b", "c", "b"]})
    # a: 12 (its year 2), b: 55, c: never seen, the latest earlier row of any (b at year 2: 55, the later
    # of the two year-2 rows in file order), b at year 2: its year-1 value (strictly earlier)
    assert model.predict(new).ravel().tolist() == [12.0, 55.0, 55.0, 50.0]
    plain = PersistenceModel("year", "regression", 1).fit(X, y)
    assert plain.predict(new).ravel().tolist() == [55.0, 55.0, 55.0, 50.0]


def _panel_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    states, years = 30, 12
    level = rng.normal(100, 30, states)
    rows = [
        {
            "state": f"s{s}",
            "year": 2000 + t,
            "price": rng.normal(5, 1),
            "sales": level[s] + 2 * t + rng.normal(0, 3),
        }
        for s in range(states)
        for t in range(years)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_time_split_panel_gets_persistence_per_state_as_its_bar(tmp_path: Path) -> None:
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.registry import STAGES

    csv = _panel_csv(tmp_path / "panel.csv")
    data = {"source": "tabular", "path": str(csv), "target": "sales", "time_column": "year"}
    runs = {}
    for entity in (None, "state"):
        stages = [STAGES.resolve("task")(), STAGES.resolve("baseline")(entity_column=entity)]
        runs[entity] = Pipeline(stages, data=data, name=f"p{entity}", runs_dir=tmp_path, seed=0).run(
            progress=False
        )
    plain, per_state = (runs[k].summary["stages"]["baseline"] for k in (None, "state"))
    assert per_state["best"]["name"] == "persistence"
    assert per_state["best"]["val"]["rmse"] < 0.5 * plain["best"]["val"]["rmse"]
    stages = [STAGES.resolve("task")(), STAGES.resolve("baseline")(entity_column="county")]
    bad = Pipeline(stages, data=data, name="bad", runs_dir=tmp_path, seed=0).run(progress=False, cache=False)
    assert bad.summary["status"] == "failed"
    assert "entity_column 'county' is not a feature column" in json.dumps(bad.summary["stages"]["baseline"])
