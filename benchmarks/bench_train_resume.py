"""Resume means identical, and a crash buys no time (issue #27). Three parts, each run through the CLI
in subprocesses killed with SIGKILL at named kill points (``CLOSEDLOOP_KILL_AT``,
:mod:`closedloop.core.killpoints`), then ``closedloop run --resume``:

1. **quickstart kill battery**: ``configs/quickstart.yaml`` with a budget far above what it needs (the
   trial and epoch counts, not the clock, end each phase), killed inside every train phase, the audit
   and the export. The kills are chained (killed at point 1, resumed and killed at point 2, ...,
   resumed to the end) and the end is compared with an uninterrupted run: weights and ONNX sha256,
   ledgers, summary metrics.
2. **PneumoniaMNIST, quick preset** (subsampled to 1,200 per split, seeded and stratified): one run
   killed inside tuning, one inside the final fit, each resumed and compared with an uninterrupted run.
3. **Budget under synthetic load**: the PneumoniaMNIST train stage with a 1-minute budget while two
   busy-looping processes hold both cores, uninterrupted and killed inside tuning + resumed: seconds
   spent per phase over all attempts against the phase's deadline, and the decision saying how much
   budget the resumed attempt had left.

Run: .venv/bin/python benchmarks/bench_train_resume.py [--parts 1,2,3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = (ROOT / ".." / "shared" / "data" / "medmnist").resolve()
if not DATA_ROOT.is_dir():
    DATA_ROOT = Path("/work/shared/data/medmnist")

QUICKSTART_CHAIN = [
    "audit/label_issues/cnn/fold1/epoch3",
    "train/sanity/step3",
    "train/beat_baseline/epoch1",
    "train/scale_up/rung2/epoch2",
    "train/tune/trial1/epoch2",
    "train/tune/saved",
    "train/final/member0/epoch2",
    "export/fp32",
    "export/latency",
]


def cli(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CI": "1"}
    env.pop("CLOSEDLOOP_KILL_AT", None)
    if kill_at:
        env["CLOSEDLOOP_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "closedloop", "run", *args], env=env, capture_output=True, text=True
    )


def must(done: subprocess.CompletedProcess, what: str, killed: bool = False) -> None:
    ok = done.returncode == -signal.SIGKILL if killed else done.returncode == 0
    if not ok:
        raise SystemExit(f"{what}: rc {done.returncode}\n{done.stderr[-3000:]}")


def identity(run: Path) -> dict[str, Any]:
    """What must be identical: weights and ONNX files, ledgers (without times), summary metrics."""
    files = {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((run / "stages").rglob("*"))
        if p.is_file()
        and (p.suffix == ".onnx" or (p.parent.name == "model" and "artifacts" in p.parts))
        and ".tmp" not in str(p)
    }

    def lines(name: str, drop: tuple[str, ...]) -> list[dict[str, Any]]:
        rows = [json.loads(x) for x in (run / name).read_text().splitlines() if x.strip()]
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    train = json.loads((run / "summary.json").read_text())["stages"]["train"]
    keys = ("test", "val", "heldout", "temperature", "threshold", "n_configs", "model")
    return {
        "files": files,
        "validation_ledger": lines("validation_ledger.jsonl", ("time",)),
        "test_ledger": lines("test_ledger.jsonl", ("time", "run_id")),
        "metrics": {k: train.get(k) for k in keys},
    }


def compare(ref: Path, run: Path) -> tuple[bool, str]:
    a, b = identity(ref), identity(run)
    n_files = len(a["files"])
    n_onnx = sum(k.endswith(".onnx") for k in a["files"])
    diff = [k for k in a if a[k] != b[k]]
    same = not diff
    test = {k: round(v["value"], 6) for k, v in b["metrics"]["test"].items()}
    return same, (
        f"{'IDENTICAL' if same else 'DIFFERENT (' + ', '.join(diff) + ')'}: {n_files} weight/ONNX files "
        f"({n_onnx} ONNX) sha256, {len(b['validation_ledger'])} validation-ledger rows, "
        f"{len(b['test_ledger'])} test opening(s), test {json.dumps(test)}, temperature "
        f"{b['metrics']['temperature']:.6f}"
    )


def train_dir(run: Path) -> Path:
    return next(p for p in (run / "stages").iterdir() if p.name.endswith("_train"))


def decisions(run: Path) -> list[str]:
    ev = json.loads((train_dir(run) / "artifacts" / "evaluation" / "artifact.json").read_text())
    return [f"{d['phase']}: {d['decision']}" for d in ev["decisions"]]


# -- part 1 -----------------------------------------------------------------------------------------
def quickstart_battery(tmp: Path) -> None:
    tmp.mkdir(parents=True)
    cfg = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    cfg["stages"] = [s for s in cfg["stages"] if s["kind"] != "monitor"]  # the battery ends at export
    for s in cfg["stages"]:
        if s["kind"] == "train":
            s["params"]["budget_minutes"] = 60
    out = {}
    for name in ("ref", "kill"):
        cfg["runs_dir"] = str(tmp / f"runs_{name}")
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    t = time.time()
    must(cli([str(tmp / "ref.yaml"), "--out", str(tmp / "ref")]), "uninterrupted quickstart")
    out["ref"] = time.time() - t
    print(f"[1] quickstart (train budget 60 min, monitor left out), uninterrupted: {out['ref']:.0f} s")
    run = tmp / "killed"
    t = time.time()
    for i, point in enumerate(QUICKSTART_CHAIN):
        args = [str(tmp / "kill.yaml"), "--out", str(run)] if i == 0 else ["--resume", str(run)]
        must(cli(args, kill_at=point), f"kill at {point}", killed=True)
        print(f"    killed (SIGKILL) at {point}")
    must(cli(["--resume", str(run)]), "final resume")
    same, text = compare(tmp / "ref", run)
    print(
        f"    {len(QUICKSTART_CHAIN)} kills, {len(QUICKSTART_CHAIN)} resumes + 1 to the end ({time.time() - t:.0f} s): {text}"
    )
    print(
        f"[1] kill battery on quickstart: {len(QUICKSTART_CHAIN)} kill points x {'identical' if same else 'NOT identical'}"
    )
    resumed = [d for d in decisions(run) if "resumed after an interruption" in d]
    for d in resumed[:2]:
        print(f"    decision: {d}")


# -- parts 2 and 3 ------------------------------------------------------------------------------------
def pneumonia_config(tmp: Path, name: str, train: dict[str, Any]) -> Path:
    cfg = {
        "name": f"resume_{name}",
        "seed": 0,
        "runs_dir": str(tmp / f"runs_{name}"),
        "data": {
            "source": "medmnist",
            "flag": "pneumoniamnist",
            "root": str(DATA_ROOT),
            "download": False,
            "max_per_split": 1200,
        },
        "stages": [
            {"kind": "task"},
            {"kind": "baseline"},
            {"kind": "train", "params": train},
        ],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


QUICK = {"preset": "quick", "class_weight": "balanced", "n_trials": 4, "threads": 2}


def pneumonia_identity(tmp: Path) -> None:
    tmp.mkdir(parents=True)
    train = {**QUICK, "budget_minutes": 120}
    t = time.time()
    must(cli([str(pneumonia_config(tmp, "p_ref", train)), "--out", str(tmp / "p_ref")]), "uninterrupted")
    print(f"[2] PneumoniaMNIST quick preset (1,200 per split), uninterrupted: {time.time() - t:.0f} s")
    for point in ("train/tune/trial1/epoch2", "train/final/member0/epoch2"):
        run = tmp / f"p_{point.split('/')[1]}"
        cfg = pneumonia_config(tmp, run.name, train)
        must(cli([str(cfg), "--out", str(run)], kill_at=point), f"kill at {point}", killed=True)
        t = time.time()
        must(cli(["--resume", str(run)]), "resume")
        same, text = compare(tmp / "p_ref", run)
        print(f"    killed at {point}, resumed in {time.time() - t:.0f} s: {text}")


def busy() -> None:
    while True:
        pass


def spent_vs_budget(run: Path, budget_s: float) -> list[str]:
    timings = json.loads((train_dir(run) / "stage.json").read_text())["timings"]
    shares = {"sanity": 0.03, "beat_baseline": 0.10, "scale_up": 0.27, "tune": 0.40, "final": 0.20}
    lines, upto, cum = [], 0.0, 0.0
    for phase, share in shares.items():
        spent = float(timings.get(f"phase {phase}, all attempts", 0.0))
        if phase == "tune":
            spent += float(timings.get("phase cross_validate, all attempts", 0.0))
        upto += share * budget_s
        cum += spent
        lines.append(
            f"{phase} {spent:.1f} s (deadline at {upto:.0f} s, ended at {cum:.1f} s = {cum / upto:.0%} of it)"
        )
    lines.append(
        f"total {cum:.1f} s of the {budget_s:.0f} s budget = {cum / budget_s:.0%}; attempts {timings.get('attempts')}"
    )
    return lines


def budget_under_load(tmp: Path) -> None:
    tmp.mkdir(parents=True)
    budget_min = 1.0
    train = {**QUICK, "budget_minutes": budget_min, "n_trials": 20}
    load = [mp.Process(target=busy, daemon=True) for _ in range(2)]
    for p in load:
        p.start()
    try:
        ref = tmp / "b_ref"
        must(cli([str(pneumonia_config(tmp, "b_ref", train)), "--out", str(ref)]), "uninterrupted under load")
        run = tmp / "b_kill"
        cfg = pneumonia_config(tmp, "b_kill", train)
        must(cli([str(cfg), "--out", str(run)], kill_at="train/tune/trial0/epoch2"), "kill", killed=True)
        time.sleep(5)  # the time between the crash and the resume is not the run's
        must(cli(["--resume", str(run)]), "resume under load")
    finally:
        for p in load:
            p.kill()
    print(f"[3] budget {budget_min * 60:.0f} s under synthetic load (2 busy processes on 2 cores):")
    for name, where in (("uninterrupted", ref), ("killed in tune + resumed", run)):
        print(f"    {name}: " + "; ".join(spent_vs_budget(where, budget_min * 60)))
        for d in decisions(where):
            if "time budget" in d or "resumed after" in d:
                print(f"      decision: {d}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="1,2,3")
    parts = ap.parse_args().parts.split(",")
    print(f"# machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start (shared)")
    with tempfile.TemporaryDirectory() as tmp:
        if "1" in parts:
            quickstart_battery(Path(tmp) / "q")
        if "2" in parts:
            pneumonia_identity(Path(tmp) / "p")
        if "3" in parts:
            budget_under_load(Path(tmp) / "b")


if __name__ == "__main__":
    main()
