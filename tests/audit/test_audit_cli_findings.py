"""What a person running ``closedloop run`` sees when the audit finds an error that does not stop the run: the
terminal says so under the audit's line, not only the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from closedloop.cli import main


def test_a_leaking_column_is_named_in_the_terminal_under_the_audit(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    table = pd.DataFrame(
        {"a": rng.normal(size=300), "b": rng.normal(size=300), "hours": y * 40.0, "label": y}
    )
    table.to_csv(tmp_path / "t.csv", index=False)
    cfg = {
        "name": "leaky",
        "seed": 0,
        "runs_dir": str(tmp_path / "runs"),
        "data": {"source": "tabular", "path": str(tmp_path / "t.csv"), "target": "label"},
        "stages": [{"kind": "task"}, {"kind": "audit", "params": {"checks": ["samples", "target_leakage"]}}],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(tmp_path / "c.yaml")]) == 0  # target leakage is not in the default stop_on
    out = capsys.readouterr().out
    audit_line = next(i for i, line in enumerate(out.splitlines()) if line.strip().startswith("audit "))
    below = out.splitlines()[audit_line + 1]
    assert "1 error finding(s): [target_leakage] 'hours' alone predicts the target" in below
    assert "status: ok" in out
