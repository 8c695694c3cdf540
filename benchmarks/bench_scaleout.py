"""Tuning workers on PneumoniaMNIST (issue #23): the tune phase at a fixed trial count with 2 worker
processes x 1 torch thread against 1 process x 2 threads (same run, interleaved, printed as a ratio), the
best trial's validation metric for both, and a worker killed with SIGKILL at 50% of the phase.

The machine is shared by 6 engineers (2 cores): absolute seconds are noisy; the ratio is measured in one
run with the arms interleaved; ``--rounds R`` repeats the pair R times and prints the spread.
Usage: python benchmarks/bench_scaleout.py [--per-split 500 --trials 6 --max-epochs 4 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_train_resume import pneumonia_config  # the same task -> baseline -> train config

ROOT = Path(__file__).resolve().parents[1]


def config(tmp: Path, name: str, train: dict[str, Any], per_split: int) -> Path:
    return pneumonia_config(tmp, name, train, per_split=per_split, runs="runs", prefix="scaleout")


def tune_study(out: Path) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    found = list(out.rglob("study.journal"))
    if not found:
        return None
    storage = JournalStorage(JournalFileBackend(str(found[0])))
    names = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=names[0], storage=storage) if names else None


def counted(t: Any) -> bool:
    import optuna

    return t.state != optuna.trial.TrialState.FAIL or bool(t.user_attrs.get("failure"))


def kill_at_half(out: Path, n: int, stop: threading.Event, killed: list[tuple[int, float]]) -> None:
    """SIGKILL the worker of a running trial once half of the trials are counted."""
    import optuna

    while not stop.is_set() and not killed:
        time.sleep(0.1)
        try:
            study = tune_study(out)
            trials = study.get_trials(deepcopy=False) if study is not None else []
        except Exception:
            continue
        running = [
            t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("pid")
        ]
        if len([t for t in trials if counted(t)]) >= n // 2 and running:
            t = running[0]
            os.kill(t.user_attrs["pid"], signal.SIGKILL)
            # work lost: the epochs the killed trial had reported
            killed.append((t.number, len(t.intermediate_values)))


def run(
    tmp: Path, name: str, train: dict[str, Any], per_split: int, n: int, kill: bool = False
) -> dict[str, Any]:
    out = tmp / f"run_{name}"
    cmd = [
        sys.executable,
        "-m",
        "closedloop.cli",
        "run",
        str(config(tmp, name, train, per_split)),
        "--out",
        str(out),
    ]
    killed: list[tuple[int, float]] = []
    stop = threading.Event()
    th = threading.Thread(target=kill_at_half, args=(out, n, stop, killed), daemon=True)
    if kill:
        th.start()
    t0 = time.time()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
    )
    wall = time.time() - t0
    stop.set()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    rec = (
        next(s for s in manifest["stages"] if s.get("name", s.get("stage")) == "train")
        if isinstance(manifest["stages"], list)
        else manifest["stages"]["train"]
    )
    timings = rec["timings"]
    tune_s = timings.get("phase tune, all attempts", timings.get("phase tune"))
    final_s = timings.get("phase final, all attempts", timings.get("phase final"))
    phase = list(out.rglob("phase_tune.json"))
    tune = json.loads(phase[0].read_text())["outcomes"]["tune"] if phase else {}
    study = tune_study(out)
    n_counted = (
        len([t for t in study.get_trials() if counted(t)]) if study is not None else tune.get("n_trials")
    )
    return {
        "tune_s": tune_s,
        "final_s": final_s,
        "wall": wall,
        "val": tune.get("val_metric"),
        "n": n_counted,
        "killed": killed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-split", type=int, default=500)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--max-epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the two arms (spread)")
    ap.add_argument("--no-fault", action="store_true", help="skip the worker-killed run")
    a = ap.parse_args()
    base = {"preset": "quick", "class_weight": "balanced", "n_trials": a.trials, "max_epochs": a.max_epochs,
            "ladder_epochs": 3, "baseline_epochs": 2, "budget_minutes": 120}  # fmt: skip
    arms = {
        "2 workers x 1 thread": {**base, "workers": 2, "threads": 2},
        "1 process x 2 threads": {**base, "workers": 1, "threads": 2},
    }
    print(
        f"PneumoniaMNIST, {a.per_split} images per split, quick preset, {a.trials} tuning trials, max "
        f"{a.max_epochs} epochs, {a.rounds} round(s);"
    )
    print("shared 2-core machine (6 engineers working): seconds are noisy, arms interleaved in one run")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ratios, controls = [], []
        for r in range(a.rounds):
            res = {k: run(tmp, f"{k.split()[0]}w_r{r}", v, a.per_split, a.trials) for k, v in arms.items()}
            w, p = res["2 workers x 1 thread"], res["1 process x 2 threads"]
            ratios.append(w["tune_s"] / p["tune_s"])
            controls.append(w["final_s"] / p["final_s"])
            print(f"round {r}: load average (1 min) {os.getloadavg()[0]:.1f} on 2 cores")
            for k, x in res.items():
                print(
                    f"  {k:<22} tune phase {x['tune_s']:6.1f} s  counted trials {x['n']}  best val metric {x['val']}"
                )
            print(
                f"  tune-phase wall ratio (2 workers / 1 process x 2 threads): {ratios[-1]:.2f} (target <= 0.7); "
                f"load control (final phase, identical in both arms) {controls[-1]:.2f} "
                f"({w['final_s']:.1f} s / {p['final_s']:.1f} s)"
            )
        if a.rounds > 1:
            print(
                f"tune-phase ratio over {a.rounds} rounds: median {statistics.median(ratios):.2f}, range "
                f"[{min(ratios):.2f}, {max(ratios):.2f}]; load control median {statistics.median(controls):.2f}, "
                f"range [{min(controls):.2f}, {max(controls):.2f}]"
            )
        if a.no_fault:
            return
        f = run(tmp, "fault", arms["2 workers x 1 thread"], a.per_split, a.trials, kill=True)
        print(
            f"fault: worker killed at 50% (trial {f['killed'][0][0] if f['killed'] else '-'}, "
            f"{f['killed'][0][1] if f['killed'] else 0} epoch(s) of its work lost): phase completed with "
            f"{f['n']} counted trials of {a.trials}; tune phase {f['tune_s']:.1f} s vs {w['tune_s']:.1f} s "
            f"unkilled (+{f['tune_s'] - w['tune_s']:.1f} s)"
        )


if __name__ == "__main__":
    main()
