"""Review-queue selection: every registered strategy passes one battery; near-duplicates do not eat
the queue; the strategy is reachable from YAML, the CLI and Python; unknown names get a hint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from closedloop.core.errors import ConfigError
from closedloop.core.stage import RunContext
from closedloop.monitoring import Monitor
from closedloop.monitoring.flywheel import uncertainty
from closedloop.monitoring.selection import (
    CONTROL,
    DEFAULT_STRATEGY,
    STRATEGIES,
    Candidates,
    QueueStrategy,
    ReviewConfig,
    select,
)
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_setup  # noqa: E402

from run_fixtures import save_artifact  # noqa: E402

FAST = {"calibration_windows": 20, "window_sizes": [50], "permutations": 30}
PROFILE_REVIEW = {"strategy": "kcenter", "control_fraction": 0.2}


def _proba(problem: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if problem == "multilabel":
        return rng.uniform(size=(n, 3))
    p = rng.dirichlet(np.ones(2 if problem == "binary" else 5), size=n)
    return p


def _candidates(problem: str, n: int = 120, seed: int = 0) -> Candidates:
    rng = np.random.default_rng(seed)
    ent, _ = uncertainty(_proba(problem, n, rng), problem)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    return Candidates(
        priority=pd.Series(ent).rank(pct=True).to_numpy(), embeddings=emb, reference=emb[:30] + 3
    )


# -- the battery every registered strategy passes ------------------------------------------------
@pytest.mark.parametrize("problem", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_battery(name: str, problem: str) -> None:
    cands = _candidates(problem)
    cfg = ReviewConfig(strategy=name)
    for k in (1, 7, 20):
        sel = select(cands, k, cfg, seed=3)
        idx = sel.indices
        assert len(idx) == k and len(np.unique(idx)) == k
        assert idx.min() >= 0 and idx.max() < len(cands)
        assert len(sel.selected_by) == k
        again = select(cands, k, cfg, seed=3)
        np.testing.assert_array_equal(again.indices, idx)  # deterministic given the seed
    assert sel.selected_by.count(CONTROL) == 2 and sel.selected_by.count(name) == 18  # 10% of 20
    # the control slice is a uniform draw, not the strategy's choice: it moves with the seed
    controls = {tuple(np.sort(select(cands, 20, cfg, seed=s).indices[-2:])) for s in range(6)}
    assert len(controls) > 1
    # a queue larger than the pool is the whole pool
    assert sorted(select(cands, 500, cfg).indices.tolist()) == list(range(len(cands)))
    # no control when asked for none
    assert CONTROL not in select(cands, 20, ReviewConfig(strategy=name, control_fraction=0)).selected_by


def test_every_strategy_is_in_the_battery() -> None:
    assert {"priority", "power", "kcenter", "typical", "diverse", "random"} <= set(STRATEGIES.names())
    assert DEFAULT_STRATEGY in STRATEGIES.names() and DEFAULT_STRATEGY != "priority"


def test_incomplete_strategy_fails_when_defined() -> None:
    with pytest.raises(TypeError, match="implement select"):

        class NoSelect(QueueStrategy):  # noqa: F841
            key = "broken_no_select"
            description = "x"


def test_strategy_params_are_validated() -> None:
    assert ReviewConfig(strategy="power", params={"beta": 2}).build().config.beta == 2
    with pytest.raises(ValidationError, match="beta"):
        ReviewConfig(strategy="power", params={"beta": -1})
    with pytest.raises(ValidationError, match="betta"):
        ReviewConfig(strategy="power", params={"betta": 1})


def test_unknown_strategy_says_did_you_mean() -> None:
    with pytest.raises(
        ValidationError, match=r"unknown review strategy 'kcentre'\. Did you mean 'kcenter'\?"
    ):
        ReviewConfig(strategy="kcentre")


def test_strategy_by_import_path_joins_the_registry() -> None:
    """A strategy in a user's module is named by its import path, as every other plug-in is."""
    cfg = ReviewConfig(strategy="closedloop.monitoring.selection:RandomStrategy")
    assert type(cfg.build()).__name__ == "RandomStrategy"
    with pytest.raises(ValidationError, match="not a QueueStrategy subclass"):
        ReviewConfig(strategy="closedloop.monitoring.selection:Candidates")
    with pytest.raises(ValidationError, match="cannot import module 'no_such_pkg'"):
        ReviewConfig(strategy="no_such_pkg:Mine")


# -- near-duplicates, through the monitor --------------------------------------------------------
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    bundle, model = digits_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    tmp = tmp_path_factory.mktemp("digits_sel")
    # the profile's review config is not the default, so the tests see it travel from config to queue
    stage = BuildMonitorProfile(**FAST, review=PROFILE_REVIEW)
    out = stage.execute({"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp, seed=0))
    assert stage.summarize(out)["reference"]["review_strategy"] == "kcenter"  # in summary.json
    run = tmp / "run"
    save_artifact(run, "05_train", "model", model)
    save_artifact(run, "07_monitor", "reference", out.reference)
    return bundle, run


def _pool_with_copies(mon: Monitor, bundle) -> tuple[np.ndarray, np.ndarray]:
    """500 production images: 470 training digits + 30 near-copies of the one the queue wants most."""
    base = np.asarray(bundle.train.X[:470])
    q = mon.review_queue(base, k=1, strategy="priority")
    src = base[int(q["id"][0])].astype(np.float32)
    rng = np.random.default_rng(0)
    copies = np.clip(src[None] + rng.normal(0, 2, size=(30, *src.shape)), 0, 255).astype(np.uint8)
    pool = np.concatenate([base, copies])
    is_copy = np.zeros(len(pool), dtype=bool)
    is_copy[470:] = True
    return pool, is_copy


def test_near_duplicates_do_not_eat_the_queue(digits) -> None:
    bundle, run = digits
    mon = Monitor.load(run)
    pool, is_copy = _pool_with_copies(mon, bundle)
    today = mon.review_queue(pool, k=20, strategy="priority")
    assert is_copy[today["id"]].sum() > 2  # ranking by priority alone spends the queue on copies
    default = mon.review_queue(pool, k=20, review=ReviewConfig())
    assert set(default["selected_by"]) == {DEFAULT_STRATEGY, CONTROL}
    assert is_copy[default["id"]].sum() <= 2
    assert (default["selected_by"] == CONTROL).sum() == 2


# -- reachable from YAML and the CLI -------------------------------------------------------------
def test_yaml_config_reaches_the_profile_and_the_queue(tmp_path) -> None:
    from closedloop.core.pipeline import Pipeline

    def pipeline(review: dict) -> Pipeline:
        return Pipeline.from_dict(
            {
                "name": "x",
                "data": {"source": "sklearn", "name": "digits"},
                "stages": [
                    {"kind": "task"},
                    {"kind": "train"},
                    {"kind": "monitor", "params": {"review": review}},
                ],
            },
            where="pipeline.yaml",
        )

    monitor_stage = pipeline({"strategy": "kcenter", "control_fraction": 0.2}).stages[-1]
    assert monitor_stage.config.review == ReviewConfig(strategy="kcenter", control_fraction=0.2)
    with pytest.raises(ConfigError, match=r"pipeline.yaml: .*review.strategy.*Did you mean 'typical'"):
        pipeline({"strategy": "typcal"})
    with pytest.raises(ConfigError, match="review.*beta"):
        pipeline({"strategy": "power", "params": {"beta": -1}})


def test_profile_review_config_reaches_the_queue(digits) -> None:
    bundle, run = digits
    mon = Monitor.load(run)
    assert mon.profile.info.review == ReviewConfig(**PROFILE_REVIEW)  # saved with the profile
    q = mon.review_queue(bundle.val.X[:100], k=10)
    assert set(q["selected_by"]) == {"kcenter", CONTROL} and (q["selected_by"] == CONTROL).sum() == 2
    assert q["priority"].is_monotonic_decreasing  # shown best first, control slice blended in


def test_cli_strategy_flag(digits, tmp_path, capsys) -> None:
    from closedloop.cli import main

    bundle, run = digits
    np.savez(tmp_path / "prod.npz", images=bundle.val.X[:120, ..., 0])
    out = tmp_path / "res.json"
    rc = main([
        "monitor", str(run), str(tmp_path / "prod.npz"), "--review", "10", "--strategy", "typical",
        "--review-dir", str(tmp_path / "queue"), "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    q = pd.read_csv(tmp_path / "queue" / "queue.csv")
    assert set(q["selected_by"]) == {"typical", CONTROL} and len(q) == 10
    assert {"id", "priority", "reason", "file", "selected_by"} <= set(q.columns)
    # --strategy replaces the profile's strategy and keeps its control fraction (0.2)
    assert json.loads(out.read_text())["review_queue"]["selected_by"] == {"typical": 8, CONTROL: 2}

    capsys.readouterr()
    rc = main(["monitor", str(run), str(tmp_path / "prod.npz"), "--review", "10", "--strategy", "diversse"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown review strategy 'diversse'. Did you mean 'diverse'?" in err and "Known:" in err


def test_python_strategy_argument_errors(digits) -> None:
    _, run = digits
    with pytest.raises(ConfigError, match="Did you mean 'random'"):
        Monitor.load(run).review_queue(np.zeros((20, 8, 8), np.uint8), k=5, strategy="randon")
