"""``closedloop retrain`` compares on the challenger's resolved data and never on samples a model
trained on: the scenario of issue #20 on tiny synthetic MedMNIST-format files.

A copy of the data keeps only part of the test split; labeled images from the rest are added with
``--add-labeled`` and the copy is chosen with ``--set data.root=<copy>``. The comparison must read
the copy's test split (not the YAML file's), and when the original data is used instead, the added
test images (found by content hash, whatever their split name) are left out of the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from closedloop.cli import main
from common_data import TINY_RETRAIN

pytestmark = pytest.mark.slow  # three tiny pipeline runs (~20 s on 2 cores)

TRAIN = TINY_RETRAIN


def _images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    base = rng.integers(0, 120, (n, 28, 28))
    X = np.clip(base + 90 * y[:, None, None] + rng.integers(0, 40, (n, 1, 1)), 0, 255).astype(np.uint8)
    return X, y.reshape(-1, 1).astype(np.uint8)


def _write(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "pneumoniamnist.npz", **arrays)
    return root


def test_retrain_compares_on_the_overridden_data_and_drops_trained_on_samples(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 240), ("val", 80), ("test", 90)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _images(rng, n)
    original = _write(tmp_path / "orig", arrays)
    copy = dict(arrays)  # the copy's test split keeps the first 60 test images
    copy["test_images"], copy["test_labels"] = arrays["test_images"][:60], arrays["test_labels"][:60]
    copied = _write(tmp_path / "copy", copy)
    labeled = tmp_path / "labeled"  # 20 of the 30 other test images, labeled in production
    for i in range(60, 80):
        cls = "pneumonia" if arrays["test_labels"][i, 0] else "normal"
        (labeled / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays["test_images"][i]).save(labeled / cls / f"t{i}.png")

    cfg = {
        "name": "shift",
        "seed": 0,
        "runs_dir": str(tmp_path / "runs"),
        "data": {"source": "medmnist", "flag": "pneumoniamnist", "size": 28, "root": str(original)},
        "stages": [
            {"kind": "task", "params": {"acceptance": {"acc": 0.5}}},
            {"kind": "train", "params": TRAIN},
        ],
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(config)]) == 0
    (champion,) = [p for p in (tmp_path / "runs" / "shift").iterdir() if (p / "manifest.json").is_file()]

    out = tmp_path / "retrain.json"
    rc = main([
        "retrain", str(config), "--add-labeled", str(labeled), "--champion", str(champion),
        "--set", f"data.root={copied}", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["n_heldout"] == 60, "compared on the copy's test split, as the challenger's data says"
    assert res["excluded"]["n"] == 0
    assert res["data"]["resolved"]["root"] == str(copied)
    assert "n = 60" in " ".join(res["reasons"]) or not res["promote"]

    # the YAML file's own data: its test split holds the 20 images the challenger trained on
    capsys.readouterr()
    rc = main(
        [
            "retrain",
            str(config),
            "--add-labeled",
            str(labeled),
            "--champion",
            str(champion),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["excluded"]["n"] == 20 and res["excluded"]["by"] == {"challenger": 20}
    assert res["n_heldout"] == 70
    assert "left out 20 of 90" in capsys.readouterr().out
