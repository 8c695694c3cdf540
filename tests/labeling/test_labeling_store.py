"""labels.csv: append-only rows, latest wins, undo, two concurrent writer processes, hand edits."""

from __future__ import annotations

import csv
import multiprocessing as mp
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from labeling_helpers import make_queue  # noqa: E402

from closedloop.labeling import LabelsFileError, LabelStore, load_queue  # noqa: E402

IDS = [str(i) for i in range(100, 124)]
CLASSES = ["cat", "dog", "fox"]
HEADER = "id,label,annotator,time,status,predicted\n"


def _store(path: Path, multilabel: bool = False) -> LabelStore:
    return LabelStore(path, IDS, CLASSES, multilabel)


def test_latest_row_wins_and_undo_restores_the_previous(tmp_path: Path) -> None:
    s = _store(tmp_path / "labels.csv")
    s.append("100", ["cat"], "labeled", "ada", ["dog"])
    s.append("100", ["fox"], "labeled", "bo", ["dog"])
    s.append("101", [], "skipped", "ada")
    assert {k: (v.label, v.status) for k, v in s.current().items()} == {
        "100": (["fox"], "labeled"),
        "101": ([], "skipped"),
    }
    s.append("100", [], "undone", "bo")
    assert s.current()["100"].label == ["cat"]  # back to the decision before
    s.append("100", [], "undone", "ada")
    assert "100" not in s.current()
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines[0] + "\n" == HEADER and len(lines) == 6  # nothing rewritten, only appended


def test_bad_labels_rejected_before_writing(tmp_path: Path) -> None:
    s = _store(tmp_path / "labels.csv")
    with pytest.raises(ValueError, match=r"\['wolf'\] is not in the class list"):
        s.append("100", ["wolf"], "labeled", "ada")
    with pytest.raises(ValueError, match="exactly one class"):
        s.append("100", ["cat", "dog"], "labeled", "ada")
    with pytest.raises(KeyError):
        s.append("999", ["cat"], "labeled", "ada")
    assert not (tmp_path / "labels.csv").exists()
    m = _store(tmp_path / "m.csv", multilabel=True)
    m.append("100", ["cat", "dog"], "labeled", "ada")
    assert m.current()["100"].label == ["cat", "dog"]


def _writer(path: str, who: str, n: int) -> None:
    s = LabelStore(path, IDS, CLASSES)
    for i in range(n):
        s.append(IDS[i % len(IDS)], [CLASSES[i % 3]], "labeled", who, ["cat"])


def test_two_processes_writing_at_once_do_not_corrupt_the_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    ctx = mp.get_context("fork")  # separate processes, each with its own file descriptors
    procs = [ctx.Process(target=_writer, args=(str(path), who, 150)) for who in ("ada", "bo")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    text = path.read_text()
    assert text.count(HEADER) == 1 and text.startswith(HEADER)
    rows = _store(path).rows()  # every line parses: no torn or interleaved rows
    assert len(rows) == 300
    for who in ("ada", "bo"):
        mine = [r for r in rows if r.annotator == who]
        assert [(r.id, r.label[0]) for r in mine] == [(IDS[i % 24], CLASSES[i % 3]) for i in range(150)]


@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        ("id,label,who\n", 1, "header is"),
        (HEADER + "100,cat,ada,2026-11-30T20:00:00Z,labeled,cat\n100,cat,ada\n", 3, "3 fields, expected 6"),
        (HEADER + "555,cat,ada,2026-11-30T20:00:00Z,labeled,cat\n", 2, "id '555' is not in queue.csv"),
        (HEADER + "100,cat,ada,2026-11-30T20:00:00Z,done,cat\n", 2, "status 'done'"),
        (HEADER + "100,wolf,ada,2026-11-30T20:00:00Z,labeled,cat\n", 2, "['wolf'] is not in the class list"),
        (HEADER + "100,cat,ada,yesterday,labeled,cat\n", 2, "time 'yesterday'"),
        (HEADER + "100,cat,ada,2026-11-30T20:00:00Z,labeled,cat", 2, "incomplete"),
    ],
)
def test_hand_edited_file_names_the_line(tmp_path: Path, body: str, line: int, what: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(body)
    with pytest.raises(LabelsFileError) as exc:
        _store(path).current()
    assert f"labels.csv line {line}:" in str(exc.value) and what in str(exc.value)


def test_queue_reader_and_its_bad_input(tmp_path: Path) -> None:
    from closedloop.core.errors import DataError

    qdir = make_queue(tmp_path / "a", n=5)
    q = load_queue(qdir)
    assert q.classes == CLASSES and q.kind == "images" and len(q.items) == 5
    it = q.items[0]
    assert len(it.top) == 3 and it.top[0].name == it.predicted[0] and it.top[0].p >= it.top[1].p
    assert it.reason == "uncertain" and "unsure" in it.reason_text

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no queue.csv in this folder.*--review K"):
        load_queue(empty)
    (qdir / "images" / "0000101.png").unlink()
    (qdir / "images" / "0000103.png").unlink()
    with pytest.raises(
        DataError, match=r"2 image file\(s\).*missing: images/0000101.png, images/0000103.png"
    ):
        load_queue(qdir)

    bad = make_queue(tmp_path / "c", n=2)
    q2 = __import__("pandas").read_csv(bad / "queue.csv")
    q2.loc[0, "file"] = "../../secret.png"
    q2.to_csv(bad / "queue.csv", index=False)
    with pytest.raises(DataError, match=r"outside the queue folder: \['../../secret.png'\]"):
        load_queue(bad)
    q2.iloc[:0].to_csv(bad / "queue.csv", index=False)
    with pytest.raises(DataError, match="the queue has no items"):
        load_queue(bad)

    # an older queue without queue.json or probability columns: the class list must be given
    old = make_queue(tmp_path / "b", n=4)
    (old / "queue.json").unlink()
    df = __import__("pandas").read_csv(old / "queue.csv")
    df[[c for c in df.columns if not c.startswith("p_")]].to_csv(old / "queue.csv", index=False)
    assert set(load_queue(old).classes) <= set(CLASSES)  # from the predictions, best effort
    assert load_queue(old, classes=["cat", "dog", "fox", "owl"]).classes[-1] == "owl"


def test_csv_quoting_round_trips(tmp_path: Path) -> None:
    s = LabelStore(tmp_path / "labels.csv", ["a,b"], ['say "hi"', "x"])
    s.append("a,b", ['say "hi"'], "labeled", "o'neil, jr")
    (row,) = s.rows()
    assert row.id == "a,b" and row.label == ['say "hi"'] and row.annotator == "o'neil, jr"
    with open(tmp_path / "labels.csv", newline="") as fh:
        assert list(csv.DictReader(fh))[0]["label"] == 'say "hi"'
