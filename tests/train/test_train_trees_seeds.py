"""A seed ensemble of trees is one booster: all members' trees at 1/N give the mean of their raw
scores (binary and multi-class), and members that cannot be averaged are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

lgb = pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

from closedloop.models.families.lgbm import TreeEnsemble, average_boosters, average_members  # noqa: E402


def _members(X: np.ndarray, y: np.ndarray, k: int, n: int = 3) -> list[TreeEnsemble]:
    out = []
    for s in range(n):
        p = {"objective": "multiclass" if k > 1 else "binary", "verbosity": -1, "seed": s, "num_threads": 1}
        p |= {"bagging_fraction": 0.7, "bagging_freq": 1, "feature_fraction": 0.7, "deterministic": True}
        p |= {"num_class": k} if k > 1 else {}
        net = TreeEnsemble(X.shape[1], k, num_leaves=8)
        net.set_booster(lgb.train(p, lgb.Dataset(X, y), 10 + 3 * s))  # members of different lengths
        out.append(net)
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_one_booster_scores_the_members_mean(k: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values route the same way in the merged trees
    y = (X[:, 0] + np.nan_to_num(X[:, 1]) > 0).astype(int) if k == 1 else rng.integers(0, 3, 300)
    members = _members(X, y, k)
    merged = average_members(members)
    mean = np.mean([m.raw_scores(X) for m in members], axis=0)
    assert np.abs(merged.raw_scores(X) - mean).max() < 1e-5
    assert merged.n_leaves() == sum(m.n_leaves() for m in members)
    with torch.no_grad():  # the module contract: logits = head(features(x))
        assert torch.allclose(
            merged(torch.from_numpy(np.nan_to_num(X[:4]))).float(),
            merged.features(torch.from_numpy(np.nan_to_num(X[:4]))),
        )


def test_members_that_cannot_be_averaged_are_refused() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 4)), rng.integers(0, 2, 200)
    members = _members(X, y, 1, n=2)
    with torch.no_grad():
        members[1].head.weight.mul_(2.0)
    with pytest.raises(ValueError, match="a member's head is not the identity"):
        average_members(members)
    other = _members(rng.normal(size=(200, 6)), y, 1, n=1)[0]
    texts = [bytes(m.booster.numpy()).decode() for m in (members[0], other)]
    with pytest.raises(ValueError, match="differ in objective, classes or columns"):
        average_boosters(texts)
    with pytest.raises(ValueError, match="no member"):
        average_boosters([])


def _run(tmp: Path, fraction: float):  # type: ignore[no-untyped-def]
    from closedloop.core.checks import GivenArtifacts
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.registry import STAGES
    from closedloop.stages.train import TrainModel

    from .test_train_trees import tree_table
    from .test_train_trees_bad_input import QUICK

    train = TrainModel(
        **QUICK,
        final_seeds=2,
        tune_knobs=["learning_rate"],  # the sampling fractions stay as given
        model_params={"feature_fraction": fraction, "bagging_fraction": fraction},
    )
    given = GivenArtifacts.of({"data": tree_table(300)}, tmp / "given")
    stages = [STAGES.resolve("task")(), train, STAGES.resolve("export")()]
    res = Pipeline([given, *stages], name="seeds", runs_dir=tmp).run(progress=False)
    assert all(v["status"] == "ok" for v in res.summary["stages"].values()), res.summary
    return res


def test_a_tree_seed_ensemble_through_train_and_export(tmp_path: Path) -> None:
    """``final_seeds: 2`` with row/column sampling: two members, shipped as one lgbm booster, exported
    with ONNX parity; without sampling the seeds would fit the same trees: one member, said so."""
    res = _run(tmp_path / "a", 0.7)
    s = res.summary["stages"]
    assert s["train"]["model"]["family"] == "lgbm" and s["export"]["parity_max_abs_diff"] <= 1e-5
    said = [d for d in s["train"]["decisions"] if "seed ensemble of 2 tree members" in d["decision"]]
    assert said and said[0]["phase"] == "final" and said[0]["evidence"]["members"] == 2
    same = _run(tmp_path / "b", 1.0).summary["stages"]["train"]["decisions"]
    assert [d for d in same if "other seeds would fit the same trees: one member" in d["decision"]]
    assert not [d for d in same if "seed ensemble of" in d["decision"]]
