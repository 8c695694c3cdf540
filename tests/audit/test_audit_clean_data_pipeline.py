"""The audit's de-duplicated bundle feeds later stages through `inputs_from` (YAML)."""

from __future__ import annotations

from pathlib import Path

from closedloop import Pipeline

CONFIG = """
name: dedup
runs_dir: {runs}
data: {{source: sklearn, name: digits, val_fraction: 0.2, test_fraction: 0.2}}
stages:
  - kind: task
  - kind: audit
    params: {{checks: [duplicates], drop_duplicates: true, stop_on: []}}
  - kind: baseline
    inputs_from: {{data: clean_data}}
    params: {{knn: false, n_resamples: 100}}
"""


def test_baseline_trains_on_the_audit_clean_data(tmp_path: Path) -> None:
    cfg = tmp_path / "dedup.yaml"
    cfg.write_text(CONFIG.format(runs=tmp_path / "runs"))
    pipe = Pipeline.from_yaml(cfg)
    assert pipe.check_wiring()["baseline"]["data"] == "audit"
    res = pipe.run(progress=False)
    assert res.summary["status"] == "ok", res.summary
    clean = res.artifact("clean_data")
    original = res.artifact("data")
    note = next(w for w in clean.meta.warnings if "drop_duplicates: removed" in w)
    n_dropped = int(note.split("removed ")[1].split()[0])
    assert len(clean.train) == len(original.train) - n_dropped
    assert len(clean.val) == len(original.val)  # val/test untouched
    assert (res.run_dir / "config.yaml").read_text().count("inputs_from") == 1
