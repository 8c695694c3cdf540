"""Every registered plug-in passes its family's common battery, the way test_common.py checks stages.

Families: audit checks, drift tests, model families, data sources. Each battery is parametrized over
its registry, so a new built-in plug-in is tested for free; one that needs a tiny fixture (a model
family's params and input shape, a data source's files) and has none fails ``test_every_*_has_a_fixture``.
Only closedloop's own plug-ins are collected: classes defined by tests or user packages come and go
with what a session has imported.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_limits

import closedloop
from closedloop.core.errors import ConfigError
from closedloop.core.ledger import TestLedger
from closedloop.core.registry import SOURCES, Registry
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.models.registry import MODELS, accepts_param, build_network
from closedloop.models.trained import ModelSpec
from closedloop.monitoring.drift import DRIFT_TESTS, DriftContext, DriftResult, Sample, resolve_drift_test
from closedloop.stages.audit.base import CHECKS, SEVERITIES, AuditContext, CheckResult, CheckSkipped, Finding
from closedloop.stages.task import DefineTaskConfig, build_task_spec

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


def bundle_digest(data: DatasetBundle) -> str:
    h = hashlib.sha256()
    for name, split in sorted(data.splits.items()):
        X = split.X
        if isinstance(X, pd.DataFrame):  # values and dtypes (object arrays have no stable bytes)
            X = pd.util.hash_pandas_object(X).to_numpy()
            h.update(str(split.X.dtypes.to_dict()).encode())
        h.update(name.encode() + np.ascontiguousarray(X).tobytes() + np.asarray(split.y).tobytes())
    return h.hexdigest()


def run_check(cls: type, data: DatasetBundle, tmp: Path) -> tuple[CheckResult | str, RunContext]:
    ctx = RunContext(
        stage_name="audit",
        stage_dir=tmp,
        seed=0,
        test_ledger=TestLedger(tmp / "g.jsonl", tmp / "r.jsonl", run_id="r"),
    )
    actx = AuditContext(ctx, data)
    actx.current_check = cls.name
    task = build_task_spec(DefineTaskConfig(), data)
    try:
        with threadpool_limits(limits=1, user_api="openmp"):  # as the audit stage runs them
            return cls().run(data, task, actx), ctx
    except CheckSkipped as exc:
        return f"skipped: {exc}", ctx


@pytest.mark.parametrize("kind", ["images", "table"])
@pytest.mark.parametrize("name", builtin(CHECKS))
def test_audit_check_battery(name: str, kind: str, tmp_path: Path) -> None:
    cls = CHECKS.resolve(name)
    if kind not in cls.applies_to:
        pytest.skip(f"{name} applies to {sorted(cls.applies_to)}")
    data = tiny_data(kind)
    before = bundle_digest(data)
    res, ctx = run_check(cls, data, tmp_path / "a")
    assert bundle_digest(data) == before, "a check must not modify the data"
    if isinstance(res, str):  # a check may decline data it cannot judge, with a reason
        assert len(res) > len("skipped: ")
        return
    assert isinstance(res, CheckResult)
    for f in res.findings:
        assert isinstance(f, Finding) and f.check == name and f.severity in SEVERITIES and f.message
        as_json(f.to_dict())
    for fig in res.figures:
        assert (ctx.figures_dir / fig).is_file(), f"{name}: figure {fig} not written to ctx.figures_dir"
    assert all(isinstance(t, pd.DataFrame) for t in res.tables.values())
    json.dumps(res.metrics, default=float)
    opened = [e for e in ctx.test_ledger.entries() if name in e["reason"]]  # type: ignore[union-attr]
    assert not opened or cls.needs_test, f"{name} opens the test split but declares needs_test = False"
    again, _ = run_check(cls, data, tmp_path / "b")
    assert isinstance(again, CheckResult)
    assert as_json([f.to_dict() for f in again.findings]) == as_json([f.to_dict() for f in res.findings])
    assert as_json(again.metrics) == as_json(res.metrics), "same data and seed must give the same metrics"


@pytest.mark.parametrize("name", builtin(CHECKS))
def test_audit_check_config_and_name(name: str) -> None:
    cls = CHECKS.resolve(name)
    with pytest.raises(ConfigError, match=rf"{name}.*unknown key 'no_such_option'"):
        cls({"no_such_option": 1})
    assert CHECKS.resolve(f"{cls.__module__}:{cls.__qualname__}") is cls


# -- drift tests ----------------------------------------------------------------------------------
def drift_samples(problem: str, shift: float) -> tuple[Sample, Sample, list[str]]:
    """A reference and a window; ``shift`` moves every quantity a test may watch (features,
    embeddings, probabilities, labels) by a large amount."""
    rng = np.random.default_rng(0)
    k = 3 if problem == "multiclass" else 2

    def make(n: int, s: float) -> Sample:
        feats = rng.normal(s, 1.0, (n, 3))
        feats[:, 2] = rng.integers(0, 3, n) if s == 0 else 2  # a categorical column
        logits = rng.normal(0, 1, (n, k)) + np.eye(k)[np.zeros(n, int)] * 3 * s
        proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        if problem == "regression":
            return Sample(feats, rng.normal(s, 1.0, (n, 4)).astype(np.float32))
        labels = rng.integers(0, k, n) if s == 0 else np.zeros(n, int)
        return Sample(feats, rng.normal(s, 1.0, (n, 4)).astype(np.float32), proba, labels)

    ref = make(150, 0.0)
    win = make(100, shift) if shift else ref.take(np.arange(100))
    return ref, win, ["x0", "x1", "cat"]


def drift_context(problem: str, names: list[str], seed: int = 0) -> DriftContext:
    return DriftContext(
        problem, 0.5, names, [2], bandwidth=3.0, permutations=100, rng=np.random.default_rng(seed)
    )


@pytest.mark.parametrize("problem", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("name", builtin(DRIFT_TESTS))
def test_drift_test_battery(name: str, problem: str) -> None:
    test = DRIFT_TESTS.resolve(name)()
    ref, same, names = drift_samples(problem, 0.0)
    if not test.applies(ref, drift_context(problem, names)):
        pytest.skip(f"{name} does not apply to {problem}")
    _, shifted, _ = drift_samples(problem, 3.0)
    quiet = test.run(ref, same, drift_context(problem, names))
    loud = test.run(ref, shifted, drift_context(problem, names))
    for r in (quiet, loud):
        assert isinstance(r, DriftResult) and 0.0 <= r.p_value <= 1.0 and np.isfinite(r.statistic)
        assert all(np.isfinite(v) for v in r.effect.values())
        as_json(r.details)
    assert quiet.p_value > 0.2, f"{name}: p={quiet.p_value} on a window drawn from the reference itself"
    assert loud.p_value < 0.01, f"{name}: p={loud.p_value} on a window shifted by 3 SD"
    again = test.run(ref, shifted, drift_context(problem, names))
    assert (again.p_value, again.statistic) == (loud.p_value, loud.statistic), "seeded: same numbers"
    lean = drift_context(problem, names)
    lean.effects = False  # the calibration path computes p-values only
    assert test.run(ref, shifted, lean).p_value == loud.p_value


@pytest.mark.parametrize("name", builtin(DRIFT_TESTS))
def test_drift_test_pool_cache_gives_the_same_p_values(name: str) -> None:
    """What a test precomputes over a calibration pool must not change its p-values."""
    test = DRIFT_TESTS.resolve(name)()
    ref, win, names = drift_samples("binary", 0.5)
    pool = Sample(
        np.vstack([ref.features, win.features]),
        np.vstack([ref.embeddings, win.embeddings]),
        np.vstack([ref.proba, win.proba]),
        np.concatenate([ref.labels, win.labels]),
        index=np.arange(len(ref) + len(win)),
    )
    r, w = pool.take(np.arange(len(ref))), pool.take(np.arange(len(ref), len(pool)))
    if not test.applies(r, drift_context("binary", names)):
        pytest.skip(f"{name} does not apply")
    cached = drift_context("binary", names)
    cached.pool = {name: test.prepare_pool(pool, drift_context("binary", names))}
    assert test.run(r, w, cached).p_value == test.run(r, w, drift_context("binary", names)).p_value


@pytest.mark.parametrize("name", builtin(DRIFT_TESTS))
def test_drift_test_config_and_name(name: str) -> None:
    cls = DRIFT_TESTS.resolve(name)
    with pytest.raises(ConfigError, match=rf"{name}.*unknown key 'no_such_option'"):
        cls({"no_such_option": 1})
    assert resolve_drift_test(f"{cls.__module__}:{cls.__qualname__}") is cls
    assert cls.headline() and cls.description


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


def _input(shape: list[int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if len(shape) == 3:  # (H, W, C) images enter the network channels-first
        return torch.rand(2, shape[2], shape[0], shape[1], generator=g)
    return torch.randn(2, *shape, generator=g)


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=pytest.mark.slow) if f == "resnet50" else f for f in builtin(MODELS)]
)
def test_model_family_battery(family: str) -> None:
    params, shape = MODEL_FIXTURES[family]
    n_logits = 3
    x = _input(shape)
    torch.manual_seed(0)
    net = build_network(ModelSpec(family=family, params=params), shape, n_logits).eval()
    with torch.no_grad():
        feats = net.features(x)
        out = net(x)
        assert feats.ndim == 2 and feats.shape[0] == 2
        assert isinstance(net.head, torch.nn.Linear) and net.head.in_features == feats.shape[1]
        assert out.shape == (2, n_logits) and torch.isfinite(out).all()
        # the monitor and the export read embeddings as features(x) and logits as head(features(x))
        torch.testing.assert_close(net.head(feats), out)
        torch.manual_seed(0)
        twin = build_network(ModelSpec(family=family, params=params), shape, n_logits).eval()
        torch.testing.assert_close(twin(x), out)  # seeded construction gives the same weights
        one = build_network(ModelSpec(family=family, params=params), shape, 1).eval()
        assert one(x).shape == (2, 1)  # binary and regression heads have one logit
    if accepts_param(family, "dropout"):  # the tuner will pass it: the family must take it
        build_network(ModelSpec(family=family, params={**params, "dropout": 0.2}), shape, n_logits)


@pytest.mark.parametrize("family", builtin(MODELS))
def test_model_family_signature(family: str) -> None:
    builder = MODELS.resolve(family)
    first = list(inspect.signature(builder).parameters)[:2]
    assert len(first) == 2, f"{family}: a builder takes (input_shape, n_logits, **params)"
    assert MODELS.resolve(f"{builder.__module__}:{builder.__qualname__}") is builder


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
