"""Every registered baseline passes one shared battery; a user baseline is one class, named in YAML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.core.errors import ConfigError
from closedloop.data.bundle import Split
from closedloop.stages.baseline import BASELINES, FitBaselinesConfig, fit_baseline
from closedloop.stages.baseline.fit import configured_baselines, fit_one
from closedloop.stages.task import DefineTaskConfig, build_task_spec

PROBLEM_TARGETS = {
    "binary": lambda rng, n: rng.integers(0, 2, n),
    "multiclass": lambda rng, n: rng.integers(0, 3, n),
    "ordinal": lambda rng, n: rng.integers(0, 3, n),
    "multilabel": lambda rng, n: rng.integers(0, 2, (n, 3)),
    "regression": lambda rng, n: rng.normal(size=n),
}


def _task(problem: str, kind: str, y: np.ndarray):  # noqa: ANN202
    from closedloop.data.bundle import DatasetBundle, DatasetMeta

    n_outputs = {"binary": 2, "multiclass": 3, "ordinal": 3, "multilabel": 3, "regression": 1}[problem]
    meta = DatasetMeta(
        name="t", source="test", kind=kind, problem_type=problem, time_column="t" if kind == "table" else None
    )
    if kind == "table":
        X: object = pd.DataFrame({"a": np.arange(len(y), dtype=float), "t": np.arange(len(y))})
    else:
        X = np.random.default_rng(0).integers(0, 255, (len(y), 4, 4, 1)).astype(np.uint8)
    bundle = DatasetBundle(meta=meta, splits={s: Split(X=X, y=y) for s in ("train", "val", "test")})
    return build_task_spec(DefineTaskConfig(), bundle), bundle, n_outputs


@pytest.mark.parametrize("name", BASELINES.names())
@pytest.mark.parametrize("problem", sorted(PROBLEM_TARGETS))
@pytest.mark.parametrize("kind", ["images", "table"])
def test_every_baseline_fits_and_predicts_in_the_package_convention(
    name: str, problem: str, kind: str
) -> None:
    cls = BASELINES.resolve(name)
    rng = np.random.default_rng(0)
    y = PROBLEM_TARGETS[problem](rng, 60)
    task, bundle, n_outputs = _task(problem, kind, y)
    if not cls.applies(task):
        pytest.skip(f"{name} does not apply to {problem} {kind}")
    cfg = FitBaselinesConfig(tree_ensemble=True, max_train=40)
    model = fit_one(cls(), bundle.train, task, cfg, seed=0, time_column="t")
    proba = model.predict_proba(bundle.val.X)
    width = 2 if problem == "binary" else n_outputs
    assert proba.shape == (60, width)
    assert np.isfinite(proba).all()
    if problem in ("binary", "multiclass", "ordinal"):
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    again = fit_one(cls(), bundle.train, task, cfg, seed=0, time_column="t").predict_proba(bundle.val.X)
    np.testing.assert_array_equal(proba, again)  # deterministic given the seed


def test_builtin_baselines_declare_their_config_switch() -> None:
    for name, cls in BASELINES.items().items():
        if cls.__module__ == "closedloop.stages.baseline.builtin":
            assert cls.switch == "always" or cls.switch in FitBaselinesConfig.model_fields, name
            for src in cls.stage_params.values():
                assert src in FitBaselinesConfig.model_fields, (name, src)


def test_extra_baseline_by_import_path_runs_after_the_builtins(runs_dir: Path) -> None:
    from closedloop.core.pipeline import Pipeline

    cfg = runs_dir.parent / "p.yaml"
    cfg.write_text(
        "name: extra\ndata: {source: sklearn, name: digits}\nstages:\n  - kind: task\n"
        "  - kind: baseline\n    params: {extra: ['toy_pkg:ToyCentroid'], knn: false}\n"
    )
    result = Pipeline.from_yaml(cfg).run(progress=False)
    names = [r.name for r in result.artifact("baseline").results]
    assert names == ["most_frequent", "prior", "stratified", "logistic", "toy_centroid"]


def test_unknown_extra_baseline_says_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'logistic'"):
        FitBaselinesConfig(extra=["logistik"])


def test_fit_baseline_names_what_is_configured(digits) -> None:  # noqa: ANN001
    task, bundle, _ = _task("binary", "images", np.random.default_rng(0).integers(0, 2, 30))
    cfg = FitBaselinesConfig(knn=False)
    assert [b.name for b in configured_baselines(task, cfg, None)] == [
        "most_frequent",
        "prior",
        "stratified",
        "logistic",
    ]
    with pytest.raises(ConfigError, match="not configured"):
        fit_baseline("knn", bundle.train, task, cfg, seed=0)


def test_fit_times_live_in_the_manifest_not_in_the_artifact(runs_dir: Path) -> None:
    import json

    from closedloop.core.pipeline import Pipeline
    from closedloop.stages.baseline import FitBaselines
    from closedloop.stages.task import DefineTask

    result = Pipeline(
        [DefineTask(), FitBaselines(knn=False)], data={"source": "sklearn", "name": "digits"}, name="t"
    ).run(progress=False)
    timings = result.summary["stages"]["baseline"]["timings"]
    assert set(timings) == {"fit most_frequent", "fit prior", "fit stratified", "fit logistic"}
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert [s["timings"] for s in manifest["stages"] if s["name"] == "baseline"] == [timings]
    saved = (result.run_dir / result.summary["stages"]["baseline"]["artifacts"]["baseline"]).rglob("*.json")
    assert not any("seconds" in p.read_text() for p in saved)  # artifacts stay deterministic
