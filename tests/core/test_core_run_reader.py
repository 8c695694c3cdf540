"""The one run-directory reader: artifacts found by type, first or last, and an artifact of an older
layout refused with a message naming the folder, the versions and what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

import toy_pkg
from closedloop import JsonArtifact, Pipeline
from closedloop.core.errors import RunDirError
from closedloop.core.run_reader import RunDir


class Note(JsonArtifact):
    text: str


class NoteV2(JsonArtifact):
    layout_version: ClassVar[str] = "2"
    text: str
    lines: int


def _run_with(tmp_path: Path, artifacts: dict[str, dict]) -> Path:
    run = tmp_path / "run"
    stages = []
    for i, (name, info) in enumerate(artifacts.items()):
        d = run / f"stages/0{i}_{name}/artifacts/{name}"
        d.mkdir(parents=True)
        (d / "artifact.json").write_text(json.dumps(info.pop("content")))
        stages.append(
            {"name": name, "status": "ok", "artifacts": {name: {"path": str(d.relative_to(run)), **info}}}
        )
    (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    return run


def test_finds_artifacts_by_type_first_and_last(runs_dir: Path) -> None:
    res = Pipeline([toy_pkg.SumPixels()], data={"source": "toy_pkg:ToySource", "n": 30}, name="t").run(
        progress=False
    )
    run = RunDir(res.run_dir)
    (bundle_dir,) = run.artifact_dirs("DatasetBundle")
    assert run.artifact_dir("DatasetBundle", first=True) == bundle_dir == run.require_dir("DatasetBundle")
    assert run.artifact_dir("ExportBundle") is None
    with pytest.raises(RunDirError, match=r"no finished ExportBundle artifact; run the stage"):
        run.require_dir("ExportBundle")
    with pytest.raises(RunDirError, match=r"no manifest.json; expected a closedloop run directory"):
        RunDir(res.run_dir / "stages").require_dir("DatasetBundle")


def test_loads_the_artifact_as_its_type(tmp_path: Path) -> None:
    run = _run_with(tmp_path, {"note": {"type": f"{__name__}:Note", "content": {"text": "hi"}}})
    assert RunDir(run).artifact(Note).text == "hi"


def test_an_older_layout_is_refused_with_what_to_do(tmp_path: Path) -> None:
    run = _run_with(tmp_path, {"note": {"type": f"{__name__}:NoteV2", "content": {"text": "hi"}}})
    with pytest.raises(RunDirError) as err:
        RunDir(run).artifact(NoteV2)
    msg = str(err.value)
    assert "stages/00_note/artifacts/note" in msg and "stage 'note'" in msg
    assert "written in layout version 1; this closedloop reads version 2" in msg
    assert "Re-run that stage" in msg


def test_the_manifest_and_the_predictor_metadata_read_as_typed_records(tmp_path) -> None:
    """What export-web and ``closedloop runs`` read, typed: a missing manifest is empty, a variant's own
    threshold wins even when it is ``null``, and a bare file name (an older folder) is that file."""
    from closedloop.artifacts.export import PredictorInfo
    from closedloop.core.run_reader import RunDir

    assert RunDir(tmp_path).manifest_record.stages == [] and RunDir(tmp_path).manifest_record.status == "?"
    (tmp_path / "manifest.json").write_text(
        '{"name": "p", "status": "failed", "stages": [{"name": "export", "kind": "export", '
        '"status": "failed", "error": "boom", "class": "x:Y"}]}'
    )
    st = RunDir(tmp_path).manifest_record.stages[0]
    assert (st.kind, st.status, st.error) == ("export", "failed", "boom")
    info = PredictorInfo.model_validate(
        {
            "threshold": 0.3,
            "temperature": 1.5,
            "models": {"fp32": {"file": "a.onnx", "threshold": None}, "int8": "b.onnx"},
            "input": {"kind": "table", "shape": [4], "feature_names": ["a", "b", "c", "d"]},
        }
    )
    assert info.variant_threshold("fp32") is None and info.variant_threshold("int8") == 0.3
    assert info.models["int8"].file == "b.onnx" and info.variant_temperature("int8") == 1.5
    assert info.input is not None and info.input.shape == [4] and info.input.kind == "table"
