"""The command line: exit codes, one-screen errors, validate and schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import toy_pkg
from closedloop.cli import main


def test_validate_ok(tmp_path: Path, capsys) -> None:
    p = toy_pkg.write_config(tmp_path / "c.yaml")
    assert main(["validate", str(p)]) == 0
    assert "ok (3 stages" in capsys.readouterr().out


def test_user_error_is_one_screen_without_traceback(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndata: {source: sklearn}\nstages:\n  - kind: task\n    params: {metrik: auc}\n")
    r = subprocess.run(
        [sys.executable, "-m", "closedloop", "validate", str(p)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "bad.yaml" in r.stderr and "metrik" in r.stderr and "did you mean 'metric'" in r.stderr
    assert len(r.stderr.splitlines()) < 25


def test_resume_of_a_run_whose_config_or_code_changed_exits_2_naming_what(
    runs_dir: Path, tmp_path: Path, capsys
) -> None:
    flag = tmp_path / "crash"
    flag.write_text("x")
    p = toy_pkg.write_config(tmp_path / "c.yaml", double=f"crash_flag: {flag}")
    assert main(["run", str(p)]) == 1  # a crashed run, to be resumed
    run_dir = next(Path("runs/toy").iterdir())
    flag.unlink()
    capsys.readouterr()
    # the config given with --resume differs from the run's config.yaml: refused, the key named
    changed = tmp_path / "c2.yaml"
    changed.write_text(p.read_text().replace("scale: 1.0", "scale: 2.0"))
    assert main(["run", str(changed), "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "refused, the config changed" in err and "scale: 1.0 -> 2.0" in err
    # the code that started it is not the code running now: refused, the digests named
    env_file = run_dir / "env.json"
    env = json.loads(env_file.read_text())
    env_file.write_text(json.dumps({**env, "code_digest": "f" * 64}))
    assert main(["run", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "refused, the closedloop code changed" in err and "ffffffffffff -> " in err
    env_file.write_text(json.dumps(env))
    assert main(["run", "--resume", str(run_dir)]) == 0  # the same config and code: it resumes


def test_schema_is_json_with_stage_params(capsys) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "stages" in schema["properties"]
    assert any("DefineTaskParams" in k for k in schema["$defs"])


def test_run_exit_codes_and_report(runs_dir: Path, tmp_path: Path, capsys) -> None:
    flag = tmp_path / "crash"
    flag.write_text("x")
    p = toy_pkg.write_config(tmp_path / "c.yaml", double=f"crash_flag: {flag}")
    assert main(["run", str(p)]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "report:" in out
    run_dir = next(Path("runs/toy").iterdir())
    flag.unlink()
    assert main(["run", "--resume", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
