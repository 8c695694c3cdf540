"""``closedloop runs`` and ``closedloop compare`` through the real CLI, on hand-made run directories."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_run import evaluation, make_run, task, tune  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.core.errors import ClosedLoopError, RunDirError  # noqa: E402
from closedloop.report.compare import compare_runs  # noqa: E402

DIGITS = {"source": "sklearn", "name": "digits"}


def _with_validation(run: Path, bundle, logits: np.ndarray) -> Path:
    """Add a data artifact and the selected configuration's saved validation logits."""
    data_dir = run / "stages/01_data/artifacts/data"
    data_dir.mkdir(parents=True)
    bundle.save(data_dir)
    (run / "stages/05_train/work").mkdir(parents=True)
    np.save(run / "stages/05_train/work/val.npy", logits)
    ev_path = run / "stages/05_train/artifacts/evaluation/artifact.json"
    ev = json.loads(ev_path.read_text())
    ev["phases"]["tune"] = tune(val_logits_file="val.npy")
    ev_path.write_text(json.dumps(ev))
    m = json.loads((run / "manifest.json").read_text())
    m["stages"].insert(
        0,
        {
            "name": "data",
            "status": "ok",
            "artifacts": {
                "data": {
                    "path": "stages/01_data/artifacts/data",
                    "type": "closedloop.data.bundle:DatasetBundle",
                }
            },
        },
    )
    (run / "manifest.json").write_text(json.dumps(m))
    return run


def _cfg(lr: float, data: dict | None = None) -> dict:
    return {
        "name": "demo",
        "seed": 0,
        "data": data or DIGITS,
        "stages": [{"name": "train", "params": {"lr": lr}}],
    }


def test_runs_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "runs")
    bb = evaluation()["beats_baseline"] | {"significant": False}
    make_run(tmp_path / "runs", name="other", artifacts={"evaluation": evaluation(beats_baseline=bb)})
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "auc 0.9500 [0.9300, 0.9700]" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines()[2:]}
    assert " yes " in lines["demo"] and " no " in lines["other"]
    assert "Ship" in lines["demo"]
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"demo", "other"} and all(r["blessed"] for r in rows)


def test_runs_on_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "no such runs directory" in capsys.readouterr().err


def test_compare_side_by_side_and_paired_on_validation(tmp_path: Path, digits, capsys) -> None:
    rng = np.random.default_rng(0)
    y = np.asarray(digits.val.y)
    good = np.eye(10)[y] * 4 + rng.normal(0, 1, (len(y), 10))
    worse = np.eye(10)[y] * 1 + rng.normal(0, 1, (len(y), 10))
    mc = {"task": task(problem_type="multiclass", primary_metric="acc", metrics=["acc", "auc"])}
    a = _with_validation(make_run(tmp_path / "a", config=_cfg(0.1), artifacts=mc), digits, worse)
    b = _with_validation(make_run(tmp_path / "b", config=_cfg(0.3), artifacts=mc), digits, good)
    c = compare_runs(a, b, n_resamples=200)
    assert [(d.key, d.a, d.b) for d in c.config_diffs] == [("stages.train.params.lr", "0.1", "0.3")]
    val = [m for m in c.metrics if m.evaluated_on.startswith("validation")]
    acc = next(m for m in val if m.metric == "acc")
    assert (
        acc.paired is not None and acc.paired.delta > 0 and acc.paired.ci95[0] > 0 and acc.paired.n == len(y)
    )
    test = [m for m in c.metrics if m.evaluated_on == "test"]
    assert test and all(m.paired is None for m in test)  # neither fake run has a test-ledger opening
    assert any("side by side only" in n for n in c.notes)

    html = tmp_path / "cmp.html"
    assert main(["compare", str(a), str(b), "--html", str(html), "--n-resamples", "100"]) == 0
    out = capsys.readouterr().out
    assert "stages.train.params.lr" in out and "B - A paired" in out
    page = html.read_text()
    assert "<table>" in page and "stages.train.params.lr" in page and "validation" in page


def test_compare_refuses_different_datasets(tmp_path: Path, capsys) -> None:
    a = make_run(tmp_path / "a", config=_cfg(0.1))
    b = make_run(tmp_path / "b", config=_cfg(0.1, {"source": "medmnist", "flag": "breastmnist", "size": 28}))
    with pytest.raises(ClosedLoopError, match="not of the same task and dataset"):
        compare_runs(a, b)
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "sklearn(name=digits)" in err and "medmnist(flag=breastmnist, size=28)" in err


def test_compare_refuses_a_directory_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    a = make_run(tmp_path / "a", config=_cfg(0.1))
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunDirError, match="not a closedloop run directory"):
        compare_runs(a, tmp_path / "plain")
    assert main(["compare", str(tmp_path / "plain"), str(a)]) == 2
    assert "not a closedloop run directory (no manifest.json, config.yaml)" in capsys.readouterr().err
    assert main(["runs", str(tmp_path / "plain")]) == 0  # an empty runs directory is not an error


def test_a_setting_added_since_the_older_run_is_not_a_config_difference() -> None:
    """``closedloop compare`` listed ``data.na_values A=(not set) B=[]`` between a run made before the setting
    existed and one after (session 28): both sides are read with today's defaults first."""
    from closedloop.report.compare import _with_todays_defaults, config_params

    old = {
        "name": "computers",
        "data": {"source": "tabular", "path": "computers.csv", "target": "price"},
        "stages": [{"kind": "task"}],
    }
    new = {**old, "data": {**old["data"], "na_values": [], "class_order": None, "missing_target": "error"}}
    a, b = config_params(_with_todays_defaults(old)), config_params(_with_todays_defaults(new))
    assert {k for k in set(a) | set(b) if a.get(k) != b.get(k)} == set()
    changed = {**old, "data": {**old["data"], "na_values": ["?"]}}
    c = config_params(_with_todays_defaults(changed))
    assert {k for k in set(a) | set(c) if a.get(k) != c.get(k)} == {"data.na_values"}
    assert _with_todays_defaults({"data": {"source": "no-such-source"}}) == {
        "data": {"source": "no-such-source"}
    }
