"""Every example in docs/extending.md runs: its files are written to a temporary folder, its commands
go through the CLI and its Python blocks are executed, in the order of the page."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from closedloop.cli import main as cli_main
from closedloop.core.errors import ConfigError
from closedloop.core.pipeline import Pipeline

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
KINDS = {"sources", "checks", "baselines", "models", "drift", "review", "stages", "knobs"}


def page() -> tuple[dict[str, str], list[str], list[str]]:
    """(path -> file text, CLI commands, Python snippets) of the page's code blocks."""
    files: dict[str, str] = {}
    commands: list[str] = []
    snippets: list[str] = []
    for lang, body in re.findall(r"^```(\w+)\n(.*?)^```", DOC.read_text(), re.S | re.M):
        first = body.splitlines()[0]
        if lang in ("python", "yaml") and re.fullmatch(r"# [\w/]+\.(py|yaml)", first):
            files[first[2:]] = body
        elif lang == "bash":
            commands += [line for line in body.splitlines() if line.strip()]
        elif lang == "python":
            snippets.append(body)
        else:
            raise AssertionError(f"{DOC}: a {lang} block the test does not know how to run:\n{body}")
    return files, commands, snippets


def write_package(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    files, commands, snippets = page()
    assert {f"my_pkg/{k}.py" for k in KINDS} | {"pipeline.yaml"} <= set(files), sorted(files)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    for name in [m for m in sys.modules if m == "my_pkg" or m.startswith("my_pkg.")]:
        monkeypatch.delitem(sys.modules, name)  # a fresh import of this folder's package
    return commands, snippets


def test_extending_pipeline_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_package(tmp_path, monkeypatch)
    assert cli_main(["validate", "pipeline.yaml"]) == 0
    pipe = Pipeline.from_yaml("pipeline.yaml")
    assert [s.name for s in pipe.stages][-1] == "row_counts"


def test_the_model_section_the_old_page_showed_is_rejected() -> None:
    raw: dict[str, Any] = {
        "name": "p",
        "data": {"source": "sklearn", "name": "digits"},
        "stages": [{"kind": "task"}, {"kind": "train", "params": {"model": {"family": "mlp"}}}],
    }
    with pytest.raises(ConfigError, match=r"unknown key 'model'.*family"):
        Pipeline.from_dict(raw)


@pytest.mark.slow
def test_extending_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands, snippets = write_package(tmp_path, monkeypatch)
    assert commands, "the page shows no closedloop command"
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "closedloop", command
        assert cli_main(argv[1:]) == 0, command
    namespace: dict[str, Any] = {}
    for snippet in snippets:
        exec(compile(snippet, str(DOC), "exec"), namespace)
    result = namespace["result"]
    assert result.ok, result.summary
    stages = result.summary["stages"]
    # each plug-in acted where the page says it does
    assert result.artifact("data").meta.name == "blobs"
    assert any(f["check"] == "min_rows" for f in result.artifact("audit").findings)
    assert "naive_bayes" in [r.name for r in result.artifact("baseline").results]
    evaluation = result.artifact("evaluation")
    assert evaluation.chosen.family == "my_pkg.models:tiny_mlp"
    assert "dropout" not in evaluation.phases["tune"]["space"]
    assert "logit_penalty" in evaluation.phases["tune"]["space"]  # the page's knob, one class, was tuned
    assert "adam_beta2" in evaluation.phases["tune"]["space"]  # and its optimizer knob
    assert namespace["run"].artifact(namespace["RowCountsReport"]).rows == {"train": 420, "val": 90}
    assert namespace["evaluation"].chosen.family == evaluation.chosen.family  # read back = in memory
    assert {"name": "my_pkg.drift:MeanShift", "params": {"feature": 0}} in stages["monitor"]["reference"][
        "tests"
    ]
    assert stages["row_counts"]["rows"] == {"train": 420, "val": 90}
    assert stages["monitor"]["reference"]["review_strategy"] == "my_pkg.review:EveryOther"  # the page's
