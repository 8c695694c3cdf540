"""Tiny hand-made datasets shared by tests (a uniquely named module: several test folders put their
own directory on sys.path, so ``from conftest import ...`` could find the wrong conftest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split


def digits_bundle(n_per_split: tuple[int, int, int] = (400, 150, 150), seed: int = 0) -> DatasetBundle:
    """scikit-learn digits as 8x8 uint8 images, split by hand (independent of the data sources)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(d.target))
    X = (d.images * (255 / 16)).round().astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    a, b, c = n_per_split
    parts = {"train": idx[:a], "val": idx[a : a + b], "test": idx[a + b : a + b + c]}
    meta = DatasetMeta(
        name="digits", source="test", kind="images", label_names=[str(i) for i in range(10)], n_channels=1
    )
    return DatasetBundle(meta=meta, splits={k: Split(X=X[v], y=y[v]) for k, v in parts.items()})


#: train-stage params for a seconds-long, deterministic run on tiny data
TINY_TRAIN: dict[str, Any] = {
    "preset": "quick",
    "budget_minutes": 30,  # the trial count, not the clock, ends each phase (deterministic)
    "ladder": [{"width": 4, "depth": 1}, {"width": 8, "depth": 1}],
    "baseline_epochs": 1,
    "ladder_epochs": 3,
    "n_trials": 2,
    "max_epochs": 3,
    "sanity_steps": 80,
    "sanity_lr": 0.01,
    "batch_size": 64,
    "min_steps_per_epoch": 0,
    "n_bootstrap": 200,
    "threads": 1,
}


#: train-stage params for the retrain/adapt pipelines on tiny images: one small MLP rung, one trial
TINY_RETRAIN: dict[str, Any] = {
    "preset": "quick",
    "family": "mlp",
    "ladder": [{"width": 16}],
    "budget_minutes": 5,
    "n_trials": 1,
    "max_epochs": 2,
    "ladder_epochs": 2,
    "baseline_epochs": 1,
    "sanity_steps": 60,
    "sanity_lr": 0.01,
    "sanity_batch": 8,
    "n_bootstrap": 100,
    "threads": 1,
}


def write_medmnist(
    folder: Path,
    images: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]],
    sizes: tuple[int, int, int],
    rng: np.random.Generator,
    *,
    flag: str = "pneumoniamnist",
) -> dict[str, np.ndarray]:
    """A MedMNIST-shaped ``<flag>.npz`` in ``folder`` with ``sizes`` (train, val, test) samples, each
    split drawn in turn by ``images(rng, n) -> (X, y)``; returns the arrays written."""
    arrays: dict[str, np.ndarray] = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        X, y = images(rng, n)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = (
            X,
            np.asarray(y).reshape(-1, 1).astype(np.uint8),
        )
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{flag}.npz", **arrays)
    return arrays


def binary_holdout_plan(X: Any, y: Any, **kw: Any) -> Any:
    """``plan_heldout`` for the tests' common case: a binary task whose final fit uses train + the rest of
    validation (``fraction`` and ``min_size`` given; ``n_train`` 1 and ``seed`` 0 unless given)."""
    from closedloop.stages.train.heldout import plan_heldout

    return plan_heldout(X, y, problem_type="binary", final_fit="train+val", **{"n_train": 1, "seed": 0, **kw})


def run_split_table(tmp: Path, name: str, table: Any, stages: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``table`` (features, ``label`` and a ``split`` column) as a CSV, a pipeline YAML that reads it
    with ``stages``, and run it with the CLI: ``(the config, the run directory)``."""
    import yaml

    from closedloop.cli import main

    table.to_csv(tmp / "table.csv", index=False)
    cfg = {
        "name": name,
        "seed": 0,
        "runs_dir": str(tmp / "runs"),
        "data": {
            "source": "tabular",
            "path": str(tmp / "table.csv"),
            "target": "label",
            "split_column": "split",
        },
        "stages": stages,
    }
    config = tmp / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(config)]) == 0
    (run,) = [p for p in (tmp / "runs" / name).iterdir() if (p / "manifest.json").is_file()]
    return config, run
