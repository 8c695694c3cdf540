"""Resume means identical, and a crash buys no time (issue #27). Three parts, each run through the CLI
in subprocesses killed with SIGKILL, then ``closedloop run --resume``:

1. **quickstart kill battery**: ``configs/quickstart.yaml`` with a budget far above what it needs (the
   trial and epoch counts, not the clock, end each phase), killed at named kill points
   (``CLOSEDLOOP_KILL_AT``, :mod:`closedloop.core.killpoints`) inside every train phase, the audit and
   the export. The kills are chained (killed at point 1, resumed and killed at point 2, ...,
   resumed to the end) and the end is compared with an uninterrupted run: weights and ONNX sha256,
   ledgers, summary metrics.
2. **PneumoniaMNIST, quick preset made small for a shared 2-core machine** (400 images per split,
   seeded and stratified; 2 trials of at most 4 epochs, 3-epoch ladder): one run killed inside
   tuning, one inside the final fit, each resumed and compared with an uninterrupted run.
3. **Budget under synthetic load**: the quickstart's data and train settings with a 3-minute budget
   and 200 trials (so the clock, not a count, ends the run) while ``--load`` busy-looping processes
   (2: both cores; 0: a run as quiet as the shared machine allows) hold the cores, over ``--draws``
   seeds from ``--seed0``; uninterrupted, and killed (SIGKILL to the process group) at half the budget
   after the train stage's clock started, then resumed: per phase, the seconds spent over all
   attempts against what the phase was given (target: within 10 %), where it ended against its
   deadline, the total against the budget, the measured costs (with the final reserve beside the
   final evaluation's seconds) and the decisions saying what the clock cut and how much budget the
   resumed attempt had left; then per phase, spent / given over every run.

Run: .venv/bin/python benchmarks/bench_train_resume.py [--parts 1,2,3] [--draws 3] [--budgets 180] [--load 2]
[--seed0 0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from closedloop.core.killpoints import cli_command, fingerprint_differences, resume_fingerprint, run_cli

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


def must(done: subprocess.CompletedProcess, what: str, killed: bool = False) -> None:
    ok = done.returncode == -signal.SIGKILL if killed else done.returncode == 0
    if not ok:
        raise SystemExit(f"{what}: rc {done.returncode}\n{done.stderr[-3000:]}")


def compare(ref: Path, run: Path) -> tuple[bool, str]:
    a, b = resume_fingerprint(ref), resume_fingerprint(run)
    n_files = len(a["files"])
    n_onnx = sum(k.endswith(".onnx") for k in a["files"])
    diff = fingerprint_differences(a, b)
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
    for name in ("ref", "kill"):
        cfg["runs_dir"] = str(tmp / f"runs_{name}")
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    t = time.time()
    must(run_cli([str(tmp / "ref.yaml"), "--out", str(tmp / "ref")]), "uninterrupted quickstart")
    print(f"[1] quickstart (train budget 60 min, monitor left out), uninterrupted: {time.time() - t:.0f} s")
    run = tmp / "killed"
    t = time.time()
    for i, point in enumerate(QUICKSTART_CHAIN):
        args = [str(tmp / "kill.yaml"), "--out", str(run)] if i == 0 else ["--resume", str(run)]
        must(run_cli(args, kill_at=point), f"kill at {point}", killed=True)
        print(f"    killed (SIGKILL) at {point}")
    must(run_cli(["--resume", str(run)]), "final resume")
    same, text = compare(tmp / "ref", run)
    n = len(QUICKSTART_CHAIN)
    print(f"    {n} kills, {n} resumes + 1 to the end ({time.time() - t:.0f} s): {text}")
    print(f"[1] kill battery on quickstart: {n} kill points x {'identical' if same else 'NOT identical'}")
    resumed = [d for d in decisions(run) if "resumed after an interruption" in d]
    for d in resumed[:2]:
        print(f"    decision: {d}")


# -- parts 2 and 3 ------------------------------------------------------------------------------------
def pneumonia_config(
    tmp: Path,
    name: str,
    train: dict[str, Any],
    *,
    per_split: int,
    seed: int = 0,
    runs: str | None = None,
    prefix: str = "resume",
    export: dict[str, Any] | None = None,
) -> Path:
    """task -> baseline -> train on PneumoniaMNIST (``per_split`` images per split), then export when
    ``export`` (its params) is given, written to ``tmp``."""
    cfg = {
        "name": f"{prefix}_{name}",
        "seed": seed,
        "runs_dir": str(tmp / (runs or f"runs_{name}")),
        "data": {
            "source": "medmnist",
            "flag": "pneumoniamnist",
            "root": str(DATA_ROOT),
            "download": False,
            "max_per_split": per_split,
        },
        "stages": [{"kind": "task"}, {"kind": "baseline"}, {"kind": "train", "params": train}],
    }
    if export is not None:
        cfg["stages"].append({"kind": "export", "params": export})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


QUICK = {"preset": "quick", "class_weight": "balanced", "threads": 2}
SMALL = {**QUICK, "n_trials": 2, "max_epochs": 4, "ladder_epochs": 3, "baseline_epochs": 2}
"""Part 2: the quick preset cut down so three runs and two resumes finish on a shared 2-core machine."""


EXPORT = {"latency": {"repeats": 5, "warmup": 1}, "bootstrap": 200}
"""Part 2's export (fp32 and int8 ONNX; latency measured briefly: its wall times are not compared)."""


def pneumonia_identity(tmp: Path) -> None:
    tmp.mkdir(parents=True)
    train = {**SMALL, "budget_minutes": 120}
    per = 400
    t = time.time()
    ref_cfg = pneumonia_config(tmp, "p_ref", train, per_split=per, export=EXPORT)
    must(run_cli([str(ref_cfg), "--out", str(tmp / "p_ref")]), "uninterrupted")
    print(
        f"[2] PneumoniaMNIST quick preset made small ({per} per split, 2 trials, <= 4 epochs, "
        f"3-epoch ladder; budget 120 min, not binding; then export), uninterrupted: {time.time() - t:.0f} s"
    )
    n_same = 0
    points = ("train/tune/trial1/epoch1", "train/final/member0/epoch1")
    for point in points:
        run = tmp / f"p_{point.split('/')[1]}"
        cfg = pneumonia_config(tmp, run.name, train, per_split=per, export=EXPORT)
        must(run_cli([str(cfg), "--out", str(run)], kill_at=point), f"kill at {point}", killed=True)
        t = time.time()
        must(run_cli(["--resume", str(run)]), "resume")
        same, text = compare(tmp / "p_ref", run)
        n_same += same
        print(f"    killed at {point}, resumed in {time.time() - t:.0f} s: {text}")
    print(f"[2] PneumoniaMNIST kills in tune and final: {n_same} of {len(points)} identical")


def busy(until: float) -> None:
    """One core's worth of synthetic load that stops by itself at ``until`` (``time.time()``)."""
    while time.time() < until:
        pass


PHASES = ("sanity", "beat_baseline", "scale_up", "tune", "final")
SHARES = {"sanity": 0.03, "beat_baseline": 0.10, "scale_up": 0.27, "tune": 0.40, "final": 0.20}


BORROWED = "tune seconds borrowed from the final share"
"""stage.json timings: how far tuning ran into the final's share (closedloop.stages.train.final_plan)."""


@dataclass
class Quality:
    """What a budget-bound run shipped: the test accuracy and the final fit's epochs against the tuned."""

    test_acc: float | None
    final_epochs: int | None
    tuned_epochs: int | None

    def text(self) -> str:
        acc = "-" if self.test_acc is None else f"{self.test_acc:.3f}"
        chose = "the capacity rung's (no trial beat it)" if self.tuned_epochs is None else self.tuned_epochs
        return (
            f"test accuracy {acc}; the final fit trained {self.final_epochs} epoch(s), tuning chose {chose}"
        )


def quality(run: Path) -> Quality:
    """The train stage's test accuracy (summary.json) and, from the decision log, the final fit's
    epochs and the tuned (chosen) epochs (None when tuning kept the capacity rung)."""
    train = json.loads((run / "summary.json").read_text())["stages"]["train"]
    acc = (train.get("test") or {}).get("acc")
    final = tuned = None
    for d in decisions(run):
        if m := re.search(r"^final: trained the chosen configuration .* for (\d+) epoch", d):
            final = int(m.group(1))
        if m := re.search(r"best epoch (\d+)\)", d):
            tuned = int(m.group(1))
    return Quality(None if acc is None else float(acc["value"]), final, tuned)


def timings_of(run: Path) -> dict[str, Any]:
    return json.loads((train_dir(run) / "stage.json").read_text())["timings"]


def spent(run: Path) -> tuple[dict[str, float], int]:
    """Seconds per phase summed over every attempt (the budget's clock, ``work/clock.json``)."""
    timings = timings_of(run)
    out = {p: float(timings.get(f"phase {p}, all attempts", 0.0)) for p in PHASES}
    out["tune"] += float(timings.get("phase cross_validate, all attempts", 0.0))
    return out, int(timings.get("attempts", 1))


def phase_table(
    per_phase: dict[str, float],
    budget_s: float,
    sanity_given: float | None = None,
    borrowed: float = 0.0,
) -> tuple[list[str], dict[str, float]]:
    """Per phase: its share of the budget, its deadline (cumulative: unused time rolls over; tune's
    moved later by the seconds it ``borrowed`` of the final's share, which the final fit was not
    expected to need), what it was given (its deadline less where the phase before it ended; for
    sanity, what the run recorded when its least measured cost was above its share), the seconds it
    spent over all attempts, spent / given, where it ended, and end / deadline. Also returns spent /
    given per phase."""
    head = (
        "phase",
        "share",
        "budget s",
        "deadline s",
        "given s",
        "spent s",
        "spent/given",
        "ends s",
        "end/deadline",
    )
    rows = ["      " + f"{head[0]:<14}" + "".join(f"{h:>13}" for h in head[1:])]
    upto, cum = 0.0, 0.0
    ratios: dict[str, float] = {}
    for phase in PHASES:
        upto += SHARES[phase] * budget_s
        ends_by = upto + (borrowed if phase == "tune" else 0.0)
        given = ends_by - cum
        if phase == "sanity" and sanity_given is not None:
            given = max(given, sanity_given)
        if given > 0:
            ratios[phase] = per_phase[phase] / given
        cum += per_phase[phase]
        cells = (
            f"{SHARES[phase]:.0%}",
            f"{SHARES[phase] * budget_s:.1f}",
            f"{ends_by:.1f}",
            f"{given:.1f}",
            f"{per_phase[phase]:.1f}",
            f"{per_phase[phase] / given:.0%}" if given > 0 else "-",
            f"{cum:.1f}",
            f"{cum / ends_by:.0%}",
        )
        rows.append("      " + f"{phase:<14}" + "".join(f"{c:>13}" for c in cells))
    return rows, ratios


def kill_at_time(args: list[str], run: Path, after_s: float) -> str:
    """Run ``closedloop run ARGS`` and SIGKILL its process group ``after_s`` seconds after the train
    stage's clock file appears (a crash at a moment, as a user would see one); returns the phase the
    clock was in."""
    cmd, env = cli_command(args)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    seen: float | None = None
    clock: Path | None = None
    while proc.poll() is None:
        if clock is None and run.is_dir():
            clock = next(run.rglob("clock.json"), None)
            if clock is not None:
                seen = time.time()
        if seen is not None and time.time() - seen >= after_s:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise SystemExit(f"not killed at {after_s:.0f} s: rc {proc.returncode}\n{proc.stderr.read()[-3000:]}")
    record = json.loads(clock.read_text()) if clock is not None else {"spent": {}}
    return list(record["spent"])[-1] if record["spent"] else "setup"


def budget_config(tmp: Path, name: str, budget_s: float, seed: int) -> Path:
    """The quickstart's data and train settings (digits, quick preset) with a budget a user would set
    and more trials than it can run, so the clock, not a count, ends the run: task -> baseline -> train."""
    cfg = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    train = next(s for s in cfg["stages"] if s["kind"] == "train")["params"]
    train.update({"budget_minutes": budget_s / 60, "n_trials": 200, "max_epochs": 30, "ladder_epochs": 8})
    cfg.update({"name": f"budget_{name}", "seed": seed, "runs_dir": str(tmp / f"runs_{name}")})
    cfg["stages"] = [{"kind": "task"}, {"kind": "baseline"}, {"kind": "train", "params": train}]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def budget_under_load(
    tmp: Path, budgets: list[float], draws: int, load_procs: int = 2, seed0: int = 0
) -> None:
    tmp.mkdir(parents=True)
    # bounded: busy processes (one per core) that stop by themselves after the longest the runs can take
    bound = time.time() + sum(budgets) * draws * 2 * 3 + 600
    load = [mp.Process(target=busy, args=(bound,), daemon=True) for _ in range(load_procs)]
    for p in load:
        p.start()
    ratios: dict[str, list[float]] = {"uninterrupted": [], "killed": []}
    quality_of: dict[str, list[Quality]] = {"uninterrupted": [], "killed": []}
    per_phase_ratios: dict[str, list[float]] = {p: [] for p in PHASES}
    plan_vs_fit: list[float] = []
    what = (
        f"under synthetic load ({load_procs} busy processes on 2 cores, stopping by themselves)"
        if load_procs
        else "without synthetic load (as quiet as the shared machine allows)"
    )
    print(
        f"[3] quickstart data and train settings, 200 trials (the clock ends the run), {what}, budgets "
        f"{', '.join(f'{b:.0f} s' for b in budgets)}, seeds {seed0}..{seed0 + draws - 1}:"
    )
    try:
        for seed in range(seed0, seed0 + draws):
            for budget_s in budgets:
                for kind in ("uninterrupted", "killed"):
                    name = f"b{budget_s:.0f}_{kind}_s{seed}"
                    cfg = budget_config(tmp, name, budget_s, seed)
                    run = tmp / name
                    t = time.time()
                    where = ""
                    if kind == "uninterrupted":
                        must(run_cli([str(cfg), "--out", str(run)]), name)
                    else:
                        phase = kill_at_time([str(cfg), "--out", str(run)], run, budget_s / 2)
                        where = f", killed (SIGKILL) {budget_s / 2:.0f} s into train (in {phase})"
                        time.sleep(5)  # the time between the crash and the resume is not the run's
                        must(run_cli(["--resume", str(run)]), f"resume {name}")
                    per_phase, attempts = spent(run)
                    total = sum(per_phase.values())
                    ratios[kind].append(total / budget_s)
                    print(
                        f"    seed {seed}, budget {budget_s:.0f} s, {kind}{where}: train phases spent "
                        f"{total:.1f} s = {total / budget_s:.0%} of the budget over {attempts} attempt(s) "
                        f"(wall {time.time() - t:.0f} s incl. data, task, baseline, report)"
                    )
                    tm = timings_of(run)
                    borrowed = float(tm.get(BORROWED, 0.0))
                    rows, phase_ratios = phase_table(
                        per_phase, budget_s, tm.get("sanity given seconds"), borrowed
                    )
                    for row in rows:
                        print(row)
                    for phase, r in phase_ratios.items():
                        per_phase_ratios[phase].append(r)
                    fixed = {k: v for k, v in tm.items() if "seconds" in k or "fixed" in k}
                    print("      measured costs: " + ", ".join(f"{k} {v:.1f}" for k, v in fixed.items()))
                    for d in decisions(run):
                        if any(
                            w in d
                            for w in (
                                "time budget",
                                "resumed after",
                                "cut short",
                                "reserve",
                                "least cost",
                                "re-planned",
                                "final phase's share",
                            )
                        ):
                            print(f"      decision: {d}")
                    q = quality(run)
                    quality_of[kind].append(q)
                    print(
                        f"      model: {q.text()}"
                        + (f"; tune borrowed {borrowed:.1f} s of the final's share" if borrowed else "")
                    )
                    plan_s, fit_s = (
                        tm.get("final plan seconds per epoch"),
                        tm.get("final fit seconds per epoch"),
                    )
                    if plan_s and fit_s:  # the first plan's guess against the fit's own epochs
                        plan_vs_fit.append(plan_s / fit_s)
                        print(
                            f"      final: first plan ~{plan_s:.1f} s per epoch, the fit's own epochs "
                            f"~{fit_s:.1f} s at its latest re-plan (plan / fit {plan_s / fit_s:.2f})"
                        )
    finally:
        for p in load:
            p.kill()
    for phase, rs in per_phase_ratios.items():
        if rs:
            over = sum(r > 1.10 for r in rs)
            print(
                f"[3] {phase}: spent / given min {min(rs):.0%}, median {statistics.median(rs):.0%}, "
                f"max {max(rs):.0%} over {len(rs)} run(s); over 110% in {over} of {len(rs)}"
            )
    if plan_vs_fit:
        print(
            f"[3] final: first plan / the fit's own seconds per epoch min {min(plan_vs_fit):.2f}, median "
            f"{statistics.median(plan_vs_fit):.2f}, max {max(plan_vs_fit):.2f} over {len(plan_vs_fit)} "
            "run(s)"
        )
    for kind, qs in quality_of.items():
        accs = [q.test_acc for q in qs if q.test_acc is not None]
        if accs:
            full = sum(
                q.final_epochs is not None and q.tuned_epochs is not None and q.final_epochs >= q.tuned_epochs
                for q in qs
            )
            print(
                f"[3] {kind}: test accuracy (digits test split, never trained on) min {min(accs):.3f}, "
                f"median {statistics.median(accs):.3f}, max {max(accs):.3f} over {len(accs)} run(s); "
                f"the final fit trained all its tuned epochs in {full} of {len(qs)}"
            )
    every = [r for rs in ratios.values() for r in rs]
    for kind, rs in [*ratios.items(), ("every run", every)]:
        if not rs:
            continue
        within = sum(abs(r - 1) <= 0.10 for r in rs)
        print(
            f"[3] {kind}: train phases spent / budget min {min(rs):.0%}, median {statistics.median(rs):.0%}, "
            f"max {max(rs):.0%} over {len(rs)} run(s); within 90-110% in {within} of {len(rs)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="1,2,3")
    ap.add_argument("--draws", type=int, default=2, help="part 3: seeds per budget")
    ap.add_argument("--budgets", default="180", help="part 3: budgets in seconds")
    ap.add_argument("--load", type=int, default=2, help="part 3: busy processes (0: a quiet run)")
    ap.add_argument("--seed0", type=int, default=0, help="part 3: first seed")
    args = ap.parse_args()
    parts = args.parts.split(",")
    print(f"# machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start (shared)")
    with tempfile.TemporaryDirectory() as tmp:
        if "1" in parts:
            quickstart_battery(Path(tmp) / "q")
        if "2" in parts:
            pneumonia_identity(Path(tmp) / "p")
        if "3" in parts:
            budgets = [float(b) for b in args.budgets.split(",")]
            budget_under_load(Path(tmp) / "b", budgets, args.draws, args.load, args.seed0)


if __name__ == "__main__":
    main()
