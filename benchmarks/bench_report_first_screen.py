"""Which decision items the report's first screen (1280x800, headless Chromium) shows, for three runs:
the quickstart, PneumoniaMNIST (quick preset) and a BreastMNIST run whose model does not beat its
baseline (a one-epoch training budget). Screenshots go to docs/.

Run from the project root:
    python benchmarks/bench_report_first_screen.py                 # runs the three pipelines first
    python benchmarks/bench_report_first_screen.py --run quickstart=runs/quickstart/<run> ...   # reuse runs
Existing runs are re-rendered with the current report code (no stage re-runs).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.threads=1"]
RUNS = {
    "quickstart": ("configs/quickstart.yaml", []),
    "pneumoniamnist": (
        "configs/pneumoniamnist.yaml",
        ["train.preset=quick", "train.final_seeds=1", "train.budget_minutes=10", *QUICK],
    ),
    "breastmnist_tiny": (
        "configs/breastmnist.yaml",
        [
            "train.preset=quick",
            "train.max_epochs=1",
            "train.n_trials=1",
            "train.ladder_epochs=2",
            "train.baseline_epochs=1",
            "train.final_seeds=1",
            "train.budget_minutes=6",
            *QUICK,
        ],
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--run", action="append", default=[], metavar="NAME=RUN_DIR", help="reuse an existing run"
    )
    ap.add_argument("--runs-dir", default="runs/bench_first_screen")
    ap.add_argument("--docs", default=str(ROOT / "docs"))
    args = ap.parse_args()
    given = dict(x.split("=", 1) for x in args.run)

    from closedloop import Pipeline
    from closedloop.report.browser import check_first_screen
    from closedloop.report.decision import decide
    from closedloop.report.evidence import gather
    from closedloop.report.rerender import rerender

    n_ok = 0
    for name, (config, overrides) in RUNS.items():
        if name in given:
            run_dir = Path(given[name])
            rerender(run_dir)
        else:
            res = Pipeline.from_yaml(ROOT / config, overrides=[f"runs_dir={args.runs_dir}", *overrides]).run(
                progress=False
            )
            run_dir = res.run_dir
        shot = Path(args.docs) / f"report_first_screen_{name}.png"
        fs = check_first_screen(run_dir / "report.html", screenshot=shot)
        d = decide(gather(run_dir))
        gate = d.baseline
        print(f"{name}: {run_dir}")
        print(
            f"  next step: {d.next_step.title}; beats baseline: "
            + ("-" if gate is None else ("yes" if gate.significant else "no"))
            + f"; acceptance: {', '.join(f'{m.metric} {m.verdict}' for m in d.metrics) or '-'}"
        )
        for item in fs.items:
            print(
                f"  {item.item:<12} {'visible' if item.visible else 'NOT visible'}"
                f"  (box top {item.top:.0f}, bottom {item.bottom:.0f} of {fs.height} px)"
            )
        print(f"  screenshot: {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}")
        n_ok += fs.all_visible
        if name == "pneumoniamnist":
            shutil.copyfile(shot, Path(args.docs) / "report_first_screen.png")
    print(f"all decision items visible on the first screen (1280x800): {n_ok} of {len(RUNS)} runs")


if __name__ == "__main__":
    main()
