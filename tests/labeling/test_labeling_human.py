"""``closedloop human-baseline``: the queue it draws, the scores and the paired verdict, the reference
the next run reads, and its bad input (imports torch: slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from human_helpers import make_model_run  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.core.errors import ConfigError  # noqa: E402
from closedloop.labeling import LabelStore, load_queue  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_model_run(tmp_path_factory.mktemp("h") / "runs", "demo")


def _label(hb: Path, who: str, wrong_every: int, ids: list[str] | None = None) -> None:
    q = load_queue(hb / "queue")
    held = pd.read_csv(hb / "heldback.csv", dtype={"id": str, "label": str}).set_index("id")
    store = LabelStore(q.dir / "labels.csv", q.ids, q.classes)
    for k, item in enumerate(ids or q.ids):
        lab = held.loc[item, "label"]
        if wrong_every and k % wrong_every == 0:
            lab = str((int(lab) + 1) % 10)
        store.append(item, [lab], "labeled", who)


def test_scores_the_human_and_the_model_on_the_same_items(run: Path, tmp_path: Path, capsys) -> None:
    hb = tmp_path / "hb"
    assert main(["human-baseline", str(run), "--n", "60", "--out", str(hb), "--annotators", "ada,bo"]) == 0
    plan = json.loads((hb / "baseline.json").read_text())
    assert plan["n"] == 60 and plan["n_pool"] == 400 and plan["annotators"] == ["ada", "bo"]
    q = load_queue(hb / "queue")
    _label(hb, "ada", wrong_every=2, ids=q.assignments["ada"])  # half wrong: a poor labeler
    assert main(["human-baseline", "--score", str(hb), "--no-publish"]) == 0
    out = capsys.readouterr().out
    assert "ada (30 labeled, 0 skipped/unsure): acc 0.500" in out
    assert "model - human acc: +" in out and ": better" in out  # a good model beats a coin-flip human
    res = json.loads((hb / "human_reference.json").read_text())
    assert res["reference"]["comparison"]["verdict"] == "better" and res["n_scored"] == 30
    assert not (run.parent / "human_reference.json").exists()  # --no-publish
    y_model = res["annotators"][0]["model"]["acc"]["value"]
    held = pd.read_csv(hb / "heldback.csv", dtype={"id": str, "label": str}).set_index("id")
    mine = held.loc[q.assignments["ada"]]
    P = mine.filter(like="p_").to_numpy()
    assert y_model == pytest.approx(np.mean(P.argmax(1) == mine["label"].astype(int).to_numpy()))


def test_bad_input(run: Path, tmp_path: Path, capsys) -> None:
    assert main(["human-baseline", str(run), "--split", "test", "--out", str(tmp_path / "a")]) == 2
    assert "the test split is sealed" in capsys.readouterr().err
    assert main(["human-baseline", str(run), "--n", "401", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--n 401" in err and "has only 400 samples to draw from" in err
    assert main(["human-baseline", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    hb = tmp_path / "hb"
    assert main(["human-baseline", str(run), "--n", "30", "--out", str(hb)]) == 0
    capsys.readouterr()
    _label(hb, "ada", 0, ids=load_queue(hb / "queue").ids[:7])
    assert main(["human-baseline", "--score", str(hb)]) == 2
    assert "annotator 'ada' labeled 7 of 30 items; a human level needs at least 20" in capsys.readouterr().err
    assert main(["human-baseline", "--score", str(tmp_path / "a")]) == 2


def test_task_reads_a_human_reference_and_refuses_a_wrong_file(tmp_path: Path) -> None:
    from closedloop.stages.task import DefineTask

    bad = tmp_path / "h.json"
    bad.write_text('{"reference": {"name": "x", "level": "literature"}}')
    with pytest.raises(ConfigError, match="level 'literature', expected 'human'"):
        from closedloop.stages.task import read_human_reference

        read_human_reference(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        DefineTask(human_reference=str(tmp_path / "nope.json")).cache_key()
    assert DefineTask(human_reference="none").cache_key() == ""


def test_rescore_against_another_runs_model(run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    hb = tmp_path / "hb"
    assert main(["human-baseline", str(run), "--n", "30", "--out", str(hb), "--seed", "2"]) == 0
    _label(hb, "ada", wrong_every=0)
    other = tmp_path / "runs" / "demo" / "other"
    shutil.copytree(run, other)  # same data and model, another run folder: the comparison is recomputed
    assert main(["human-baseline", "--score", str(hb), "--run", str(other), "--no-publish"]) == 0
    res = json.loads((hb / "human_reference.json").read_text())
    assert res["reference"]["comparison"]["model_run"] == str(other.resolve())
    assert res["reference"]["metrics"]["acc"] == 1.0
    # a run whose validation split holds other items is refused
    bad = tmp_path / "runs" / "demo" / "bad"
    shutil.copytree(run, bad)
    from closedloop.data.bundle import DatasetBundle

    data_dir = next(bad.glob("stages/*data/artifacts/data"))
    data = DatasetBundle.load(data_dir)
    data.splits["val"].X[:] = 255 - data.splits["val"].X
    data.save(data_dir)
    capsys.readouterr()
    assert main(["human-baseline", "--score", str(hb), "--run", str(bad), "--no-publish"]) == 2
    assert "does not hold the items of this human baseline" in capsys.readouterr().err


def test_an_ordinal_tasks_graders_are_compared_on_their_distance_in_ranks(tmp_path: Path, capsys) -> None:
    """Two graders with the same accuracy: one is off by a rank where wrong, the other by five. Accuracy cannot
    tell them apart; the quadratic weighted kappa and the mean absolute rank error can, and the verdict on mae
    (lower is better) reads the right way round."""
    run = make_model_run(tmp_path / "runs", "grades", problem_type="ordinal")
    hb = tmp_path / "hb"
    assert main(["human-baseline", str(run), "--n", "60", "--out", str(hb), "--annotators", "near,far"]) == 0
    q = load_queue(hb / "queue")
    held = pd.read_csv(hb / "heldback.csv", dtype={"id": str, "label": str}).set_index("id")
    store = LabelStore(q.dir / "labels.csv", q.ids, q.classes)
    for who, off in (("near", 1), ("far", 5)):
        for k, item in enumerate(q.assignments[who]):
            lab = int(held.loc[item, "label"])
            if k % 2 == 0:
                lab = lab - off if lab + off > 9 else lab + off
            store.append(item, [str(lab)], "labeled", who)
    scores = {}
    for who in ("near", "far"):
        assert (
            main(
                ["human-baseline", "--score", str(hb), "--annotator", who, "--metric", "mae", "--no-publish"]
            )
            == 0
        )
        res = json.loads((hb / "human_reference.json").read_text())
        scores[who] = res["reference"]
    capsys.readouterr()
    assert scores["near"]["metrics"]["acc"] == scores["far"]["metrics"]["acc"] == 0.5
    assert scores["near"]["metrics"]["mae"] == pytest.approx(0.5) and scores["far"]["metrics"][
        "mae"
    ] == pytest.approx(2.5)
    assert scores["near"]["metrics"]["qwk"] > scores["far"]["metrics"]["qwk"]
    far = scores["far"]["comparison"]
    assert far["metric"] == "mae" and far["delta"] < 0 and far["verdict"] == "better"  # the model errs less
    assert main(["human-baseline", "--score", str(hb), "--metric", "rmse"]) != 0
    assert (
        "--metric rmse: for this ordinal task the human level is compared on acc, balanced_accuracy, qwk, mae"
        in (capsys.readouterr().err)
    )
