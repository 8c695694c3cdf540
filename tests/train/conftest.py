"""Small bundles and a tiny training config for the training tests (sklearn digits as 8x8 uint8 images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from common_data import TINY_TRAIN

TINY: dict[str, Any] = TINY_TRAIN  # shared with tests outside tests/train (tests/common_data.py)


def digits_bundle(
    classes: tuple[int, ...] = (0, 1), n_per_split: tuple[int, int, int] = (240, 80, 80), seed: int = 0
) -> DatasetBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.isin(d.target, classes)
    X = (d.images[keep] * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    y = np.searchsorted(np.array(classes), d.target[keep]).astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(y))
    a, b, c = n_per_split
    parts = {"train": idx[:a], "val": idx[a : a + b], "test": idx[a + b : a + b + c]}
    splits = {k: Split(X=X[v], y=y[v]) for k, v in parts.items()}
    meta = DatasetMeta(
        name="digits", source="sklearn", kind="images", label_names=[str(k) for k in classes], n_channels=1
    )
    return DatasetBundle(meta=meta, splits=splits)


def one_rung_mlp(width: int = 32, depth: int = 1, epochs: int = 4) -> dict[str, Any]:
    """TINY train settings with a one-rung MLP ladder (the table tests' small network)."""
    ladder = [{"width": width, "depth": depth}]
    return {**TINY, "ladder": ladder, "batch_size": 32, "ladder_epochs": epochs, "max_epochs": epochs}


def make_ctx(stage_dir: Path, seed: int = 0) -> RunContext:
    stage_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(
        stage_name="train",
        stage_dir=stage_dir,
        seed=seed,
        fingerprint="f" * 64,
        test_ledger=TestLedger(stage_dir / "global_test.jsonl", stage_dir / "run_test.jsonl", run_id="r1"),
        validation_ledger=ValidationLedger(stage_dir / "validation.jsonl"),
    )


@pytest.fixture(scope="session")
def binary_digits() -> DatasetBundle:
    return digits_bundle((3, 8))


@pytest.fixture(scope="session")
def binary_task(binary_digits: DatasetBundle) -> Any:
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    return build_task_spec(DefineTaskConfig(), binary_digits)
