"""``closedloop adapt``: a recalibration challenger fitted on a random part of the production labels,
judged on the other part and, for non-inferiority, on the original test split (through the ledger).

The champion is a tiny CNN on synthetic MedMNIST-format images whose shipped threshold flags nearly
every image (as PneumoniaMNIST's does on its test distribution): it ranks well, decides badly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from closedloop.cli import main
from closedloop.core.registry import SOURCES
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
from closedloop.stages.task import DefineTaskConfig, build_task_spec
from common_data import write_medmnist

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import TinyCNN, _fit  # noqa: E402

from run_fixtures import save_artifact  # noqa: E402


def _images(rng: np.random.Generator, n: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 is brighter on average; a per-image brightness offset makes the classes overlap."""
    y = rng.integers(0, 2, n)
    offset = 20 * y + rng.normal(0, 12, n) + 40 + shift
    X = rng.integers(0, 100, (n, 28, 28)) + offset[:, None, None]
    return np.clip(X, 0, 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> tuple[Path, np.random.Generator]:
    tmp = tmp_path_factory.mktemp("adapt")
    rng = np.random.default_rng(0)
    write_medmnist(tmp / "data", _images, (300, 100, 120), rng)
    data = {"source": "medmnist", "flag": "pneumoniamnist", "size": 28, "root": str(tmp / "data")}
    bundle = SOURCES.resolve("medmnist")({k: v for k, v in data.items() if k != "source"}).load(0)
    run = tmp / "runs" / "shift" / "20260101-000000-champion"
    cfg = {
        "name": "shift",
        "seed": 0,
        "runs_dir": str(tmp / "runs"),
        "data": data,
        "stages": [{"kind": "task"}],
    }
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    task = build_task_spec(
        DefineTaskConfig(business={"cost_false_positive": 1, "cost_false_negative": 1}), bundle
    )
    save_artifact(run, "02_task", "task", task)
    model = TrainedModel(
        spec=ModelSpec(family="monitor_test_cnn"),
        network=TinyCNN([28, 28, 1], 1),
        preprocessing=Preprocessing(input_kind="images", input_shape=[28, 28, 1], mean=[0.3], std=[0.2]),
        problem_type="binary",
        n_outputs=2,
        label_names=list(bundle.meta.label_names),
    )
    _fit(model, bundle.train.X, np.asarray(bundle.train.y), 15, binary=True)  # not saturated
    # an operating point that does not survive (as PneumoniaMNIST's on its test distribution): it
    # flags 95% of the negatives
    p_neg = model.predict_proba(bundle.val.X)[np.asarray(bundle.val.y) == 0, 1]
    model.threshold = float(np.quantile(p_neg, 0.05))
    save_artifact(run, "03_train", "model", model)
    return run, rng


def _labels(path: Path, run: Path, n: int, seed: int, *, shift: int = 0, **extra) -> Path:
    X, y = _images(np.random.default_rng(seed), n, shift)
    np.savez(path, images=X, labels=y, model_version=run.name, **extra)
    return path


def test_adapt_recalibrates_judges_on_production_and_records_everything(champion, tmp_path, capsys):
    run, _ = champion
    n = 200
    sel = np.where(np.arange(n) % 4 == 0, "priority", "random_control")
    labels = _labels(tmp_path / "prod.npz", run, n, 1, selected_by=sel)
    out = tmp_path / "adapt_out"
    assert main(["adapt", str(run), str(labels), "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "adapt.json").read_text())
    d = res["decision"]
    # the champion flags almost every image; the recalibrated challenger does not
    champ, chall = res["production"]["champion"], res["production"]["challenger"]
    assert champ["specificity"] < 0.3 and chall["specificity"] > champ["specificity"] + 0.3
    assert d["promote"] and d["metric"] == "expected_cost" and d["p_value"] < 0.05, d["reasons"]
    assert d["non_inferiority"]["ok"] and d["non_inferiority"]["evaluated_on"] == "test"
    assert d["champion_threshold"] < 0.5 and d["threshold"] == res["choice"]["chosen"]["threshold"]
    # the split: recorded, stratified, seeded, and never judged on uncertainty-selected samples
    split = res["split"]
    assert sorted(split["adaptation"] + split["evaluation"]) == list(range(n))
    assert all(sel[i] == "random_control" for i in split["evaluation"])
    assert split["seed"] == 3 and res["declared"]["costs"] == [1.0, 1.0]
    cv = res["choice"]["cv_cost"]
    assert {"threshold", "platt", "temperature"} < set(cv) and any(k.startswith("head(") for k in cv)
    assert any(k.startswith("finetune(") for k in cv)  # every family by default, the fine-tune included
    assert res["choice"]["candidates"] == len(cv) and "adaptation labels only" in res["choice"]["selection"]
    assert (out / "challenger.json").is_file() and "PROMOTE" in (out / "adapt.md").read_text()
    assert "PROMOTE" in printed and "specificity" in printed and f"--shadow {out}" in printed
    # the original test split was opened through the ledger, once per challenger
    ledger = (run.parent / "test_ledger.jsonl").read_text().splitlines()
    assert any("closedloop adapt" in line for line in ledger)


def test_adapt_bad_input(champion, tmp_path, capsys):
    run, _ = champion
    few = _labels(tmp_path / "few.npz", run, 12, 2)
    assert main(["adapt", str(run), str(few), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "too few production labels" in err and "evaluation labels" in err

    good = _labels(tmp_path / "good.npz", run, 60, 3)
    biased = _labels(tmp_path / "biased.npz", run, 40, 4, selected_by=np.array(["priority"] * 40))
    rc = main(["adapt", str(run), str(good), "--eval-labels", str(biased), "--out", str(tmp_path / "o2")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "['priority']" in err and "randomly selected" in err

    X, _ = _images(np.random.default_rng(5), 30)
    np.savez(tmp_path / "classes.npz", images=X, labels=np.arange(30) % 3)
    assert main(["adapt", str(run), str(tmp_path / "classes.npz")]) == 2
    assert "label value(s) [2] are not classes" in capsys.readouterr().err

    other = tmp_path / "other.npz"
    np.savez(other, images=X, labels=np.arange(30) % 2, model_version="20250101-000000-older")
    assert main(["adapt", str(run), str(other)]) == 2
    assert "served by model version(s) ['20250101-000000-older']" in capsys.readouterr().err


def test_adapt_is_not_promoted_when_it_is_worse_on_the_original_test(champion, tmp_path):
    """Production from a brighter scanner: a threshold refitted there is better there, but much worse
    on the original test split, and the rule's second part blocks it."""
    from closedloop.adapt.run import run_adapt

    run, _ = champion
    labels = _labels(tmp_path / "bright.npz", run, 200, 6, shift=25)
    # a re-mapping of the champion's scores (a fine-tune that replays the training data can be good on
    # both distributions, which is what the replay is for)
    res = run_adapt(run, labels, out=tmp_path / "o", challengers=("recalibration", "head"))
    ni = res.decision.non_inferiority
    assert ni is not None and not ni.ok and not res.decision.promote
    assert any("NOT non-inferior" in r for r in res.decision.reasons)


def test_adapt_writes_the_adapted_model_and_refuses_unknown_challengers(champion, tmp_path, capsys):
    """The chosen challenger written into the champion's head is a model whose probabilities and
    decision are the challenger's (what serving and the monitor read), with its own threshold."""
    from closedloop.adapt.challengers import AdaptedChallenger
    from closedloop.adapt.run import run_adapt

    run, _ = champion
    labels = _labels(tmp_path / "prod.npz", run, 160, 8)
    import onnxruntime as ort

    for families in (("head",), ("recalibration",), ("finetune",)):
        out = tmp_path / "-".join(families)
        res = run_adapt(run, labels, out=out, challengers=families)
        chosen = AdaptedChallenger.model_validate_json((out / "challenger.json").read_text())
        assert chosen.method == res.choice.chosen.method
        assert (chosen.method == "head") == (families == ("head",))
        assert (chosen.method == "finetune") == (families == ("finetune",))
        adapted = TrainedModel.load(out / "model")
        assert adapted.threshold == pytest.approx(chosen.threshold) and adapted.temperature == 1.0
        X = np.load(labels)["images"][..., None]
        champ = TrainedModel.load(run / "stages/03_train/artifacts/model")
        z = champ.predict_logits(X).reshape(-1) / champ.temperature
        phi = champ.embed(X) if chosen.head is not None else None
        # the JSON record keeps what was done; a fine-tuned challenger's network is the saved model
        live = res.choice.chosen if chosen.finetune is not None else chosen
        np.testing.assert_allclose(adapted.predict_proba(X)[:, 1], live.proba(z, phi, X), atol=1e-4)
        assert f"P(pos) >= {chosen.threshold:.4f}" in (out / "adapt.md").read_text()
        # the servable folder computes the same logits (what the server answers with)
        onnx = ort.InferenceSession(str(out / "model_fp32.onnx")).run(None, {"x": X.astype(np.float32)})[0]
        np.testing.assert_allclose(onnx.reshape(-1), adapted.predict_logits(X).reshape(-1), atol=1e-3)
    assert chosen.finetune is not None and chosen.finetune.spec.replay_weight > 0
    assert chosen.finetune.n_replay_per_epoch > 0  # the champion's training data was replayed
    assert "fine-tuned from the champion's weights" in (tmp_path / "finetune" / "adapt.md").read_text()

    assert (
        main(["adapt", str(run), str(labels), "--challengers", "distill", "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err
    assert "--challengers 'distill'" in err and "retrain" in err  # names what is known


@pytest.mark.slow
def test_live_loop_adapted_model_served_in_shadow_and_judged_by_compare_live(champion, tmp_path, capsys):
    """The adapted folder is served next to the champion (real server, real HTTP client); feedback
    labels come back; compare-live pairs the two on the same requests with the same rule."""

    from closedloop.adapt.run import run_adapt
    from closedloop.adapt.servable import write_servable
    from closedloop.monitoring.compare import compare_live

    sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
    from serve_helpers import serve_labeled

    run, _ = champion
    res = run_adapt(
        run,
        _labels(tmp_path / "prod.npz", run, 160, 11),
        out=tmp_path / "adapted",
        challengers=("recalibration", "head"),
    )
    assert res.decision.promote, res.decision.reasons
    champ = TrainedModel.load(run / "stages/03_train/artifacts/model")
    write_servable(champ, tmp_path / "champion")
    X, y = _images(np.random.default_rng(12), 200)
    names = champ.label_names

    def answered_by_the_champion(answer: dict) -> None:
        assert answer["predictions"][0]["decision"]["threshold"] == pytest.approx(champ.threshold)

    batches = [
        (f"r{b}", X[b : b + 25, ..., None].tolist(), [names[int(v)] for v in y[b : b + 25]])
        for b in range(0, len(y), 25)
    ]
    serve_labeled(
        tmp_path / "champion", tmp_path / "adapted", tmp_path / "log", batches, answered_by_the_champion
    )
    # the rule adapt declared (expected cost, each model at its own served threshold), now on live traffic
    live = compare_live(tmp_path / "log", run_dir=run, metric="expected_cost")
    assert live.challenger_route == "shadow" and live.design == "paired"
    assert live.challenger_versions == ["adapted"] and live.n_pairs == 200 and live.n_labeled == 200
    assert live.promote and live.performance is not None and live.performance.metric == "expected_cost"
    assert live.performance.value_challenger < live.performance.value_champion, live.reasons
    # an unknown metric is refused with its name
    assert main(["compare-live", str(tmp_path / "log"), "--run-dir", str(run), "--metric", "nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err


def _champion_with_reference(champion, tmp_path: Path) -> tuple[Path, Any, Any, Any]:
    """A copy of the champion run with its data saved and a monitor reference built (a real run's
    layout), and (run, bundle, task, model)."""
    import shutil

    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig, build_profile
    from closedloop.stages.task import TaskSpec

    src, _ = champion
    run = tmp_path / "runs" / "shift" / src.name
    shutil.copytree(src.parent.parent, tmp_path / "runs")
    data = dict(yaml.safe_load((run / "config.yaml").read_text())["data"])
    bundle = SOURCES.resolve(data.pop("source"))(data).load(0)
    save_artifact(run, "01_data", "data", bundle)
    model = TrainedModel.load(run / "stages/03_train/artifacts/model")
    task = TaskSpec.load(run / "stages/02_task/artifacts/task")
    cfg = BuildMonitorProfileConfig(calibration_windows=20, permutations=30, window_sizes=[50])
    save_artifact(
        run, "04_monitor", "reference", build_profile(cfg, bundle, task, model, np.random.default_rng(0))
    )
    return run, bundle, task, model


def test_adapt_builds_the_adapted_models_own_monitor_reference(champion, tmp_path):
    """With a champion that has a monitor reference, the adapted folder gets its own, built the same
    way on the same held-out rows but with the adapted model's outputs; the monitor loads it."""
    from closedloop.adapt.run import run_adapt
    from closedloop.monitoring.monitor import Monitor

    run, *_ = _champion_with_reference(champion, tmp_path)
    labels = _labels(tmp_path / "prod.npz", run, 160, 13)
    res = run_adapt(run, labels, out=tmp_path / "adapted", challengers=("head",))
    ref = res.monitor_reference["path"]
    assert ref is not None and Path(ref).parent == tmp_path / "adapted" / "references"
    new = Monitor.load(tmp_path / "adapted", model_dir=tmp_path / "adapted" / "model")
    old = Monitor.load(run)
    assert new.profile.info.thresholds.keys() == old.profile.info.thresholds.keys()
    assert new.profile.info.source["adapted_from"] == str(run)
    # same held-out rows, the adapted model's own probabilities
    assert len(new.profile.reference.proba) == len(old.profile.reference.proba)
    assert not np.allclose(new.profile.reference.proba, old.profile.reference.proba)
    assert not [w for w in res.warnings if "not written" in w]


def test_finetune_trains_its_scope_is_pulled_toward_the_champion_and_is_seeded(champion):
    import torch

    from closedloop.adapt.finetune import FinetuneSpec, fine_tune

    run, _ = champion
    champ = TrainedModel.load(run / "stages/03_train/artifacts/model")
    X, y = _images(np.random.default_rng(21), 60, shift=15)
    Xr, yr = _images(np.random.default_rng(22), 80)
    X, Xr = X[..., None], Xr[..., None]

    def tune(**kw):
        return fine_tune(champ, X, y, FinetuneSpec(epochs=3, **kw), costs=(1.0, 5.0), replay=(Xr, yr), seed=0)

    a, fa = tune(scope="last_block", pull=0.0)
    b, _ = tune(scope="last_block", pull=0.0)
    np.testing.assert_array_equal(a.predict_logits(X), b.predict_logits(X))  # seeded
    before, after = champ.network.state_dict(), a.network.state_dict()
    assert torch.equal(before["body.0.weight"], after["body.0.weight"])  # outside the last block
    assert not torch.equal(before["body.3.weight"], after["body.3.weight"])  # the body's last layer
    full, ff = tune(scope="all", pull=0.0)
    assert not torch.equal(before["body.0.weight"], full.network.state_dict()["body.0.weight"])
    _, pulled = tune(scope="all", pull=10.0)
    assert pulled.weight_change < 0.5 * ff.weight_change  # L2-SP keeps it near the champion
    assert fa.n_replay_per_epoch == len(y) and tune(scope="all", replay_weight=0.0)[1].n_replay_per_epoch == 0
    assert fa.threshold == pytest.approx(1 / 6)  # the Bayes threshold at costs 1 / 5
    assert torch.equal(
        before["body.0.weight"], champ.network.state_dict()["body.0.weight"]
    )  # champion intact


@pytest.mark.slow
def test_admin_promote_switches_the_live_monitor_to_the_adapted_models_reference(champion, tmp_path):
    """Served with its adapted challenger in shadow, the champion is monitored against its own
    reference; after POST /admin/promote the monitor compares with the adapted model's own reference
    and only the rows the adapted model served (real server, real HTTP client)."""
    import shutil

    import httpx

    from closedloop.adapt.run import run_adapt
    from closedloop.adapt.servable import write_servable

    sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
    from serve_helpers import ServerProcess

    run, _, _, model = _champion_with_reference(champion, tmp_path)
    res = run_adapt(
        run, _labels(tmp_path / "prod.npz", run, 160, 14), out=tmp_path / "adapted", challengers=("head",)
    )
    adapted_ref = res.monitor_reference["path"]
    assert adapted_ref is not None
    served = tmp_path / "champion"
    write_servable(model, served)
    # the champion's own reference, served with it
    shutil.copytree(run / "stages/04_monitor/artifacts/reference", served / "references" / "20260101-000000")
    X, _ = _images(np.random.default_rng(15), 120)
    server = ServerProcess(
        [str(served), "--shadow", str(tmp_path / "adapted"), "--log-dir", str(tmp_path / "log")], tmp_path
    )

    def send(first: int) -> None:
        for b in range(first, first + 60, 20):
            r = httpx.post(
                f"{server.url}/predict",
                json=X[b : b + 20, ..., None].tolist(),
                headers={"X-Request-Id": f"r{b}"},
                timeout=60,
            )
            assert r.status_code == 200, r.text

    try:
        server.wait_ready()
        send(0)
        before = httpx.get(f"{server.url}/monitor", timeout=120).json()
        assert before["reference"] == str(served / "references" / "20260101-000000")
        assert before["model_version"] == "champion"
        r = httpx.post(f"{server.url}/admin/promote", timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["champion"]["version"] == "adapted" and r.json()["monitor_reference"] == adapted_ref
        send(60)
        after = httpx.get(f"{server.url}/monitor", timeout=120).json()
        assert after["reference"] == adapted_ref and after["model_version"] == "adapted"
        assert after["n_records"] == 3  # the three batches the adapted model answered, not the champion's
        back = httpx.post(f"{server.url}/admin/rollback", timeout=60).json()
        assert back["monitor_reference"] == before["reference"]
    finally:
        server.stop()


def test_compare_live_judges_a_canary_adapted_model_at_its_own_threshold(champion, tmp_path):
    """A canary answers other requests: each arm is scored at the threshold of the folder its
    records name (the adapted folder's own), on the declared metric, from random labels only."""
    from closedloop.adapt.run import operating_point, run_adapt
    from closedloop.adapt.servable import write_servable
    from closedloop.monitoring.compare import compare_live

    sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
    from livelog_fixtures import feedback, request, write

    run, _ = champion
    adapted_dir = tmp_path / "adapted"
    run_adapt(
        run, _labels(tmp_path / "prod.npz", run, 160, 16), out=adapted_dir, challengers=("recalibration",)
    )
    champ = TrainedModel.load(run / "stages/03_train/artifacts/model")
    adapted = TrainedModel.load(adapted_dir / "model")
    served = tmp_path / "champion"
    write_servable(champ, served)  # its predictor.json carries the champion's threshold
    X, y = _images(np.random.default_rng(17), 240)
    names, recs, fb = champ.label_names, [], []
    arms: dict[str, tuple[list[int], np.ndarray]] = {}
    for name, model, folder in (("canary", adapted, adapted_dir), ("champion", champ, served)):
        rows = [i for i in range(len(y)) if (i % 2 == 0) == (name == "canary")]
        P = model.predict_proba(X[rows][..., None])
        arms[name] = (rows, P[:, 1] >= model.threshold)
        for k, i in enumerate(rows):
            kw = {"route": name, "request_id": f"c{i}", "run_dir": str(folder), "version": folder.name}
            recs.append(request(X[i : i + 1], P[k : k + 1], t=i, names=names, **kw))
            fb.append(feedback(f"c{i}", names[int(y[i])], t=1000 + i, random=True))
    write(tmp_path / "log", "requests-a-000000.jsonl", sorted(recs, key=lambda r: r["time"]))
    write(tmp_path / "log", "feedback-a-000000.jsonl", fb)
    costs = (1.0, 1.0)  # the fixture task's
    want = {k: operating_point(y[rows], d, costs) for k, (rows, d) in arms.items()}
    c = compare_live(tmp_path / "log", run_dir=run, metric="expected_cost", n_resamples=300)
    assert c.challenger_route == "canary" and c.design == "independent" and c.n_labeled == len(y)
    assert c.performance.value_challenger == pytest.approx(want["canary"]["expected_cost"])
    assert c.performance.value_champion == pytest.approx(want["champion"]["expected_cost"])
    assert "own threshold" in c.performance.method
    acc = compare_live(tmp_path / "log", run_dir=run, metric="acc", n_resamples=300).performance
    assert acc.value_challenger == pytest.approx(want["canary"]["acc"])
    assert acc.value_champion == pytest.approx(want["champion"]["acc"])


def test_evaluation_samples_a_model_trained_or_adapted_on_do_not_judge(champion, tmp_path, capsys):
    """The issue's leak, in adapt: an evaluation file that repeats adaptation labels or the champion's
    own training images has those samples left out (content hash), recorded and printed; when
    nothing unseen is left, a clear error."""
    from closedloop.core.registry import SOURCES

    run, _ = champion
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data = {k: v for k, v in cfg["data"].items() if k != "source"}
    train = SOURCES.resolve("medmnist")(data).load(0).train
    labels = _labels(tmp_path / "prod.npz", run, 120, 11)
    with np.load(labels) as z:
        Xa, ya = z["images"], z["labels"]
    Xe, ye = _images(np.random.default_rng(12), 60)
    ev = tmp_path / "eval.npz"
    np.savez(
        ev,
        images=np.concatenate([Xe, Xa[:7], train.X[:5, ..., 0]]),
        labels=np.concatenate([ye, ya[:7], np.asarray(train.y).reshape(-1)[:5]]),
        model_version=run.name,
    )
    out = tmp_path / "o"
    assert main(["adapt", str(run), str(labels), "--eval-labels", str(ev), "--challengers", "recalibration",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "left out of the evaluation part: 12 sample(s)" in capsys.readouterr().out
    res = json.loads((out / "adapt.json").read_text())
    assert res["excluded_from_production"]["by"] == {
        "adaptation labels (every challenger)": 7,
        "champion's training data": 5,
    }
    assert (
        res["decision"]["n"] == 60
        and "left out of the production evaluation: 12" in (out / "adapt.md").read_text()
    )

    only_seen = tmp_path / "seen.npz"
    np.savez(only_seen, images=Xa[:20], labels=ya[:20], model_version=run.name)
    rc = main(
        ["adapt", str(run), str(labels), "--eval-labels", str(only_seen), "--challengers", "recalibration"]
    )
    assert rc == 2
    assert "judge on samples neither model saw" in capsys.readouterr().err


def test_retrained_challengers_split_needs_both_classes_in_each_part():
    from closedloop.adapt.retrain import split_for_retrain
    from closedloop.core.errors import DataError

    fit, cal = split_for_retrain(np.array([0, 1] * 10), 0.5, seed=0)
    assert len(fit) == len(cal) == 10 and not set(fit) & set(cal)
    with pytest.raises(DataError, match="each needs at least 2 of every class"):
        split_for_retrain(np.array([0] * 10 + [1, 1, 1]), 0.5, seed=0)


def test_platt_smoothed_threshold_is_where_the_fitted_map_reaches_the_cost_ratio():
    """``cost_threshold(..., smoothed=True)``: the score where the Platt map fitted on the labels reaches
    ``cost_fp / (cost_fp + cost_fn)`` (checked through the map itself), unlike the cost minimum, which
    sits at a label's own score; a map that would reverse the ranking falls back to the cost minimum."""
    from scipy.special import expit, logit

    from closedloop.adapt.retrain import cost_threshold, cross_fitted_cost
    from closedloop.stats.recalibration import fit_recalibration

    rng = np.random.default_rng(5)
    y = (rng.random(60) < 0.6).astype(int)
    p = expit(rng.normal(2.0 * y - 0.5, 1.3))  # overconfident on the negatives: the map moves the cut
    costs = (1.0, 5.0)
    raw, none = cost_threshold(y, p, costs)
    assert none is None and raw == fit_recalibration(y, p, "threshold", costs=costs).threshold
    t, (a, b) = cost_threshold(y, p, costs, smoothed=True)
    assert a > 0 and expit(a * logit(t) + b) == pytest.approx(1 / 6)
    assert t not in set(p) and abs(t - raw) > 1e-3  # not read off one label's score
    # the same map decides each fold in the cross-fitted cost (a different number from the raw rule's)
    assert cross_fitted_cost(y, p, costs, 0, smoothed=True) != cross_fitted_cost(y, p, costs, 0)
    # a reversed ranking: no positive slope, so the cost minimum is used and no map is recorded
    assert cost_threshold(y, 1 - p, costs, smoothed=True) == cost_threshold(y, 1 - p, costs)


def test_an_augmented_source_refilled_at_the_same_path_is_new_data_for_the_cache(champion, tmp_path):
    """Each retrain writes its labeled samples to a folder; refilled at the same path with other
    samples, the data stage must not be served from the cache of the previous run."""
    from PIL import Image

    from closedloop.core.registry import SOURCES
    from closedloop.stages.monitor.retrain import AugmentedSource  # registers "augmented"

    run, _ = champion
    assert SOURCES.resolve("augmented") is AugmentedSource
    base = yaml.safe_load((run / "config.yaml").read_text())["data"]
    folder = tmp_path / "labeled"
    (folder / "normal").mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "normal" / "a.png")
    src = SOURCES.resolve("augmented")({"base": base, "labeled": str(folder)})
    first = src.content_key()
    assert src.content_key() == first  # stable while nothing changes
    Image.fromarray(np.full((28, 28), 9, np.uint8)).save(folder / "normal" / "a.png")  # same name, new bytes
    assert src.content_key() != first


def test_adapt_bad_input_named_classes_uncertainty_only_and_mixed_versions(champion, tmp_path, capsys):
    """The issue's bad-input items in the forms a labeling tool writes: class names rather than
    indices, a file in which every sample was uncertainty-selected (nothing may judge), and one file
    mixing rows served by this model with rows served by another."""
    run, _ = champion
    X, y = _images(np.random.default_rng(6), 80)
    names = np.array(["normal", "pneumonia"])[y]
    # a class the task does not have, by name
    odd = names.copy()
    odd[:3] = "covid"
    np.savez(tmp_path / "named.npz", images=X, labels=odd, model_version=run.name)
    assert main(["adapt", str(run), str(tmp_path / "named.npz"), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "['covid'] are not classes of this task" in err and "pneumonia" in err
    # every sample chosen for being uncertain: the split refuses and says why
    sel = np.array(["priority"] * 80)
    np.savez(tmp_path / "biased.npz", images=X, labels=names, model_version=run.name, selected_by=sel)
    assert main(["adapt", str(run), str(tmp_path / "biased.npz"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "0 randomly selected" in err and "['priority']" in err and "may adapt but never judge" in err
    # one file, two model versions: the rows from the other version are counted and named
    mv = np.array([run.name] * 70 + ["20250101-000000-older"] * 10)
    np.savez(tmp_path / "mixed.npz", images=X, labels=names, model_version=mv)
    assert main(["adapt", str(run), str(tmp_path / "mixed.npz"), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "served by model version(s) ['20250101-000000-older']" in err and "10 of 80" in err
    assert (
        not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    )


def test_warm_start_retrain_continues_from_the_champion_with_the_labels_added_and_sets_its_threshold_apart(
    champion, tmp_path, capsys
):
    """``--retrain-mode warm_start``: no pipeline run; the champion's network trained further on its
    training split with the fit part added ``weight`` times (seeded, the champion left intact), its
    threshold at the task's costs on the calibration part it never trained on."""
    import torch

    from closedloop.adapt.warm_retrain import warm_retrain
    from closedloop.core.registry import SOURCES
    from closedloop.stats.recalibration import fit_recalibration

    run, _ = champion
    champ = TrainedModel.load(run / "stages/03_train/artifacts/model")
    before = {k: v.clone() for k, v in champ.network.state_dict().items()}
    labels = _labels(tmp_path / "prod.npz", run, 100, 31, shift=40)  # a brighter scanner
    out = tmp_path / "warm"
    rc = main([
        "adapt", str(run), str(labels), "--challengers", "retrain", "--retrain-mode", "warm_start",
        "--retrain-weight", "5", "--retrain-epochs", "1", "--retrain-lr", "0.001", "--retrain-threshold",
        "held_out", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "trained further from the champion's weights" in capsys.readouterr().out
    res = json.loads((out / "adapt.json").read_text())
    fit = res["choice"]["chosen"]["retrain"]
    assert fit["run_dir"] is None and fit["device"] in ("cpu", "cuda")
    assert fit["spec"]["mode"] == "warm_start" and fit["n_added"] == 5 * len(fit["fit_rows"])
    assert not (run.parent / "dataset_versions.jsonl").exists()  # no new run next to the champion
    # the threshold: the task's costs on the calibration rows, scored by the retrained network
    adapted = TrainedModel.load(out / "model")
    with np.load(labels) as z:
        X, y = z["images"][..., None], z["labels"]
    ia = np.asarray(res["split"]["adaptation"])
    cal = ia[fit["calibration_rows"]]
    expect = fit_recalibration(y[cal], adapted.predict_proba(X[cal])[:, 1], "threshold", costs=(1.0, 1.0))
    assert adapted.threshold == pytest.approx(expect.threshold)
    assert all(torch.equal(before[k], v) for k, v in champ.network.state_dict().items())  # intact

    # seeded; and the added samples pull it toward production (their loss falls below the champion's)
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    train = SOURCES.resolve("medmnist")({k: v for k, v in data.items() if k != "source"}).load(0).train
    fit_x, fit_y = X[ia[fit["fit_rows"]]], y[ia[fit["fit_rows"]]]

    def warm(seed: int) -> TrainedModel:
        return warm_retrain(
            champ, (train.X, np.asarray(train.y)), (fit_x, fit_y), weight=5, epochs=1, lr=1e-3,
            batch_size=64, seed=seed,
        )[0]  # fmt: skip

    a, b = warm(0), warm(0)
    np.testing.assert_array_equal(a.predict_logits(fit_x), b.predict_logits(fit_x))

    def loss(m: TrainedModel) -> float:
        p = np.clip(m.predict_proba(fit_x)[:, 1], 1e-7, 1 - 1e-7)
        return float(-np.mean(fit_y * np.log(p) + (1 - fit_y) * np.log(1 - p)))

    assert loss(a) < loss(champ)


def test_warm_start_retrain_bad_input(champion, tmp_path, capsys):
    run, _ = champion
    labels = _labels(tmp_path / "p.npz", run, 60, 32, shift=40)
    base = ["adapt", str(run), str(labels), "--challengers", "retrain", "--out", str(tmp_path / "o")]
    assert main([*base, "--retrain-mode", "warm_start", "--retrain-epochs", "0"]) == 2
    assert "--retrain-epochs 0" in capsys.readouterr().err
    assert main([*base, "--retrain-mode", "warm_start", "--retrain-lr", "-1"]) == 2
    assert "--retrain-lr -1" in capsys.readouterr().err
    assert main([*base, "--retrain-mode", "warm_start", "--retrain-set", "train.max_epochs=2"]) == 2
    assert "reruns no config" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_retrain_weight_left_out_is_the_declared_default_of_its_mode(champion, tmp_path, capsys):
    """A warm start without ``--retrain-weight`` adds each fit label the tuned number of times; a
    pipeline rerun once; a weight given is kept, and a weight below 1 is refused naming the flag."""
    from closedloop.adapt.arguments import WARM_START_THRESHOLD, WARM_START_WEIGHT
    from closedloop.adapt.retrain import RetrainSpec

    assert RetrainSpec().weight == 1 and RetrainSpec(mode="warm_start").weight == WARM_START_WEIGHT
    assert RetrainSpec(mode="warm_start", weight=3).weight == 3
    # the threshold's fit too: cross-fitted for a warm start, held out for a pipeline rerun
    assert RetrainSpec().threshold_fit == "held_out"
    assert RetrainSpec(mode="warm_start").threshold_fit == WARM_START_THRESHOLD == "cross_fit_half_platt"
    assert RetrainSpec(mode="warm_start", threshold_fit="held_out").threshold_fit == "held_out"
    run, _ = champion
    labels = _labels(tmp_path / "p.npz", run, 60, 33, shift=40)
    out = tmp_path / "o"
    base = ["adapt", str(run), str(labels), "--challengers", "retrain", "--retrain-mode", "warm_start"]
    assert main([*base, "--retrain-weight", "0", "--out", str(out)]) == 2
    assert "--retrain-weight 0" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--out", str(out)]) == 0, capsys.readouterr().err
    fit = json.loads((out / "adapt.json").read_text())["choice"]["chosen"]["retrain"]
    assert fit["spec"]["weight"] == WARM_START_WEIGHT and fit["spec"]["threshold_fit"] == WARM_START_THRESHOLD
    assert fit["n_added"] == WARM_START_WEIGHT * len(fit["fit_rows"])


@pytest.mark.slow  # ten warm starts of the tiny CNN and three adaptations (about 30 s of CPU)
def test_warm_start_cross_fitted_threshold_uses_every_adaptation_label(champion, tmp_path, capsys):
    """``--retrain-threshold cross_fit``: the shipped warm start trains on every adaptation label, and
    its threshold is the task's costs on out-of-fold scores (the warm start on one half scores the
    other, and back), so no label sets the threshold on a score from a model that trained on it;
    ``cross_fit_half`` reads the same scores and ships the warm start on the fit half."""
    from closedloop.adapt.retrain import split_for_retrain
    from closedloop.adapt.warm_retrain import warm_retrain
    from closedloop.stats.recalibration import fit_recalibration

    run, _ = champion
    champ = TrainedModel.load(run / "stages/03_train/artifacts/model")
    labels = _labels(tmp_path / "prod.npz", run, 80, 34, shift=40)

    def adapt_with(threshold_fit: str, out: Path) -> str:
        rc = main([
            "adapt", str(run), str(labels), "--challengers", "retrain", "--retrain-mode", "warm_start",
            "--retrain-threshold", threshold_fit, "--seed", "2", "--out", str(out),
        ])  # fmt: skip
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        return captured.out

    out = tmp_path / "cross"
    assert "out-of-fold scores" in adapt_with("cross_fit", out)
    res = json.loads((out / "adapt.json").read_text())
    fit = res["choice"]["chosen"]["retrain"]
    ia = np.asarray(res["split"]["adaptation"])
    assert fit["spec"]["threshold_fit"] == "cross_fit"
    assert fit["fit_rows"] == fit["calibration_rows"] == list(range(len(ia)))
    assert fit["n_added"] == fit["spec"]["weight"] * len(ia)

    with np.load(labels) as z:
        X, y = z["images"][ia][..., None], z["labels"][ia]
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    train = SOURCES.resolve("medmnist")({k: v for k, v in data.items() if k != "source"}).load(0).train
    tr = (train.X, np.asarray(train.y))

    def warm(rows: np.ndarray) -> TrainedModel:
        return warm_retrain(
            champ, tr, (X[rows], y[rows]), weight=fit["spec"]["weight"], epochs=1, lr=5e-4, batch_size=64, seed=2
        )[0]  # fmt: skip

    a, b = split_for_retrain(y, 0.5, 2)
    oof = np.empty(len(y))
    oof[b] = warm(a).predict_proba(X[b])[:, 1]
    oof[a] = warm(b).predict_proba(X[a])[:, 1]
    expect = fit_recalibration(y, oof, "threshold", costs=(1.0, 1.0)).threshold
    adapted = TrainedModel.load(out / "model")
    assert adapted.threshold == pytest.approx(expect)
    # the shipped network is the warm start on all of them
    shipped = warm(np.arange(len(y)))
    np.testing.assert_allclose(adapted.predict_logits(X), shipped.predict_logits(X), rtol=1e-5, atol=1e-5)

    # cross_fit_half: the same threshold from the same out-of-fold scores; the shipped network is the
    # warm start on the fit half (the held_out mode's model)
    half = tmp_path / "half"
    adapt_with("cross_fit_half", half)
    fit = json.loads((half / "adapt.json").read_text())["choice"]["chosen"]["retrain"]
    assert fit["fit_rows"] == a.tolist() and fit["calibration_rows"] == list(range(len(ia)))
    adapted = TrainedModel.load(half / "model")
    assert adapted.threshold == pytest.approx(expect)
    np.testing.assert_allclose(adapted.predict_logits(X), warm(a).predict_logits(X), rtol=1e-5, atol=1e-5)

    # cross_fit_platt: the network of cross_fit, the threshold off the Platt map of the same
    # out-of-fold scores, recorded and described
    from closedloop.adapt.retrain import cost_threshold

    platt = tmp_path / "platt"
    assert "read off their Platt map" in adapt_with("cross_fit_platt", platt)
    fit = json.loads((platt / "adapt.json").read_text())["choice"]["chosen"]["retrain"]
    t, m = cost_threshold(y, oof, (1.0, 1.0), smoothed=True)
    assert m is not None and fit["threshold_map"] == pytest.approx(list(m))
    adapted = TrainedModel.load(platt / "model")
    assert adapted.threshold == pytest.approx(t) and adapted.threshold != pytest.approx(expect)
    np.testing.assert_allclose(adapted.predict_logits(X), shipped.predict_logits(X), rtol=1e-5, atol=1e-5)

    # a pipeline rerun is not cross-fitted (three pipeline runs): refused, naming the flag
    assert main([
        "adapt", str(run), str(labels), "--challengers", "retrain", "--retrain-threshold", "cross_fit",
        "--out", str(tmp_path / "o"),
    ]) == 2  # fmt: skip
    assert "--retrain-threshold cross_fit" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main([
        "adapt", str(run), str(labels), "--challengers", "retrain", "--retrain-threshold", "cross_fit_half_platt",
        "--out", str(tmp_path / "o"),
    ]) == 2  # fmt: skip
    assert "--retrain-threshold cross_fit_half_platt" in capsys.readouterr().err


def test_a_binary_model_may_declare_non_inferiority_at_production_mix(champion, tmp_path):
    """``test_mix="production"`` on a binary model: the test split's rows weigh the adaptation labels'
    mix in the expected-cost comparison, and the record says so; the default stays the split as it is."""
    from closedloop.adapt.run import run_adapt

    run, _ = champion
    labels = _labels(tmp_path / "prod.npz", run, 160, 21)
    kw = {"challengers": ("recalibration",), "seed": 2}
    same = run_adapt(run, labels, out=tmp_path / "same", **kw)
    mixed = run_adapt(run, labels, out=tmp_path / "mixed", test_mix="production", **kw)
    assert same.test_mix == {"mix": "original"} and mixed.test_mix["mix"] == "production"
    assert len(mixed.test_mix["production_shares"]) == 2 and mixed.test_mix["n_production"] == len(
        same.split.adaptation
    )
    ni_same, ni_mixed = same.decision.non_inferiority, mixed.decision.non_inferiority
    assert ni_same is not None and ni_mixed is not None and ni_mixed.metric == "expected_cost"
    assert "weighted to production's class mix" in ni_mixed.evaluated_on
    # the same decisions on the same rows, weighed otherwise
    assert ni_mixed.n == ni_same.n and ni_mixed.champion_value != pytest.approx(
        ni_same.champion_value, abs=1e-9
    )
