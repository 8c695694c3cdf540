"""Several annotators on one queue: agreement page, consensus and annotator quality, export and
adjudication using the consensus, and the bad input around them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from labeling_helpers import CLASSES, make_queue  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.core.errors import DataError  # noqa: E402
from closedloop.labeling import LabelStore, export_labels, load_queue  # noqa: E402
from closedloop.labeling.agreement import agreement_report  # noqa: E402
from closedloop.labeling.consensus import consensus, queue_consensus  # noqa: E402


def _three_annotators(tmp_path: Path, n: int = 40, shared: int = 30) -> tuple[Path, dict[str, str]]:
    """ada always right, bo wrong on every tenth item, cy on every odd one (never both on the same item);
    the first ``shared`` items labeled by all three."""
    qdir = make_queue(tmp_path, n=n)
    q = load_queue(qdir)
    rng = np.random.default_rng(0)
    truth = {i: CLASSES[int(rng.integers(0, 3))] for i in q.ids}
    store = LabelStore(qdir / "labels.csv", q.ids, q.classes)

    def wrong(c: str) -> str:
        return CLASSES[(CLASSES.index(c) + 1) % 3]

    for k, i in enumerate(q.ids):
        who = ["ada", "bo", "cy"] if k < shared else [["ada", "bo", "cy"][k % 3]]
        for w in who:
            lab = truth[i]
            if (w == "bo" and k % 10 == 0) or (w == "cy" and k % 2 == 1):
                lab = wrong(lab)
            store.append(i, [lab], "labeled", w)
    return qdir, truth


def test_agreement_page_and_numbers(tmp_path: Path, capsys) -> None:
    qdir, _ = _three_annotators(tmp_path)
    rep = agreement_report(load_queue(qdir), n_boot=200)
    assert rep.annotators == ["ada", "bo", "cy"] and rep.n_items_multi == 30
    by = {(p.a, p.b): p for p in rep.pairs}
    assert by[("ada", "bo")].kappa.value > by[("ada", "cy")].kappa.value  # bo agrees with ada more than cy
    assert sum(map(sum, by[("ada", "cy")].confusion)) == 30
    assert rep.most_disagreed and rep.most_disagreed[0].disagreement > 0
    assert set(rep.most_disagreed[0].labels) == {"ada", "bo", "cy"}
    out = tmp_path / "agree.html"
    assert main(["label", str(qdir), "--agreement", str(out)]) == 0
    assert "Fleiss' kappa" in capsys.readouterr().out
    page = out.read_text()
    assert 'data-agreement="disagreed"' in page and "data:image/png;base64," in page
    assert json.loads(out.with_suffix(".json").read_text())["n_items_multi"] == 30


def test_too_little_overlap_says_how_many(tmp_path: Path, capsys) -> None:
    qdir, _ = _three_annotators(tmp_path, n=30, shared=6)
    with pytest.raises(
        DataError, match="6 item\\(s\\) have labels from two or more annotators; agreement needs at least 10"
    ):
        agreement_report(load_queue(qdir))
    assert main(["label", str(qdir), "--agreement", str(tmp_path / "a.html")]) == 2
    one = make_queue(tmp_path / "one", n=4)
    LabelStore(one / "labels.csv", load_queue(one).ids, CLASSES).append("100", ["cat"], "labeled", "ada")
    with pytest.raises(DataError, match="two or more annotators, found 1"):
        agreement_report(load_queue(one))


def test_consensus_ranks_annotators_and_export_uses_it(tmp_path: Path, capsys) -> None:
    qdir, truth = _three_annotators(tmp_path)
    res = queue_consensus(qdir, probs="none", method="majority_vote")
    assert res.method == "majority_vote"
    assert res.annotators["ada"] > res.annotators["bo"] > res.annotators["cy"]
    cons = pd.read_csv(qdir / "consensus.csv", dtype=str).set_index("id")
    shared = list(cons.index[:30])
    assert all(cons.loc[i, "label"] == truth[i] for i in shared)  # 2 of 3 right on every shared item
    # items below the bar go back to the queue, assigned to an adjudicator
    assert (
        main(
            [
                "label",
                str(qdir),
                "--consensus",
                "--method",
                "majority_vote",
                "--probs",
                "none",
                "--adjudicate-below",
                "0.9",
                "--adjudicator",
                "dee",
            ]
        )
        == 0
    )
    q = load_queue(qdir)
    low = set(pd.read_csv(qdir / "consensus.csv", dtype={"id": str}).query("quality < 0.9")["id"])
    assert low and set(q.assignments["dee"]) == low and set(q.assignments["ada"]) >= set(shared)
    res_x = export_labels(qdir, tmp_path / "out", adjudicate_below=0.9)
    assert res_x.labels_from == "consensus.csv"
    assert {n.id for n in res_x.not_exported if n.status == "adjudicate"} == low
    exported = {p.stem.lstrip("0"): p.parent.name for p in (tmp_path / "out").rglob("*.png")}
    assert all(exported[i] == truth[i] for i in shared if i not in low)


def test_crowdlab_with_model_probabilities(tmp_path: Path) -> None:
    qdir, truth = _three_annotators(tmp_path)
    res = queue_consensus(qdir)  # queue.csv has p_<class> columns: CROWDLAB (or its documented fallback)
    assert res.probs_from and res.probs_from.endswith("queue.csv")
    assert res.annotators["ada"] > res.annotators["cy"]
    L = np.array([[0, 0, 1], [1, 1, 1], [2, 2, 0], [0, -1, -1], [-1, 1, -1]] * 8)
    P = np.full((len(L), 3), 1 / 3)
    c = consensus(L, 3, P)
    assert c.labels.shape == (40,) and ((c.quality >= 0) & (c.quality <= 1)).all()
    with pytest.raises(DataError, match="have no label"):
        consensus(np.array([[0, -1], [-1, -1]]), 2)


def test_dawid_skene_learns_who_to_trust_and_never_lets_the_model_alone_decide(tmp_path: Path) -> None:
    qdir, truth = _three_annotators(tmp_path)
    res = queue_consensus(qdir, probs="none")  # the default, without a model: one class prior
    assert res.method == "dawid_skene"
    assert res.annotators["ada"] > res.annotators["bo"] > res.annotators["cy"]
    cons = pd.read_csv(qdir / "consensus.csv", dtype={"id": str}).set_index("id")
    assert (cons["label"] == pd.Series(truth)).loc[cons.index[:30]].all()
    # a model sure of a class no annotator gave: the consensus follows it, and the item goes to adjudication
    q = load_queue(qdir)
    probs = pd.DataFrame({"id": q.ids})
    single = q.ids[35]  # labeled by one annotator only
    given = cons.loc[single, "label"]
    other = next(c for c in CLASSES if c != given)
    for c in CLASSES:
        probs[f"p_{c}"] = [(0.999 if c == other else 0.0005) if i == single else 1 / 3 for i in q.ids]
    probs.to_csv(tmp_path / "probs.csv", index=False)
    res = queue_consensus(qdir, probs=tmp_path / "probs.csv", adjudicator="dee")
    cons = pd.read_csv(qdir / "consensus.csv", dtype={"id": str}).set_index("id")
    assert cons.loc[single, "label"] == other and bool(cons.loc[single, "model_only"])
    assert single in res.to_adjudicate and single in load_queue(qdir).assignments["dee"]
    assert "adjudicate" in {
        n.status for n in export_labels(qdir, tmp_path / "x").not_exported if n.id == single
    }
    L = np.array([[0, 1], [0, 0]])
    with pytest.raises(DataError, match="consensus method 'vote'"):
        consensus(L, 2, None, method="vote")
