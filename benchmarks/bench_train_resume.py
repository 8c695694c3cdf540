"""Kill the train stage with SIGKILL during phase 4 (tuning) and, in a second run, during phase 5 (final
fit). Resume each in the same folder and compare the final test metrics with an uninterrupted run that
uses the same seed.

The phases are ended by trial and epoch counts, not by the clock: the budget is set far above what
the run needs, because a time budget that cuts a phase short depends on the machine's load.
PneumoniaMNIST-28, subsampled to 1,200/300/300 per split (seeded, stratified) so that the five runs
fit in a few minutes.

Run: .venv/bin/python benchmarks/bench_train_resume.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = (ROOT / ".." / "shared" / "data" / "medmnist").resolve()
PARAMS = {"preset": "quick", "budget_minutes": 120, "class_weight": "balanced", "n_trials": 4, "threads": 2}

CHILD = r"""
import json, sys
from pathlib import Path
from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.core.registry import SOURCES
from closedloop.core.stage import RunContext
from closedloop.stages.task import DefineTaskConfig, build_task_spec
from closedloop.stages.train import TrainModel
run, params, root = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
data = SOURCES.resolve("medmnist")(flag="pneumoniamnist", root=root, download=False, max_per_split=1200).load(0)
# max_per_split caps each split; val/test are smaller than 1,200 anyway except train
task = build_task_spec(DefineTaskConfig(), data)
ctx = RunContext(stage_name="train", stage_dir=run, seed=0, fingerprint="resume-bench",
                 test_ledger=TestLedger(run / "t.jsonl", run / "rt.jsonl", run_id="r"),
                 validation_ledger=ValidationLedger(run / "v.jsonl"))
stage = TrainModel(**params)
out = stage.execute({"data": data, "task": task}, ctx)
s = stage.summarize(out)
(run / "summary.json").write_text(json.dumps({"test": s["test"], "threshold": s["threshold"],
                                              "temperature": s["temperature"], "n_configs": s["n_configs"]}))
"""


def start(run: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), json.dumps(PARAMS), str(DATA_ROOT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(run: Path) -> dict:
    p = start(run)
    _, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"run failed:\n{err[-3000:]}")
    return json.loads((run / "summary.json").read_text())


def killed_then_resumed(run: Path, marker: str) -> tuple[dict, float]:
    p = start(run)
    work = run / "work"
    while p.poll() is None:
        hit = list(work.glob(marker)) if work.is_dir() else []
        if hit:
            os.kill(p.pid, signal.SIGKILL)  # no clean-up, like a crash or a pre-empted machine
            p.wait()
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"the run ended before {marker!r} appeared; nothing was killed")
    t = time.time()
    return finish(run), time.time() - t


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.time()
        ref = finish(tmp / "uninterrupted")
        print(
            f"uninterrupted: {time.time() - t:.0f} s; test {json.dumps({k: round(v['value'], 6) for k, v in ref['test'].items()})}"
        )
        for phase, marker in (
            ("4 (tuning, during the second trial)", "trials/0.npy"),
            ("5 (final fit, after its first epoch checkpoint)", "final_seed0.pt"),
        ):
            got, secs = killed_then_resumed(tmp / f"kill{phase[0]}", marker)
            same = all(abs(got["test"][k]["value"] - v["value"]) < 1e-12 for k, v in ref["test"].items())
            same &= got["threshold"] == ref["threshold"] and got["n_configs"] == ref["n_configs"]
            print(
                f"killed (SIGKILL) in phase {phase}; resumed in {secs:.0f} s; test "
                f"{json.dumps({k: round(v['value'], 6) for k, v in got['test'].items()})} -> "
                f"{'IDENTICAL to' if same else 'DIFFERENT from'} the uninterrupted run "
                f"(threshold {got['threshold']:.6f} vs {ref['threshold']:.6f}, n_configs {got['n_configs']} vs {ref['n_configs']})"
            )


if __name__ == "__main__":
    main()
