"""The whole flywheel through the command line, on digits with tiny training settings (~15 s):

champion run -> ``closedloop monitor`` flags a darker scanner and exports a review queue -> the queue
is labeled (files moved into class folders) -> ``closedloop retrain CONFIG --add-labeled DIR`` records a
new dataset version, retrains, compares challenger and champion with paired statistics on the same
test split and recommends -> shadow mode runs both models on the same production windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from closedloop.cli import main
from closedloop.core.registry import SOURCES
from closedloop.monitoring import Monitor

TRAIN = {  # seconds on 2 cores: one small MLP rung, one tuning trial, two epochs
    "preset": "quick",
    "family": "mlp",
    "ladder": [{"width": 32}],
    "budget_minutes": 10,
    "n_trials": 1,
    "max_epochs": 2,
    "ladder_epochs": 2,
    "baseline_epochs": 1,
    "sanity_steps": 60,
    "sanity_batch": 8,
    "sanity_lr": 0.01,
    "n_bootstrap": 100,
    "threads": 1,
}
MONITOR = {"calibration_windows": 30, "permutations": 50, "window_sizes": [50, 100]}


def _config(tmp: Path) -> Path:
    cfg = {
        "name": "flywheel",
        "seed": 0,
        "runs_dir": str(tmp / "runs"),
        "data": {"source": "sklearn", "name": "digits"},
        "stages": [
            {"kind": "task", "params": {"acceptance": {"acc": 0.5}}},
            {"kind": "train", "params": TRAIN},
            {"kind": "monitor", "params": MONITOR},
        ],
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_review_label_retrain_compare_and_shadow(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path)
    assert main(["run", str(config)]) == 0
    runs = tmp_path / "runs" / "flywheel"
    (champion,) = sorted(p for p in runs.iterdir() if (p / "manifest.json").is_file())

    # production: train-split digits from a darker scanner (labels known to us, not to the monitor;
    # train images, so labeling them cannot leak the test split into the challenger)
    bundle = SOURCES.resolve("sklearn")({"name": "digits"}).load(0)
    X, y = bundle.train.X[:300], np.asarray(bundle.train.y)[:300]
    prod = (X.astype(np.float32) * 0.6).astype(np.uint8)
    np.savez(tmp_path / "prod.npz", images=prod[..., 0])
    queue_dir = tmp_path / "queue"
    rc = main([
        "monitor", str(champion), str(tmp_path / "prod.npz"), "--window", "100", "--review", "60",
        "--review-dir", str(queue_dir), "--out", str(tmp_path / "monitor.json"),
    ])  # fmt: skip
    assert rc == 0
    checked = json.loads((tmp_path / "monitor.json").read_text())
    assert [w["alert"] for w in checked["windows"]] == ["alarm"] * 3

    # a labeler fills in the queue: each exported image goes into its class folder
    queue = pd.read_csv(queue_dir / "queue.csv")
    assert len(queue) == 60 and {"id", "predicted", "entropy", "drift_score", "priority", "file"} <= set(
        queue
    )
    labeled = tmp_path / "labeled"
    for sid, file in zip(queue["id"], queue["file"], strict=True):
        dest = labeled / bundle.meta.label_names[y[sid]]
        dest.mkdir(parents=True, exist_ok=True)
        (queue_dir / file).rename(dest / Path(file).name)

    capsys.readouterr()
    out_json = tmp_path / "retrain.json"
    assert main(["retrain", str(config), "--add-labeled", str(labeled), "--out", str(out_json)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out_json.read_text())
    challenger = Path(res["challenger"])
    assert Path(res["champion"]) == champion and challenger != champion
    assert json.loads((challenger / "retrain.json").read_text())["promote"] == res["promote"]

    # a new dataset version, recorded in the challenger's data artifact and in the runs ledger
    version = res["dataset_version"]
    assert version["n_added"] == 60 and len(version["dataset_version"]) == 16
    ledger = [json.loads(line) for line in (runs / "dataset_versions.jsonl").read_text().splitlines()]
    assert [e["dataset_version"] for e in ledger] == [version["dataset_version"]]
    assert ledger[0]["run_id"] == challenger.name
    data_a = champion / "stages/01_data/artifacts/data"
    data_b = challenger / "stages/01_data/artifacts/data"
    meta_b = json.loads((data_b / "meta.json").read_text())
    assert meta_b["provenance"]["augmented"]["dataset_version"] == version["dataset_version"]
    train_a, train_b = _npz_arrays(data_a / "train.npz"), _npz_arrays(data_b / "train.npz")
    assert len(train_b["y"]) == len(train_a["y"]) + 60
    # ... while the held-out data is identical, so the paired comparison is fair
    test_a, test_b = _npz_arrays(data_a / "test.npz"), _npz_arrays(data_b / "test.npz")
    assert test_a.keys() == test_b.keys()
    for k in test_a:
        np.testing.assert_array_equal(test_a[k], test_b[k])
    assert res["n_heldout"] == len(test_a["y"]) and res["heldout_split"] == "test"

    # paired statistics and a recommendation that follows the rule
    c = res["comparison"]
    assert {"metric", "value_a", "value_b", "delta", "ci95", "p_value", "p_one_sided"} <= set(c)
    assert c["metric"] == "acc" and c["ci95"][0] <= c["delta"] <= c["ci95"][1]
    significant = c["delta"] > 0 and c["p_one_sided"] < 0.05
    meets = all(v["ok"] for v in res["constraints"].values())
    assert "acceptance.acc" in res["constraints"]
    assert res["promote"] == (significant and meets)
    assert res["reasons"]
    assert ("PROMOTE" if res["promote"] else "keep the champion") in printed
    assert version["dataset_version"] in printed

    # shadow mode: both models on the same production windows (CLI and Python agree)
    rc = main([
        "monitor", str(champion), str(tmp_path / "prod.npz"), "--window", "100",
        "--shadow", str(challenger), "--out", str(tmp_path / "shadow.json"),
    ])  # fmt: skip
    assert rc == 0
    assert "disagreement" in capsys.readouterr().out
    shadow = json.loads((tmp_path / "shadow.json").read_text())["shadow"]
    assert shadow["challenger_run"] == str(challenger)
    overall = shadow["overall"]
    assert overall["n"] == 300 and 0.0 <= overall["disagreement"] <= 1.0
    for name in ("champion", "challenger"):
        assert 0.0 <= overall[name]["estimated"]["acc"] <= 1.0
    assert [w["n"] for w in shadow["windows"]] == [100, 100, 100]
    assert sum(w["disagreement_count"] for w in shadow["windows"]) == overall["disagreement_count"]
    py = Monitor.shadow(Monitor.load(champion), Monitor.load(challenger), prod)
    assert py["disagreement_count"] == overall["disagreement_count"]
    assert py["challenger"]["estimated"]["acc"] == overall["challenger"]["estimated"]["acc"]
