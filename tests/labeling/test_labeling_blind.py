"""Blind and independent labeling through the page's JSON API: no model output anywhere, a seeded
recorded order, each annotator on their own, annotator names checked, bad input refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from labeling_helpers import make_queue  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.core.errors import ConfigError, DataError  # noqa: E402
from closedloop.labeling import LabelStore, create_app, load_queue  # noqa: E402
from closedloop.labeling.assign import assign_items, write_assignments  # noqa: E402
from closedloop.labeling.blind import make_blind_queue  # noqa: E402

MODEL_WORDS = ("predicted", "confidence", "top", "reason", "priority", "suggest", "why queued", "p_cat")


def _client(qdir: Path, **kw):
    from fastapi.testclient import TestClient

    return TestClient(create_app(qdir, **kw))


def _model_values(qdir: Path) -> list[str]:
    """Every probability and confidence in queue.csv, as the page would print them."""
    df = pd.read_csv(qdir / "queue.csv")
    cols = [c for c in df.columns if c.startswith("p_")] + ["confidence"]
    return [str(v) for v in df[cols].to_numpy().ravel()]


def test_blind_page_and_api_carry_no_model_output(tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=12)
    c = _client(qdir, annotator="ada", blind=True, seed=5)
    page = c.get("/").text
    assert 'data-blind="1"' in page
    for gone in ('id="prediction"', 'id="top3"', 'id="reason"', "accept suggestion", "why queued"):
        assert gone not in page
    q = c.get("/api/queue")
    body = q.text
    for word in MODEL_WORDS:
        assert word not in body, word
    for v in _model_values(qdir):
        assert v not in body
    items = q.json()["items"]
    assert all(set(it) == {"id", "file", "features"} for it in items)
    order = [it["id"] for it in items]
    assert sorted(order) == sorted(load_queue(qdir).ids) and order != load_queue(qdir).ids  # shuffled
    assert json.loads((qdir / "blind.json").read_text()) == {"seed": 5, "order": order}  # recorded
    assert [it["id"] for it in _client(qdir, blind=True, seed=5).get("/api/queue").json()["items"]] == order
    r = c.post("/api/label", json={"id": order[0], "status": "labeled", "label": ["dog"]})
    assert r.status_code == 200 and "predicted" not in r.text
    rows = LabelStore(qdir / "labels.csv", load_queue(qdir).ids, ["cat", "dog", "fox"]).rows()
    assert rows[0].predicted == []  # labels.csv records no suggestion either
    assert "predicted" not in c.post("/api/undo", json={"id": order[0]}).text


def test_a_queue_declared_blind_is_blind_without_the_flag(tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=4)
    meta = json.loads((qdir / "queue.json").read_text())
    (qdir / "queue.json").write_text(json.dumps({**meta, "blind": True}))
    q = _client(qdir).get("/api/queue").json()
    assert q["blind"] and all("predicted" not in it for it in q["items"])
    assert q["items"] and [it["id"] for it in q["items"]] == load_queue(qdir).ids  # drawn order kept


def test_each_annotator_sees_only_their_own_decisions(tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=6)
    c = _client(qdir, blind=True)
    first = c.get("/api/queue?annotator=ada").json()["items"][0]["id"]
    c.post("/api/label", json={"id": first, "status": "labeled", "label": ["cat"], "annotator": "ada"})
    c.post("/api/label", json={"id": first, "status": "labeled", "label": ["fox"], "annotator": "ada"})
    bo = c.get("/api/queue?annotator=bo").json()
    assert bo["decisions"] == {} and bo["resume"] == 0  # bo never sees ada's label
    ada = c.get("/api/queue?annotator=ada").json()
    assert ada["decisions"][first]["label"] == ["fox"]  # labeled twice: the latest wins ...
    store = LabelStore(qdir / "labels.csv", load_queue(qdir).ids, ["cat", "dog", "fox"])
    assert [r.label for r in store.rows()] == [["cat"], ["fox"]]  # ... and both rows stay in the history
    c.post("/api/label", json={"id": first, "status": "labeled", "label": ["dog"], "annotator": "bo"})
    c.post("/api/undo", json={"id": first, "annotator": "bo"})  # withdraws bo's label only
    cur = store.current_by_annotator()
    assert cur[(first, "ada")].label == ["fox"] and (first, "bo") not in cur


def test_assignments_with_declared_overlap(tmp_path: Path) -> None:
    ids = [str(i) for i in range(100)]
    people = ["ada", "bo", "cy"]
    a = assign_items(ids, people, overlap=0.3, seed=1)
    shared = [i for i, who in a.items() if len(who) > 1]
    assert len(shared) == 30 and all(a[i] == people for i in shared)
    loads = [sum(p in who for who in a.values()) for p in people]
    assert max(loads) - min(loads) <= 1 and sum(loads) == 70 + 90
    assert assign_items(ids, people, overlap=0.3, seed=1) == a  # seeded
    two = assign_items(ids, people, overlap=0.2, per_item=2, seed=0)
    assert sum(len(w) == 2 for w in two.values()) == 20
    with pytest.raises(ConfigError, match="between 0 and 1"):
        assign_items(ids, people, overlap=1.5)
    with pytest.raises(ConfigError, match="named twice"):
        assign_items(ids, ["ada", "ada"], overlap=0.1)

    qdir = make_queue(tmp_path, n=10)
    write_assignments(qdir, assign_items(load_queue(qdir).ids, ["ada", "bo"], overlap=0.2, seed=0))
    c = _client(qdir)
    ada = c.get("/api/queue?annotator=ada").json()
    assert ada["independent"] and len(ada["items"]) == 6  # 8 single items split 4/4, plus 2 shared
    theirs = sorted(set(load_queue(qdir).assignments["bo"]) - {it["id"] for it in ada["items"]})[0]
    r = c.post("/api/label", json={"id": theirs, "status": "labeled", "label": ["cat"], "annotator": "ada"})
    assert r.status_code == 403 and "not assigned to annotator 'ada'" in r.json()["detail"]
    r = c.get("/api/queue?annotator=zed")
    assert r.status_code == 403 and "declared annotators: ['ada', 'bo']" in r.json()["detail"]


@pytest.mark.parametrize("name", ["o'brien, jr.", 'say "hi"', "李 雷", "<b>x</b>"])
def test_odd_annotator_names_are_recorded_as_text(tmp_path: Path, name: str) -> None:
    qdir = make_queue(tmp_path, n=3)
    c = _client(qdir)
    r = c.post("/api/label", json={"id": "100", "status": "labeled", "label": ["cat"], "annotator": name})
    assert r.status_code == 200
    store = LabelStore(qdir / "labels.csv", load_queue(qdir).ids, ["cat", "dog", "fox"])
    assert store.rows()[0].annotator == name


@pytest.mark.parametrize(
    ("name", "why"),
    [("a\nb", "control character"), (" ada", "spaces"), ("", "empty"), ("x" * 65, "at most 64")],
)
def test_bad_annotator_names_are_refused(tmp_path: Path, name: str, why: str) -> None:
    qdir = make_queue(tmp_path, n=3)
    r = _client(qdir).post(
        "/api/label", json={"id": "100", "status": "labeled", "label": ["cat"], "annotator": name}
    )
    if name == "":  # an empty name in a request means "the server's annotator"
        assert r.status_code == 200
        return
    assert r.status_code == 422 and why in r.json()["detail"]
    assert not (qdir / "labels.csv").exists()
    with pytest.raises(ConfigError, match=why):
        create_app(qdir, annotator=name)


def test_label_cli_refuses_a_bad_annotator(tmp_path: Path, capsys) -> None:
    qdir = make_queue(tmp_path, n=3)
    assert main(["label", str(qdir), "--annotator", "bad\tname", "--port", "1"]) == 2
    assert "control character" in capsys.readouterr().err


def test_blind_queue_from_a_split_without_labels_is_refused(tmp_path: Path) -> None:
    X = np.zeros((30, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(DataError, match="this split has no labels"):
        make_blind_queue(X, None, ["a", "b"], tmp_path / "q1", n=10)
    y = np.array([0.0, 1.0, np.nan] * 10)
    with pytest.raises(DataError, match="10 of 30 samples have no label"):
        make_blind_queue(X, y, ["a", "b"], tmp_path / "q2", n=10)
    with pytest.raises(DataError, match="--n 40: split has only 30 samples"):
        make_blind_queue(X, np.zeros(30, dtype=int), ["a", "b"], tmp_path / "q3", n=40)


def test_blind_queue_holds_back_truth_and_draws_at_random(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, size=(50, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 2, 50)
    proba = rng.dirichlet([1, 1], 50)
    qdir, held = make_blind_queue(
        X, y, ["neg", "pos"], tmp_path / "hb", n=20, seed=4, pool=np.arange(10, 50), proba=proba
    )
    q = load_queue(qdir)
    assert q.blind and q.seed == 4 and len(q.items) == 20
    assert list(pd.read_csv(qdir / "queue.csv").columns) == ["id", "file"]
    assert sorted(p.name for p in qdir.iterdir()) == ["images", "queue.csv", "queue.json"]  # no truth inside
    assert held["index"].between(10, 49).all() and held["index"].is_unique
    assert list(held["label"]) == [["neg", "pos"][v] for v in y[held["index"]]]
    np.testing.assert_allclose(held["p_pos"], proba[held["index"], 1], atol=1e-6)
    _, again = make_blind_queue(X, y, ["neg", "pos"], tmp_path / "hb2", n=20, seed=4, pool=np.arange(10, 50))
    assert list(again["index"]) == list(held["index"])  # seeded
