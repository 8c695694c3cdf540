"""``closedloop adapt --challengers ...,retrain``: the retrained challenger (the champion's own config
rerun with part of the adaptation labels added to train, its threshold set on the other part), and
the issue's leak: nothing a model trained on judges it, by content hash.

A tiny real pipeline (task + train, an MLP) is the champion; production is a brighter scanner.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from closedloop.cli import main
from common_data import TINY_RETRAIN, write_medmnist

pytestmark = pytest.mark.slow  # three tiny pipeline runs (~30 s on 2 quiet cores)

TRAIN = TINY_RETRAIN


def _images(rng: np.random.Generator, n: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    base = rng.integers(0, 120, (n, 28, 28))
    X = base + 60 * y[:, None, None] + rng.integers(0, 60, (n, 1, 1)) + shift
    return np.clip(X, 0, 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("adapt_retrain")
    rng = np.random.default_rng(0)
    arrays = write_medmnist(tmp / "data", _images, (240, 80, 90), rng)
    cfg = {
        "name": "shift",
        "seed": 0,
        "runs_dir": str(tmp / "runs"),
        "data": {"source": "medmnist", "flag": "pneumoniamnist", "size": 28, "root": str(tmp / "data")},
        "stages": [
            {"kind": "task", "params": {"business": {"cost_false_positive": 1, "cost_false_negative": 3}}},
            {"kind": "train", "params": TRAIN},
        ],
    }
    config = tmp / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(config)]) == 0
    (run,) = [p for p in (tmp / "runs" / "shift").iterdir() if (p / "manifest.json").is_file()]
    return run, arrays


def _production(path: Path, run: Path, X: np.ndarray, y: np.ndarray) -> Path:
    np.savez(
        path, images=X, labels=y, model_version=run.name, selected_by=np.array(["random_control"] * len(y))
    )
    return path


def test_retrained_challenger_trains_on_one_part_sets_its_threshold_on_the_other_and_nothing_it_saw_judges(
    champion, tmp_path, capsys
):
    from closedloop.adapt.retrain import RetrainSpec
    from closedloop.adapt.run import run_adapt
    from closedloop.core.run_reader import RunDir
    from closedloop.data.bundle import DatasetBundle
    from closedloop.models.trained import TrainedModel
    from closedloop.stages.audit.duplicates import content_hashes
    from closedloop.stats.recalibration import fit_recalibration

    run, arrays = champion
    rng = np.random.default_rng(5)
    Xp, yp = _images(rng, 100, shift=40)  # a brighter scanner
    # 20 images of the original test split were labeled in production too: whatever model trains on
    # them, the non-inferiority comparison on test must leave them out (content hash, not split name)
    Xt, yt = arrays["test_images"][:20], arrays["test_labels"][:20, 0].astype(int)
    labels = _production(tmp_path / "prod.npz", run, np.concatenate([Xp, Xt]), np.concatenate([yp, yt]))
    # the evaluation file repeats 10 adaptation images: they must not judge
    Xe, ye = _images(rng, 50, shift=40)
    ev = _production(tmp_path / "eval.npz", run, np.concatenate([Xe, Xp[:10]]), np.concatenate([ye, yp[:10]]))
    out = tmp_path / "both"
    rc = main([
        "adapt", str(run), str(labels), "--eval-labels", str(ev), "--challengers", "recalibration,retrain",
        "--retrain-weight", "2", "--retrain-set", "train.max_epochs=2", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    res = json.loads((out / "adapt.json").read_text())
    rc_ = res["retrain_choice"]
    assert rc_["chosen"] in ("retrain", "other") and rc_["n_calibration"] == 60
    assert rc_["other_chosen"] in ("threshold", "platt", "temperature")
    assert "retrained challenger: cost" in printed and "left out of the evaluation part: 10" in printed
    prod = res["excluded_from_production"]
    assert prod["n"] == 10 and prod["by"] == {"adaptation labels (every challenger)": 10}
    assert res["decision"]["n"] == 50  # judged on the 50 evaluation images no model saw
    assert res["excluded_from_test"]["n"] >= 20  # the 20 test images among the adaptation labels

    # the retrained challenger alone: its run, its data and its threshold
    res2 = run_adapt(
        run, labels, eval_labels=ev, out=tmp_path / "alone", challengers=("retrain",),
        retrain=RetrainSpec(weight=2, overrides=("train.max_epochs=2",)), seed=1,
    )  # fmt: skip
    ch = res2.choice.chosen
    assert ch.method == "retrain" and ch.retrain is not None and res2.retrain_choice["chosen"] == "retrain"
    fit = ch.retrain
    assert sorted(fit.fit_rows + fit.calibration_rows) == list(range(120))
    assert not set(fit.fit_rows) & set(fit.calibration_rows) and fit.n_added == 2 * len(fit.fit_rows)
    new_run = Path(fit.run_dir)
    assert new_run.parent == run.parent and new_run != run  # next to the champion, its own run
    data = DatasetBundle.load(RunDir(new_run).artifact_dirs(DatasetBundle)[-1])
    trained = set(content_hashes(data.train))
    X_all = np.concatenate([Xp, Xt])[..., None]
    from closedloop.data.bundle import Split

    fit_h = content_hashes(Split(X=X_all[fit.fit_rows], y=np.zeros(len(fit.fit_rows))))
    cal_h = content_hashes(Split(X=X_all[fit.calibration_rows], y=np.zeros(len(fit.calibration_rows))))
    assert all(h in trained for h in fit_h), "the fit part was added to train"
    assert not any(h in trained for h in cal_h), "the threshold's labels were never trained on"
    assert data.meta.provenance["augmented"]["n_added"] == fit.n_added
    versions = (run.parent / "dataset_versions.jsonl").read_text().splitlines()
    assert any(json.loads(v)["run_id"] == new_run.name for v in versions)  # a recorded dataset version
    # the threshold: the task's costs on the calibration part, scored by the retrained network
    model = TrainedModel.load(out.parent / "alone" / "model")
    y_all = np.concatenate([yp, yt])
    p_cal = model.predict_proba(X_all[fit.calibration_rows])[:, 1]
    expect = fit_recalibration(y_all[fit.calibration_rows], p_cal, "threshold", costs=(1.0, 3.0)).threshold
    assert ch.threshold == pytest.approx(expect) and model.threshold == pytest.approx(expect)
    assert fit.own_threshold is not None  # the in-distribution one it replaced, on record
    assert "retrained with" in (tmp_path / "alone" / "adapt.md").read_text()
    assert (tmp_path / "alone" / "model_fp32.onnx").is_file()


def test_retrain_bad_input(champion, tmp_path, capsys):
    run, _ = champion
    rng = np.random.default_rng(7)
    labels = _production(tmp_path / "p.npz", run, *_images(rng, 60, shift=40))
    base = ["adapt", str(run), str(labels), "--challengers", "retrain", "--out", str(tmp_path / "o")]
    assert main([*base, "--retrain-weight", "0"]) == 2
    assert "--retrain-weight 0" in capsys.readouterr().err
    assert main([*base, "--retrain-calibration-fraction", "1.5"]) == 2
    assert "--retrain-calibration-fraction 1.5" in capsys.readouterr().err
    assert main([*base, "--retrain-set", "trian.max_epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "'trian'" in err and "did you mean 'train'" in err
    assert not (tmp_path / "o").exists()  # refused before anything was fitted or written
