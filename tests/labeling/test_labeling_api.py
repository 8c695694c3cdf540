"""The page's JSON API through FastAPI's test client, export for retrain, and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from labeling_helpers import make_queue  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.core.errors import DataError  # noqa: E402
from closedloop.labeling import create_app, export_labels  # noqa: E402


@pytest.fixture
def client_for():
    from fastapi.testclient import TestClient

    return lambda qdir, **kw: TestClient(create_app(qdir, **kw))


def test_api_label_undo_resume(client_for, tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=6)
    c = client_for(qdir, annotator="ada")
    q = c.get("/api/queue").json()
    assert q["resume"] == 0 and q["classes"] == ["cat", "dog", "fox"] and len(q["items"]) == 6
    assert c.get("/api/image/100").headers["content-type"] == "image/png"
    r = c.post("/api/label", json={"id": "100", "status": "labeled", "label": ["dog"]})
    assert r.status_code == 200 and r.json()["decisions"]["100"]["label"] == ["dog"]
    c.post("/api/label", json={"id": "101", "status": "unsure", "annotator": "bo"})
    assert c.get("/api/queue").json()["resume"] == 2
    assert c.post("/api/undo", json={"id": "101"}).json()["decisions"].keys() == {"100"}
    assert c.get("/api/queue").json()["resume"] == 1
    bad = c.post("/api/label", json={"id": "100", "status": "labeled", "label": ["wolf"]})
    assert bad.status_code == 422 and "['wolf'] is not in the class list" in bad.json()["detail"]
    assert c.post("/api/label", json={"id": "999", "status": "skipped"}).status_code == 404
    assert c.get("/api/image/999").status_code == 404
    # a hand edit breaks the file: reads and writes are refused with the line named
    with open(qdir / "labels.csv", "a") as fh:
        fh.write("105,cat,ada,not-a-time,labeled,cat\n")
    r = c.get("/api/queue")
    assert r.status_code == 409 and "labels.csv line 5: time 'not-a-time'" in r.json()["detail"]
    assert c.post("/api/label", json={"id": "102", "status": "skipped"}).status_code == 409


def test_create_app_refuses_a_broken_queue(tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=3)
    (qdir / "images" / "0000102.png").unlink()
    with pytest.raises(DataError, match="images/0000102.png"):
        create_app(qdir)


def _label(qdir: Path, decisions: dict[str, tuple[str, list[str]]]) -> None:
    from closedloop.labeling import LabelStore, load_queue

    q = load_queue(qdir)
    s = LabelStore(qdir / "labels.csv", q.ids, q.classes, q.multilabel)
    for i, (status, label) in decisions.items():
        s.append(i, label, status, "ada")


def test_export_images_in_retrain_layout(tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=6)
    _label(
        qdir,
        {
            "100": ("labeled", ["cat"]),
            "101": ("labeled", ["dog"]),
            "102": ("skipped", []),
            "103": ("unsure", []),
            "104": ("labeled", ["cat"]),
        },
    )
    res = export_labels(qdir, tmp_path / "out")
    assert res.n_exported == 3 and res.per_class == {"cat": 2, "dog": 1}
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "cat/0000100.png",
        "cat/0000104.png",
        "dog/0000101.png",
    ]
    listed = pd.read_csv(tmp_path / "out" / "not_exported.csv", dtype=str)
    assert listed.values.tolist() == [["102", "skipped"], ["103", "unsure"], ["105", "unlabeled"]]
    with pytest.raises(DataError, match="already exists"):
        export_labels(qdir, tmp_path / "out")


def test_export_table_rows(tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=4, kind="table")
    _label(qdir, {"100": ("labeled", ["fox"]), "101": ("skipped", [])})
    res = export_labels(qdir, tmp_path / "out")
    df = pd.read_csv(res.add_labeled)
    assert res.add_labeled.name == "labeled.csv"
    assert df.columns.tolist() == ["age", "bmi", "smoker", "label"] and df["label"].tolist() == ["fox"]


def test_cli_export_and_bad_queue(tmp_path: Path, capsys) -> None:
    qdir = make_queue(tmp_path, n=4)
    _label(qdir, {"100": ("labeled", ["dog"]), "101": ("unsure", [])})
    assert main(["label", str(qdir), "--export", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "exported 1 labeled samples" in out and "not exported, unsure: 1 (101)" in out
    assert f"--add-labeled {tmp_path / 'out'}" in out
    assert main(["label", str(tmp_path / "nowhere"), "--export", str(tmp_path / "o2")]) == 2
    assert "no such queue folder" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "export.json").read_text())
    assert summary["n_exported"] == 1


@pytest.mark.slow  # a fresh interpreter imports the whole CLI
def test_cli_serves_the_page_in_a_real_server_process(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import time

    import httpx

    qdir = make_queue(tmp_path, n=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    cmd = [sys.executable, "-m", "closedloop", "label", str(qdir), "--port", str(port), "--annotator", "cy"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                q = httpx.get(f"{url}/api/queue", timeout=5).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert q["annotator"] == "cy" and len(q["items"]) == 3
        r = httpx.post(f"{url}/api/label", json={"id": "102", "status": "labeled", "label": ["fox"]})
        assert r.status_code == 200
        assert "102,fox,cy," in (qdir / "labels.csv").read_text()
        assert "closedloop label" in httpx.get(url).text
    finally:
        proc.terminate()
        proc.wait(30)
