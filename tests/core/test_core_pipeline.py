"""Pipeline: wiring checks, run directory, caching, resume, --only and --out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import toy_pkg
from closedloop import Pipeline
from closedloop.core.errors import RunDirError, WiringError
from closedloop.stages.load_data import LoadData

DATA = {"source": "toy_pkg:ToySource", "n": 30}


def test_missing_input_names_both_stages() -> None:
    with pytest.raises(
        WiringError, match="stage 'needs_model' needs input 'missing_thing'.*earlier stages produce"
    ):
        Pipeline([toy_pkg.SumPixels(), toy_pkg.Double(), toy_pkg.NeedsModel()], data=DATA)


def test_out_of_order_wiring_is_reported_as_cycle() -> None:
    with pytest.raises(WiringError, match="only the later stage 'sum_pixels'.*cyclic or out of order"):
        Pipeline([toy_pkg.Double(), toy_pkg.SumPixels()], data=DATA)


def test_wrong_artifact_type_names_producer() -> None:
    from closedloop.core.stage import RunContext, Stage, StageIO

    class WantsBundleAsTotal(Stage):
        class Inputs(StageIO):
            data: toy_pkg.Total

        class Outputs(StageIO):
            other: toy_pkg.Total

        def run(self, inputs: object, ctx: RunContext) -> object:  # pragma: no cover
            raise AssertionError

    with pytest.raises(
        WiringError,
        match="needs input 'data' of type Total, but stage 'data' produces 'data' of type DatasetBundle",
    ):
        Pipeline([WantsBundleAsTotal()], data=DATA)


def test_run_directory_layout_and_summary(runs_dir: Path) -> None:
    res = Pipeline([toy_pkg.SumPixels(), toy_pkg.Double()], data=DATA, name="toy").run(progress=False)
    assert res.ok
    d = res.run_dir
    assert d.parent == Path("runs") / "toy"
    for f in ("config.yaml", "env.json", "manifest.json", "summary.json", "report.html"):
        assert (d / f).is_file(), f
    s = json.loads((d / "summary.json").read_text())
    assert s["name"] == "toy" and s["status"] == "ok"
    st = s["stages"]["sum_pixels"]
    assert st["status"] == "ok" and st["dir"] == "stages/02_sum_pixels"
    assert (d / st["artifacts"]["total"] / "artifact.json").is_file()
    assert st["total"] == pytest.approx(res.artifact("total").value)
    assert not list(d.glob("stages/*.tmp"))
    env = json.loads((d / "env.json").read_text())
    assert env["seed"] == 0 and env["packages"]["numpy"]
    html = (d / "report.html").read_text()
    assert "sum_pixels" in html and "<script" not in html and 'src="http' not in html
    assert "closedloop run" in res._repr_html_()


def test_cache_hit_and_invalidation(runs_dir: Path) -> None:
    make = lambda scale: Pipeline([toy_pkg.SumPixels(scale=scale), toy_pkg.Double()], data=DATA, name="toy")  # noqa: E731
    make(1.0).run(progress=False)
    again = make(1.0).run(progress=False)
    assert all(s["cached"] for s in again.summary["stages"].values())
    changed = make(2.0).run(progress=False)
    st = changed.summary["stages"]
    assert st["data"]["cached"] and not st["sum_pixels"]["cached"] and not st["double"]["cached"]
    assert changed.artifact("doubled").value == pytest.approx(2 * again.artifact("doubled").value)


def test_crash_then_resume(runs_dir: Path, tmp_path: Path) -> None:
    flag = tmp_path / "crash"
    flag.write_text("1")
    pipe = Pipeline([toy_pkg.SumPixels(), toy_pkg.Double(crash_flag=str(flag))], data=DATA, name="toy")
    res = pipe.run(progress=False)
    assert not res.ok
    s = res.summary["stages"]
    assert s["double"]["status"] == "failed" and "simulated crash" in s["double"]["error"]
    assert (res.run_dir / "report.html").is_file() and (res.run_dir / "summary.json").is_file()
    # a crashed stage never looks complete; its scratch space (checkpoints) survives for the resume
    assert not (res.run_dir / "stages/03_double").exists()
    assert (res.run_dir / "stages/03_double.tmp/work/started.txt").is_file()
    flag.unlink()
    resumed = pipe.run(resume=res.run_dir, progress=False)
    assert resumed.ok and resumed.run_dir == res.run_dir
    assert resumed.summary["stages"]["sum_pixels"]["cached"]
    assert not resumed.summary["stages"]["double"]["cached"]
    assert (res.run_dir / "stages/03_double/artifacts/doubled/artifact.json").is_file()
    assert not (res.run_dir / "stages/03_double.tmp").exists()


def test_resume_with_other_pipeline_is_refused_naming_what_changed(runs_dir: Path) -> None:
    res = Pipeline([toy_pkg.SumPixels()], data=DATA, name="toy").run(progress=False)
    with pytest.raises(
        RunDirError, match=r"refused, the config changed .*stages\[0\]\.params\.scale: 1\.0 -> 5\.0"
    ):
        Pipeline([toy_pkg.SumPixels(scale=5)], data=DATA, name="toy").run(resume=res.run_dir)


def test_resume_after_a_code_change_is_refused(runs_dir: Path) -> None:
    import json

    res = Pipeline([toy_pkg.SumPixels()], data=DATA, name="toy").run(progress=False)
    env_file = res.run_dir / "env.json"
    env = json.loads(env_file.read_text())
    assert len(env["code_digest"]) == 64
    env_file.write_text(json.dumps({**env, "code_digest": "0" * 64}))  # as if started by other code
    with pytest.raises(RunDirError, match=r"refused, the closedloop code changed .*digest 000000000000 -> "):
        Pipeline([toy_pkg.SumPixels()], data=DATA, name="toy").run(resume=res.run_dir)


def test_out_dir_of_another_run_is_refused(runs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "myrun"
    Pipeline([toy_pkg.SumPixels()], data=DATA, name="toy").run(out=out, progress=False)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RunDirError, match="already holds run"):
        Pipeline([toy_pkg.SumPixels(scale=3)], data=DATA, name="toy").run(out=out)
    assert sorted(p.name for p in out.iterdir()) == before
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a closedloop run"):
        Pipeline([toy_pkg.SumPixels()], data=DATA, name="toy").run(out=junk)


def test_only_runs_subset_and_what_it_needs(runs_dir: Path) -> None:
    res = Pipeline([toy_pkg.SumPixels(), toy_pkg.Double()], data=DATA, name="toy").run(
        only=["sum_pixels"], progress=False
    )
    st = res.summary["stages"]
    assert (
        st["data"]["status"] == "ok"
        and st["sum_pixels"]["status"] == "ok"
        and st["double"]["status"] == "skipped"
    )


def test_python_and_yaml_build_the_same_pipeline(tmp_path: Path) -> None:
    p = toy_pkg.write_config(tmp_path / "c.yaml")
    from_yaml = Pipeline.from_yaml(p)
    from_python = Pipeline(
        [toy_pkg.SumPixels(name="sum"), toy_pkg.Double(name="double")],
        data=LoadData(source="toy_pkg:ToySource", options={"n": 40}, name="data"),
        name="toy",
    )
    assert from_yaml.fingerprint() == from_python.fingerprint()


def test_stage_must_not_override_execute() -> None:
    from closedloop.core.stage import Stage

    with pytest.raises(TypeError, match="do not override execute"):

        class Bad(Stage):  # noqa: F841
            def execute(self, inputs, ctx):  # type: ignore[override]
                return None


def test_stage_ports_must_be_artifacts() -> None:
    from closedloop.core.stage import Stage, StageIO

    with pytest.raises(TypeError, match="ports must be Artifact subclasses"):

        class Bad(Stage):  # noqa: F841
            class Inputs(StageIO):
                x: int

            def run(self, inputs, ctx):
                return None


def test_edited_data_file_is_not_served_from_cache(runs_dir: Path, tmp_path: Path) -> None:
    import os

    import numpy as np
    import pandas as pd

    csv = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "y": rng.integers(0, 2, 200)})
    df.to_csv(csv, index=False)
    make = lambda: Pipeline([], data={"source": "tabular", "path": str(csv), "target": "y"}, name="tab")  # noqa: E731
    make().run(progress=False)
    assert make().run(progress=False).summary["stages"]["data"]["cached"]
    df.assign(a=df.a * 2).to_csv(csv, index=False)
    os.utime(csv, ns=(1, 1))
    assert not make().run(progress=False).summary["stages"]["data"]["cached"]


def test_inputs_from_feeds_a_port_from_a_differently_named_artifact(runs_dir: Path, tmp_path: Path) -> None:
    # a second Double reads the first one's `doubled` through its `total` port: 4x the sum
    first = toy_pkg.Double(name="double")
    second = toy_pkg.Double(name="quadruple", inputs_from={"total": "doubled"})
    pipe = Pipeline([toy_pkg.SumPixels(), first, second], data=DATA, runs_dir=runs_dir)
    assert pipe.check_wiring()["quadruple"] == {"total": "double"}
    res = pipe.run(progress=False)
    total = res.summary["stages"]["sum_pixels"]["total"]
    assert res.artifact("doubled").value == 4 * total  # the last producer of `doubled` wins
    cfg = pipe.resolved_config()
    assert cfg["stages"][-1]["inputs_from"] == {"total": "doubled"}
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text(
        'name: toy\ndata: {source: "toy_pkg:ToySource", n: 30}\nstages:\n'
        "  - kind: toy_pkg:SumPixels\n  - {kind: toy_pkg:Double, name: double}\n"
        "  - {kind: toy_pkg:Double, name: quadruple, inputs_from: {total: doubled}}\n"
    )
    assert Pipeline.from_yaml(yaml_path).check_wiring()["quadruple"] == {"total": "double"}


def test_inputs_from_errors_name_the_port_and_the_artifact(tmp_path: Path) -> None:
    from closedloop.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown input port\(s\) \['totl'\].*input ports are \['total'\]"):
        toy_pkg.Double(inputs_from={"totl": "doubled"})
    with pytest.raises(
        WiringError, match=r"needs input 'total' \(from 'nothing_here'\).*produces 'nothing_here'"
    ):
        Pipeline([toy_pkg.SumPixels(), toy_pkg.Double(inputs_from={"total": "nothing_here"})], data=DATA)
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text(
        'name: toy\ndata: {source: "toy_pkg:ToySource", n: 30}\nstages:\n'
        "  - kind: toy_pkg:SumPixels\n  - {kind: toy_pkg:Double, inputs_from: {totl: total}}\n"
    )
    with pytest.raises(ConfigError, match=r"stages\[1\]\.inputs_from: .*unknown input port"):
        Pipeline.from_yaml(yaml_path)


def test_optional_input_produced_by_a_later_stage_is_an_ordering_error(tmp_path) -> None:
    cfg = tmp_path / "o.yaml"
    cfg.write_text(
        "name: o\ndata: {source: sklearn, name: digits}\n"
        "stages: [{kind: task}, {kind: train, params: {preset: quick}}, {kind: baseline}]\n"
    )
    with pytest.raises(
        WiringError, match="'train' takes the optional input 'baseline'.*move 'baseline' before 'train'"
    ):
        Pipeline.from_yaml(cfg)
