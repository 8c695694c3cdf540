"""The tree family's selection does less repeated work without changing what it trains (issue #25, trees'
speed): one LightGBM Dataset per split for the fits that share it, the kept round's validation logits
from the scores the fit already summed, the training booster kept (no write-and-parse at the end of
lgb.train), and the study journal locked with ``flock``."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightgbm")

from closedloop.models.families.lgbm import TreeEnsemble  # noqa: E402
from closedloop.stages.train.engine import HParams, TensorSet  # noqa: E402
from closedloop.stages.train.phases.journal import LOCK_SUFFIX, FlockLock, UnsyncedJournalFile  # noqa: E402
from closedloop.stages.train.tree_engine import TreeEngine  # noqa: E402


def _table(n: int, problem: str, seed: int = 0) -> TensorSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:, 4] = rng.integers(0, 4, n)  # a categorical column
    score = np.nan_to_num(x[:, 0]) + 0.6 * rng.normal(size=n)
    if problem == "binary":
        y = (score > 0.3).astype(np.int64)
        return TensorSet(torch.from_numpy(x), torch.from_numpy(y).float().reshape(-1, 1), y)
    if problem == "multiclass":
        y = np.digitize(score, [-0.5, 0.5]).astype(np.int64)
        return TensorSet(torch.from_numpy(x), torch.from_numpy(y), y)
    y = np.stack([score > 0, np.nan_to_num(x[:, 1]) + 0.6 * rng.normal(size=n) > 0.5], 1).astype(np.float32)
    return TensorSet(torch.from_numpy(x), torch.from_numpy(y), y)


def _engine(problem: str) -> TreeEngine:
    n_logits = {"binary": 1, "multiclass": 3, "multilabel": 2}[problem]
    return TreeEngine(
        problem, n_logits if problem != "binary" else 2, metric="auc", higher_is_better=True, categorical=[4]
    )


CONFIGS = [  # what the ladder and the trials vary: leaves, minimum leaf size, sampling, rate, weights, seed
    ({"num_leaves": 4}, HParams(epochs=3, patience=1), 0),
    ({"num_leaves": 16, "min_child_samples": 20, "feature_fraction": 0.7}, HParams(epochs=4, patience=2), 1),
    (
        {"num_leaves": 8, "learning_rate": 0.3, "bagging_fraction": 0.8},
        HParams(epochs=3, class_weight="balanced"),
        2,
    ),
    ({"num_leaves": 4, "min_child_samples": 5}, HParams(epochs=5, patience=1), 3),
]


@pytest.mark.parametrize("problem", ["binary", "multiclass", "multilabel"])
def test_fits_on_one_split_grow_the_trees_of_fresh_fits_and_bin_it_once_per_weighting(
    problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightgbm as lgb

    train, val = _table(600, problem, 0), _table(200, problem, 1)
    shared = _engine(problem)
    built = []
    real = lgb.Dataset.construct

    def counted(self: lgb.Dataset) -> lgb.Dataset:
        if self._handle is None:
            built.append(self)
        return real(self)

    monkeypatch.setattr(lgb.Dataset, "construct", counted)
    for params, hp, seed in CONFIGS:
        a, b = TreeEnsemble(5, shared.n_logits, **params), TreeEnsemble(5, shared.n_logits, **params)
        got = shared.fit(a, train, val, hp, seed=seed)
        fresh = _engine(problem).fit(b, train, val, hp, seed=seed)  # its own engine: a Dataset of its own
        assert bytes(a.booster.numpy()) == bytes(b.booster.numpy())
        assert got.best_epoch == fresh.best_epoch and got.best_score == fresh.best_score
        assert [h["train_loss"] for h in got.history] == [h["train_loss"] for h in fresh.history]
    # the shared engine built one Dataset per weighting of the split (unweighted, balanced; multi-label:
    # the weights set each label's starting log-odds); the fresh engines one per fit
    assert len(built) == 2 + len(CONFIGS)


@pytest.mark.parametrize("problem", ["binary", "multiclass", "multilabel"])
def test_the_kept_rounds_validation_logits_are_those_of_the_kept_model(problem: str) -> None:
    train, val = _table(600, problem, 0), _table(200, problem, 1)
    eng = _engine(problem)
    stops = set()
    for params, hp, seed in CONFIGS:
        net = TreeEnsemble(5, eng.n_logits, **params)
        res = eng.fit(net, train, val, hp, seed=seed)
        assert res.val_logits is not None and res.val_logits.dtype == np.float32
        np.testing.assert_allclose(res.val_logits, eng.predict_logits(net, val), rtol=0, atol=1e-5)
        stops.add(res.stopped)
    assert "early_stopped" in stops  # the kept round is then before the last one


@pytest.mark.parametrize("problem", ["binary", "multiclass", "multilabel"])
def test_a_fit_keeps_its_training_booster_and_writes_the_model_lgb_trains_default_round_trip_gave(
    problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``keep_training_booster=True`` skips lgb.train's closing write-and-parse; the kept model (text,
    history, scores) is what the round trip gave, bit for bit."""
    import lightgbm as lgb

    train, val = _table(600, problem, 0), _table(200, problem, 1)
    kept = []
    for params, hp, seed in CONFIGS:
        net = TreeEnsemble(5, _engine(problem).n_logits, **params)
        kept.append((_engine(problem).fit(net, train, val, hp, seed=seed), bytes(net.booster.numpy())))
    real = lgb.train

    def round_trip(*a: object, **k: object) -> object:
        assert k.pop("keep_training_booster") is True  # the engine asks for the training booster
        return real(*a, **k)  # lgb.train's default: keep_training_booster=False

    monkeypatch.setattr(lgb, "train", round_trip)
    for (params, hp, seed), (res, text) in zip(CONFIGS, kept, strict=True):
        net = TreeEnsemble(5, _engine(problem).n_logits, **params)
        again = _engine(problem).fit(net, train, val, hp, seed=seed)
        assert bytes(net.booster.numpy()) == text
        assert again.history == res.history and again.best_epoch == res.best_epoch
        np.testing.assert_array_equal(again.val_logits, res.val_logits)


def _hold(path: str, held: multiprocessing.synchronize.Event, go: multiprocessing.synchronize.Event) -> None:
    lock = FlockLock(path)
    lock.acquire()
    held.set()
    go.wait(10)
    lock.release()


def test_the_journal_lock_excludes_other_processes_and_changes_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    journal = UnsyncedJournalFile(str(tmp_path / "study.journal"))
    ctx = multiprocessing.get_context("fork")
    held, go = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(str(tmp_path / "study.journal") + LOCK_SUFFIX, held, go))
    other.start()
    try:
        assert held.wait(10)
        probe = os.open(str(tmp_path / "study.journal") + LOCK_SUFFIX, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # held by the other process
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        go.set()
        other.join(10)
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the other process's release
    fcntl.flock(probe, fcntl.LOCK_UN)
    os.close(probe)

    def no_directory_change(*args: object, **kw: object) -> None:
        raise AssertionError("a lock file was made or removed")

    for name in ("symlink", "rename", "unlink", "remove"):
        monkeypatch.setattr(os, name, no_directory_change)
    for i in range(5):
        journal.append_logs([{"op_code": 0, "n": i}])
    monkeypatch.undo()
    assert len((tmp_path / "study.journal").read_text().splitlines()) == 5


def test_the_kept_booster_serves_until_the_buffer_changes_and_leaves_are_counted_in_the_text() -> None:
    train, val = _table(400, "multiclass", 0), _table(100, "multiclass", 1)
    eng = _engine("multiclass")
    net = TreeEnsemble(5, 3, num_leaves=8)
    eng.fit(net, train, val, HParams(epochs=2), seed=0)
    booster = net.lgb_booster()
    assert net.lgb_booster() is booster  # not read again from the buffer for each prediction
    assert net.n_leaves() == sum(t["num_leaves"] for t in booster.dump_model()["tree_info"]) > 3
    other = TreeEnsemble(5, 3, num_leaves=8)
    eng.fit(other, train, val, HParams(epochs=1), seed=1)
    before = other.lgb_booster()
    other.load_state_dict(net.state_dict())  # a load writes the buffer: the booster is read from it
    assert other.lgb_booster() is not before
    np.testing.assert_array_equal(eng.predict_logits(other, val), eng.predict_logits(net, val))
    assert other.n_leaves() == net.n_leaves()


@pytest.mark.parametrize(
    ("problem", "metric"),
    [
        ("binary", "auc"),
        ("binary", "loss"),
        ("multiclass", "auc"),
        ("multiclass", "accuracy"),
        ("multilabel", "auc"),
    ],
)
def test_permutation_importance_scores_every_resample_in_one_pass_as_one_by_one(
    problem: str, metric: str
) -> None:
    from closedloop.stages.train.engine import score
    from closedloop.stages.train.importance import _resampled_metric

    data = _table(300, problem, 2)
    eng = TreeEngine(
        problem,
        {"binary": 2, "multiclass": 3, "multilabel": 2}[problem],
        metric=metric,
        higher_is_better=True,
    )
    net = TreeEnsemble(5, eng.n_logits, num_leaves=4)
    eng.fit(net, _table(400, problem, 0), None, HParams(epochs=2, patience=None), seed=0, restore_best=False)
    logits = np.asarray(eng.predict_logits(net, data)).reshape(len(data), -1)
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(data), len(data)) for _ in range(40)]

    def one(lg: np.ndarray, idx: np.ndarray) -> float:
        return score(metric, data.y_np[idx], lg[idx], problem, eng.metric_convention)

    fast = _resampled_metric(eng, data.y_np, boots, one)(logits)
    np.testing.assert_allclose(fast, [one(logits, b) for b in boots], rtol=0, atol=1e-12)
