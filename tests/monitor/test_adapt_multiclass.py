"""``closedloop adapt`` on a multi-class model: the class mix of production differs from training's, a
few production labels refit the logits' class offsets (and temperature or scales), the evaluation part
judges it by accuracy, and the adapted model is written and served with the same probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.adapt.challengers import AdaptedChallenger, choose_class_challenger
from closedloop.cli import main
from closedloop.core.errors import DataError
from closedloop.stats.class_recalibration import CLASS_METHODS, fit_class_recalibration
from closedloop.stats.errors import StatsError
from common_data import run_split_table

CENTRES = np.array([[0.0, 0.0], [1.2, 0.0], [0.0, 1.2]])


def _rows(n: int, priors: list[float], seed: int) -> pd.DataFrame:
    """Three overlapping classes in two features (and a noise column), drawn at the class mix ``priors``."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=priors)
    X = CENTRES[y] + rng.normal(size=(n, 2))
    return pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "noise": rng.normal(size=n), "label": y})


def test_the_class_offsets_recover_a_label_shift() -> None:
    """Logits of a model that knew a uniform mix; production is 80/10/10: the fitted offsets move
    toward log(0.8/0.1), the decisions get better, and the methods refuse what they cannot fit."""
    rng = np.random.default_rng(0)
    y = rng.choice(3, 3000, p=[0.8, 0.1, 0.1])
    X = CENTRES[y] + rng.normal(size=(3000, 2))
    z = -0.5 * ((X[:, None, :] - CENTRES[None]) ** 2).sum(-1)  # the Bayes logits under a uniform mix
    r = fit_class_recalibration(y, z, "bias")
    assert r.bias[0] - r.bias[1] == pytest.approx(np.log(8), abs=0.35)
    assert np.allclose(r.scale, 1.0)
    assert np.mean(r.predict(z) == y) > np.mean(z.argmax(1) == y) + 0.05
    for method in CLASS_METHODS:
        p = fit_class_recalibration(y, z, method).apply(z)
        assert p.shape == (3000, 3) and np.allclose(p.sum(1), 1.0)
    with pytest.raises(StatsError, match=r"shape \(N, K >= 3\)"):
        fit_class_recalibration(y, z[:, 0], "bias")
    with pytest.raises(StatsError, match="unknown class recalibration"):
        fit_class_recalibration(y, z, "platt")  # type: ignore[arg-type]
    choice = choose_class_challenger(y[:300], z[:300])
    assert set(choice.cv_cost) == set(CLASS_METHODS) and choice.chosen.classes is not None
    assert len(choice.oof_costs) == 300 and choice.chosen.threshold is None


TRAIN_MLP = {
    "preset": "quick",
    "family": "mlp",
    "ladder_epochs": 3,
    "n_trials": 1,
    "max_epochs": 5,
    "n_bootstrap": 100,
}


def _champion(
    tmp: Path,
    task: dict,
    *,
    train: dict | None = None,
    after: tuple[dict, ...] = (),
    sizes: tuple[int, int, int] = (500, 200, 200),
) -> Path:
    """A quick tabular run trained on a uniform class mix (by default the MLP: its head takes the offsets);
    ``after``: stages after train; ``sizes``: its train, val and test rows."""
    table = _rows(sum(sizes), [1 / 3, 1 / 3, 1 / 3], 0)
    table["split"] = np.repeat(["train", "val", "test"], sizes)
    stages = [{"kind": "task", "params": task}, {"kind": "train", "params": train or TRAIN_MLP}, *after]
    return run_split_table(tmp, "adapt_multiclass", table, stages)[1]


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _champion(tmp_path_factory.mktemp("adapt_multiclass"), {})


def test_an_ordinal_model_is_adapted_like_a_multiclass_one(tmp_path: Path) -> None:
    """Ranked classes, the same softmax: the class offsets follow the new mix, and the servable is softmax."""
    from closedloop.adapt.run import run_adapt

    run = _champion(tmp_path, {"problem_type": "ordinal"})
    prod = _rows(400, [0.8, 0.1, 0.1], 5)
    prod.to_csv(tmp_path / "prod.csv", index=False)
    res = run_adapt(run, tmp_path / "prod.csv", seed=1, out=tmp_path / "adapted")
    assert res.choice.chosen.classes is not None and res.decision.metric == "acc"
    assert res.production["challenger"]["acc"] > res.production["champion"]["acc"]
    meta = json.loads((tmp_path / "adapted" / "predictor.json").read_text())
    assert meta["problem_type"] == "ordinal" and "softmax" in meta["output"]


def test_adapt_a_multiclass_model_to_a_new_class_mix(
    champion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from closedloop.models.trained import TrainedModel
    from closedloop.serving.predictor import Predictor

    prod = _rows(400, [0.8, 0.1, 0.1], 5)
    prod["selected_by"] = "random_control"
    labels = tmp_path / "prod.csv"
    prod.to_csv(labels, index=False)
    out = tmp_path / "adapt"
    rc = main(["adapt", str(champion), str(labels), "--out", str(out), "--seed", "1"])
    printed = capsys.readouterr()
    assert rc in (0, 1), printed.err
    res = json.loads((out / "adapt.json").read_text())
    assert res["decision"]["metric"] == "acc" and res["champion_threshold"] is None
    assert res["test_mix"]["mix"] == "production"
    assert set(res["choice"]["cv_cost"]) == set(CLASS_METHODS)
    assert any("['head', 'finetune'] were left out" in w for w in res["warnings"])
    champ, chall = res["production"]["champion"], res["production"]["challenger"]
    assert chall["acc"] > champ["acc"]  # the mix moved toward class 0; the offsets follow it
    assert "deciding the most probable class" in printed.out and "balanced accuracy" in printed.out
    md = (out / "adapt.md").read_text()
    assert "| deciding the most probable class" in md and "served decision: the most probable class" in md

    # the adapted model (the offsets written into the head) gives the challenger's probabilities, and the
    # servable folder answers with them
    chosen = AdaptedChallenger.model_validate_json((out / "challenger.json").read_text())
    assert chosen.classes is not None and chosen.method in CLASS_METHODS
    X = prod.drop(columns=["label", "selected_by"])
    model = TrainedModel.load(next((champion / "stages").glob("*_train/artifacts/model")))
    z = model.predict_logits(X) / model.temperature
    adapted = TrainedModel.load(out / "model")
    np.testing.assert_allclose(adapted.predict_proba(X), chosen.proba(z, None), atol=1e-5)
    served = Predictor(out)
    assert json.loads((out / "predictor.json").read_text())["output"].startswith("logits; proba = softmax")
    np.testing.assert_allclose(served.predict_proba(X), chosen.proba(z, None), atol=1e-4)


def test_non_inferiority_at_production_class_mix(champion: Path, tmp_path: Path) -> None:
    """At the old (uniform) mix the adapted model is worse by design, and the warning says why; at a
    multi-class model's default ``test_mix="production"`` the test split's rows weigh production's mix and
    the record says so."""
    from closedloop.adapt.run import run_adapt

    prod = _rows(400, [0.8, 0.1, 0.1], 5)
    labels = tmp_path / "prod.csv"
    prod.to_csv(labels, index=False)
    old = run_adapt(champion, labels, seed=1, out=tmp_path / "old", test_mix="original")
    new = run_adapt(champion, labels, seed=1, out=tmp_path / "new")  # a multi-class model's default
    assert old.test_mix == {"mix": "original"}
    ni_old, ni_new = old.decision.non_inferiority, new.decision.non_inferiority
    assert ni_old is not None and ni_new is not None
    assert "weighted to production's class mix" in ni_new.evaluated_on
    shares = new.test_mix["production_shares"]
    assert shares[0] > 0.7 and new.test_mix["test_shares"] == pytest.approx([0.335, 0.3, 0.365], abs=0.1)
    assert ni_new.delta > ni_old.delta  # the new mix is where the offsets help
    # better on production, worse at the old mix: blocked, with the reason; at production's mix, promoted
    assert old.decision.significant and not ni_old.ok and not old.decision.promote
    assert any("--test-mix production" in w for w in old.warnings)
    assert ni_new.ok and new.decision.promote
    assert "judged at production's class mix" in (tmp_path / "new" / "adapt.md").read_text()
    with pytest.raises(DataError, match="--test-mix 'today'"):
        run_adapt(champion, labels, out=tmp_path / "x", test_mix="today")


def test_adapt_refuses_what_a_multiclass_model_cannot_take(
    champion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prod = _rows(200, [0.8, 0.1, 0.1], 6)
    labels = tmp_path / "prod.csv"
    prod.to_csv(labels, index=False)
    assert (
        main(["adapt", str(champion), str(labels), "--metric", "expected_cost", "--out", str(tmp_path)]) == 2
    )
    assert "no pair of costs" in capsys.readouterr().err
    rc = main(["adapt", str(champion), str(labels), "--challengers", "retrain", "--out", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "recalibration only" in err and "closedloop retrain --add-labeled" in err


def test_a_rare_class_sets_how_many_labels_the_split_needs() -> None:
    """Nine labels of a 1.5% class cannot give each part five: the message says how many labels would."""
    from closedloop.adapt.split import split_production
    from closedloop.monitoring.production_labels import ProductionLabels

    y = np.array([0] * 9 + [1] * 200 + [2] * 391)
    labels = ProductionLabels(
        X=np.zeros((600, 1)), y=y, selected_by=None, model_version=None, proba=None, path="p.csv"
    )
    with pytest.raises(DataError, match=r"class 0 is 1.5% of these labels, so about 667 labels"):
        split_production(labels, eval_fraction=0.5, seed=0, needed=320)


@pytest.mark.slow
def test_the_adapted_multiclass_model_served_in_shadow_and_judged_live(
    champion: Path, tmp_path: Path
) -> None:
    """The adapted folder is served next to the champion (a real server, a real HTTP client, table rows
    as JSON); labels come back as feedback; compare-live judges the pair by accuracy on live traffic."""
    import sys

    from closedloop.adapt.run import run_adapt
    from closedloop.adapt.servable import write_servable
    from closedloop.models.trained import TrainedModel
    from closedloop.monitoring.compare import compare_live

    sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
    from serve_helpers import serve_labeled

    prod = _rows(400, [0.8, 0.1, 0.1], 5)
    labels = tmp_path / "prod.csv"
    prod.to_csv(labels, index=False)
    res = run_adapt(champion, labels, seed=1, out=tmp_path / "adapted")
    assert res.decision.promote, res.decision.reasons
    champ = TrainedModel.load(next((champion / "stages").glob("*_train/artifacts/model")))
    write_servable(champ, tmp_path / "champion")
    live_rows = _rows(150, [0.8, 0.1, 0.1], 9)
    names = champ.label_names
    batches = [
        (
            f"r{b}",
            live_rows.iloc[b : b + 25].drop(columns=["label"]).to_dict(orient="records"),
            [names[int(v)] for v in live_rows["label"].iloc[b : b + 25]],
        )
        for b in range(0, len(live_rows), 25)
    ]
    serve_labeled(tmp_path / "champion", tmp_path / "adapted", tmp_path / "log", batches)
    live = compare_live(tmp_path / "log", run_dir=champion, metric="acc")
    assert live.challenger_route == "shadow" and live.design == "paired" and live.n_pairs == 150
    assert live.performance is not None and live.performance.metric == "acc"
    assert live.performance.value_challenger > live.performance.value_champion, live.reasons
