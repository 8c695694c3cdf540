"""Label Studio round trip: tasks + predictions + config out, a JSON export (as Label Studio writes it) in."""

from __future__ import annotations

import copy
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from labeling_helpers import make_queue  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.core.errors import DataError  # noqa: E402
from closedloop.labeling import LabelStore, from_label_studio, load_queue, to_label_studio  # noqa: E402


def _export_from(tasks: list[dict], annotations: dict[int, list[dict]]) -> list[dict]:
    """What Label Studio's JSON export looks like after labeling the imported tasks."""
    out = []
    for i, t in enumerate(tasks):
        task = copy.deepcopy(t)
        task.update({"id": 1000 + i, "project": 7, "annotations": annotations.get(i, [])})
        out.append(task)
    return out


def _ann(aid: int, choice: list[str], updated: str, cancelled: bool = False, who: int = 3) -> dict:
    return {
        "id": aid,
        "completed_by": who,
        "result": [
            {
                "id": "r1",
                "from_name": "label",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": choice},
            }
        ],
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": updated,
        "updated_at": updated,
        "lead_time": 2.5,
    }


def test_tasks_predictions_and_config(tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=5)
    q = load_queue(qdir)
    res = to_label_studio(qdir, tmp_path / "ls" / "tasks.json", model_version="run-42")
    tasks = json.loads(res.tasks_file.read_text())
    assert len(tasks) == 5 and res.n_tasks == 5
    t = tasks[0]
    assert t["data"]["image"] == "/data/local-files/?d=queue/images/0000100.png"
    assert t["data"]["closedloop_id"] == "100" and t["data"]["closedloop_queue"] == res.queue_fingerprint
    (pred,) = t["predictions"]
    assert pred["model_version"] == "run-42" and pred["score"] == pytest.approx(q.items[0].confidence)
    (region,) = pred["result"]
    assert region == {
        "from_name": "label",
        "to_name": "image",
        "type": "choices",
        "value": {"choices": q.items[0].predicted},
    }
    root = ET.fromstring(res.config_file.read_text())
    assert root.tag == "View" and root.find("Image").get("value") == "$image"
    choices = root.find("Choices")
    assert (
        choices.get("name") == "label"
        and choices.get("toName") == "image"
        and choices.get("choice") == "single"
    )
    assert [c.get("value") for c in choices.findall("Choice")] == ["cat", "dog", "fox"]


def test_table_and_multilabel_configs(tmp_path: Path) -> None:
    tq = make_queue(tmp_path / "t", n=3, kind="table")
    res = to_label_studio(tq, tmp_path / "t.json")
    t = json.loads(res.tasks_file.read_text())[0]
    assert set(t["data"]["row"]) == {"age", "bmi", "smoker"} and "image" not in t["data"]
    root = ET.fromstring(res.config_file.read_text())
    assert root.find("Table").get("value") == "$row" and root.find("Choices").get("toName") == "row"
    mq = make_queue(tmp_path / "m", n=3, multilabel=True)
    res = to_label_studio(mq, tmp_path / "m.json")
    assert ET.fromstring(res.config_file.read_text()).find("Choices").get("choice") == "multiple"


def test_round_trip_newest_non_cancelled_wins(tmp_path: Path, capsys) -> None:
    qdir = make_queue(tmp_path, n=4)
    tasks_file = tmp_path / "tasks.json"
    assert main(["label", str(qdir), "--to-label-studio", str(tasks_file)]) == 0
    tasks = json.loads(tasks_file.read_text())
    export = _export_from(
        tasks,
        {
            0: [
                _ann(1, ["cat"], "2026-11-30T10:00:00.000000Z"),
                _ann(2, ["dog"], "2026-11-30T11:00:00.000000Z"),
            ],
            1: [
                _ann(3, ["fox"], "2026-11-30T10:00:00Z"),
                _ann(4, ["cat"], "2026-11-30T12:00:00Z", cancelled=True),
            ],
            2: [_ann(5, ["dog"], "2026-11-30T10:00:00Z", cancelled=True)],
        },
    )
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    assert main(["label", str(qdir), "--from-label-studio", str(path)]) == 0
    out = capsys.readouterr().out
    assert "imported 2 annotations" in out and "2 of 4 tasks without an annotation" in out
    assert "cancelled annotation 4 on id 101" in out and "cancelled annotation 5 on id 102" in out
    q = load_queue(qdir)
    cur = LabelStore(qdir / "labels.csv", q.ids, q.classes).current()
    assert {k: v.label for k, v in cur.items()} == {"100": ["dog"], "101": ["fox"]}
    assert cur["100"].annotator == "labelstudio:3" and cur["100"].time == "2026-11-30T11:00:00.000000Z"
    # reading the same export again adds nothing
    again = from_label_studio(path, qdir)
    assert again.n_imported == 0 and again.n_unchanged == 2


def test_bad_exports_named(tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=3)
    tasks = json.loads(to_label_studio(qdir, tmp_path / "tasks.json").tasks_file.read_text())
    path = tmp_path / "export.json"

    path.write_text(
        json.dumps(_export_from(tasks, {0: [_ann(1, ["wolf"], "t1")], 1: [_ann(2, ["cat"], "t1")]}))
    )
    with pytest.raises(DataError, match=r"not in this queue's class list .*id 100: \['wolf'\]"):
        from_label_studio(path, qdir)
    assert not (qdir / "labels.csv").exists()  # nothing written when anything is wrong

    other = [{"id": 5, "project": 9, "data": {"image": "x.png"}, "annotations": []}]
    path.write_text(json.dumps(other))
    with pytest.raises(
        DataError, match=r"task\(s\) \[5\] have no data.closedloop_id; .*another Label Studio project"
    ):
        from_label_studio(path, qdir)

    stale = _export_from(tasks, {})
    for t in stale:
        t["data"]["closedloop_queue"] = "0123456789ab"
    path.write_text(json.dumps(stale))
    with pytest.raises(DataError, match=r"tasks belong to queue \['0123456789ab'\]"):
        from_label_studio(path, qdir)

    path.write_text(json.dumps({"tasks": []}))
    with pytest.raises(DataError, match="expected a JSON list of tasks"):
        from_label_studio(path, qdir)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not JSON"):
        from_label_studio(path, qdir)
