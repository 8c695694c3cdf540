"""Every registered plug-in passes its family's common battery, the way test_common.py checks stages.

Families: audit checks, drift tests, model families, data sources. The first three batteries are public
(``closedloop.stages.audit.checks.check_audit_check``, ``closedloop.monitoring.drift.checks.check_drift_test``,
``closedloop.models.checks.check_model_family``), so a user runs the same on a plug-in of their own
(docs/extending.md does). Each battery is parametrized over
its registry, so a new built-in plug-in is tested for free; one that needs a tiny fixture (a model
family's params and input shape, a data source's files) and has none fails ``test_every_*_has_a_fixture``.
Only closedloop's own plug-ins are collected: classes defined by tests or user packages come and go
with what a session has imported.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import closedloop
from closedloop.core.errors import ConfigError
from closedloop.core.registry import SOURCES, Registry
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.models.checks import check_model_family
from closedloop.models.registry import MODELS
from closedloop.monitoring.drift import DRIFT_TESTS
from closedloop.monitoring.drift.checks import PROBLEMS, check_drift_test
from closedloop.stages.audit.base import CHECKS
from closedloop.stages.audit.checks import bundle_digest, check_audit_check

for _pkg in ("stages", "data", "models"):  # register every built-in plug-in, whatever imported it
    for _mod in pkgutil.walk_packages(
        [str(Path(closedloop.__file__).parent / _pkg)], prefix=f"closedloop.{_pkg}."
    ):
        importlib.import_module(_mod.name)


def builtin(registry: Registry) -> list[str]:
    return sorted(n for n, c in registry.items().items() if c.__module__.startswith("closedloop."))


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# -- audit checks ---------------------------------------------------------------------------------
def tiny_table(n: int = 240, seed: int = 0) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "color": pd.Categorical(rng.choice(["red", "blue"], n)),
        }
    )
    y = ((X.a + rng.normal(0, 0.5, n)) > 0).astype(np.int64).to_numpy()
    meta = DatasetMeta(
        name="t", source="test", kind="table", label_names=["0", "1"], categorical_features=["color"]
    )
    parts = np.split(np.arange(n), [int(n * 0.6), int(n * 0.8)])
    splits = {
        k: Split(X.iloc[p].reset_index(drop=True), y[p])
        for k, p in zip(("train", "val", "test"), parts, strict=True)
    }
    return DatasetBundle(meta=meta, splits=splits)


def tiny_images(n: int = 150) -> DatasetBundle:
    """Three digit classes as 8x8 images (few classes keep the montages small)."""
    from sklearn.datasets import load_digits

    d = load_digits(n_class=3)
    idx = np.random.default_rng(0).permutation(len(d.target))[:n]
    X = (d.images[idx] * (255 / 16)).round().astype(np.uint8)[..., None]
    y = d.target[idx].astype(np.int64)
    meta = DatasetMeta(name="digits3", source="test", kind="images", label_names=["0", "1", "2"])
    parts = np.split(np.arange(n), [int(n * 0.6), int(n * 0.8)])
    splits = {k: Split(X[p], y[p]) for k, p in zip(("train", "val", "test"), parts, strict=True)}
    return DatasetBundle(meta=meta, splits=splits)


def tiny_data(kind: str) -> DatasetBundle:
    return tiny_images() if kind == "images" else tiny_table()


@pytest.mark.parametrize("kind", ["images", "table"])
@pytest.mark.parametrize("name", builtin(CHECKS))
def test_audit_check_battery(name: str, kind: str, tmp_path: Path) -> None:
    cls = CHECKS.resolve(name)
    if kind not in cls.applies_to:
        pytest.skip(f"{name} applies to {sorted(cls.applies_to)}")
    check_audit_check(cls, tiny_data(kind), tmp_path)


# -- drift tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", builtin(DRIFT_TESTS))
def test_drift_test_battery(name: str) -> None:
    declined = check_drift_test(name)
    assert len(declined) < len(PROBLEMS), f"{name} applies to none of {PROBLEMS}"


# -- model families -------------------------------------------------------------------------------
#: family -> (params, input shape): a network that builds in well under a second
MODEL_FIXTURES: dict[str, tuple[dict[str, Any], list[int]]] = {
    "small_cnn": ({"width": 4, "depth": 2}, [12, 12, 1]),
    "resnet18": ({}, [16, 16, 3]),
    "resnet50": ({}, [16, 16, 1]),
    "mlp": ({"width": 8, "depth": 2}, [5]),
    "ensemble": ({"member": {"family": "mlp", "params": {"width": 8}}, "n": 2}, [5]),
    "lgbm": ({"num_leaves": 4}, [5]),  # untrained: raw scores 0 (tests/train/test_train_trees.py trains it)
}


def test_every_model_family_has_a_fixture() -> None:
    missing = sorted(set(builtin(MODELS)) - set(MODEL_FIXTURES))
    assert not missing, f"model families without a MODEL_FIXTURES entry in {__file__}: {missing}"


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=pytest.mark.slow) if f == "resnet50" else f for f in builtin(MODELS)]
)
def test_model_family_battery(family: str) -> None:
    check_model_family(family, *MODEL_FIXTURES[family])


# -- data sources ---------------------------------------------------------------------------------
def _table_csv(tmp: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({"a": rng.normal(size=n), "kind": rng.choice(["x", "y"], n), "label": np.arange(n) % 2})
    df.to_csv(tmp / "t.csv", index=False)
    return {"path": str(tmp / "t.csv"), "target": "label"}


def _image_folder(tmp: Path) -> dict[str, Any]:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp / "imgs" / c).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp / "imgs" / c / f"{i}.png")
    return {"root": str(tmp / "imgs")}


def _medmnist(tmp: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in (("train", 30), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 2).astype(np.uint8).reshape(k, 1)
    np.savez(tmp / "breastmnist.npz", **arrays)
    return {"flag": "breastmnist", "root": str(tmp), "download": False}


def _augmented(tmp: Path) -> dict[str, Any]:
    base = {"source": "tabular", **_table_csv(tmp)}
    pd.DataFrame({"a": [0.1, 0.2], "kind": ["x", "y"], "label": [0, 1]}).to_csv(tmp / "new.csv", index=False)
    return {"base": base, "labeled": str(tmp / "new.csv")}


#: source -> a function writing tiny files under a folder and returning the source's config
SOURCE_FIXTURES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "sklearn": lambda tmp: {"name": "iris"},
    "tabular": _table_csv,
    "image_folder": _image_folder,
    "medmnist": _medmnist,
    "augmented": _augmented,
}


def test_every_data_source_has_a_fixture() -> None:
    missing = sorted(set(builtin(SOURCES)) - set(SOURCE_FIXTURES))
    assert not missing, f"data sources without a SOURCE_FIXTURES entry in {__file__}: {missing}"


@pytest.mark.parametrize("key", builtin(SOURCES))
def test_data_source_battery(key: str, tmp_path: Path) -> None:
    from closedloop.core.pipeline import Pipeline

    cls = SOURCES.resolve(key)
    config = SOURCE_FIXTURES[key](tmp_path)
    first, second = cls(config).load(seed=0), cls(config).load(seed=0)
    assert isinstance(first, DatasetBundle) and set(first.splits) == {"train", "val", "test"}
    assert all(len(s) > 0 for s in first.splits.values())
    assert first.kind in ("images", "table")
    assert bundle_digest(first) == bundle_digest(second), "same files and seed must give the same bundle"
    assert isinstance(cls(config).content_key(), str)
    with pytest.raises(ConfigError, match=r"data.*unknown key 'no_such_option'"):
        cls({**config, "no_such_option": 1})
    # named from YAML by its key, and by import path
    for name in (key, f"{cls.__module__}:{cls.__qualname__}"):
        raw = {"name": "p", "data": {"source": name, **config}, "stages": [{"kind": "task"}]}
        Pipeline.from_dict(raw).check_wiring()


def test_the_public_batteries_fail_a_broken_plugin() -> None:
    """The batteries are not decoration: a drift test blind to a 3-SD shift and a network whose
    head does not produce its output are both refused, each with a sentence naming the failure."""
    from closedloop.monitoring.drift import DriftResult, DriftTest

    class Blind(DriftTest):
        name = "blind_battery_probe"
        description = "blind: never sees anything"

        def run(self, ref, win, ctx) -> DriftResult:  # noqa: ANN001
            return DriftResult(p_value=1.0, statistic=0.0)

    with pytest.raises(AssertionError, match="blind_battery_probe.*shifted by 3 SD"):
        check_drift_test(Blind)
    with pytest.raises(AssertionError, match="head\\(features\\(x\\)\\) != forward\\(x\\)"):
        check_model_family("test_common_plugins:skewed_mlp", {}, [5])


def skewed_mlp(input_shape: list[int], n_logits: int) -> torch.nn.Module:
    """A family that breaks the contract: forward adds 1 to what head(features(x)) gives."""

    class Skewed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Linear(input_shape[0], 4)
            self.head = torch.nn.Linear(4, n_logits)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x)) + 1

    return Skewed()
