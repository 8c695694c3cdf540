"""The warm-start retrain's weight, epochs and learning rate chosen on the development half, then the
report half judged once with the choice (bench_shift_recovery.py in parallel processes).

1. **Tuning (development half only).** For every setting in ``GRID`` and every shifted scenario
   (the test distribution, gaussian noise, contrast), ``bench_shift_recovery.py --half dev
   --challengers retrain --retrain-mode warm_start`` over ``--dev-draws`` draws: the retrained
   challenger alone, through ``closedloop adapt``'s rule. The declared rule picks one setting: the
   most promotions over the three scenarios; ties go to the lowest mean of the scenarios' median cost
   change on unseen production, then to the earlier setting in ``GRID`` (cheaper first).
2. **Report (report half, once).** ``bench_shift_recovery.py --half report --challengers
   recalibration,head,finetune,retrain`` with the chosen setting, every scenario (in-distribution
   included), ``--report-draws`` draws split into chunks run side by side; the per-draw lines are
   summarized by ``shift_recovery_draws.py`` (medians, promotions, the targets met or not).

Every process writes its own log under ``--logs``; this script prints the tuning table, the choice
and the report summary. Meant for a machine with many cores (each process uses one thread; the
warm start trains on CUDA when there is one).

Run: PYTHONPATH=src python benchmarks/shift_recovery_tune.py [--jobs 14] [--dev-draws 6] [--report-draws 20]
     [--grid "5:1:5e-4;20:1:5e-4"] [--skip-report]; later, the report half alone with the setting an
     earlier (saved) tuning run chose: ... --chosen 20:1:5e-4
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_shift_recovery.py"
SHIFTED = ("test", "gaussian_noise", "contrast")
GRID = [
    {"weight": w, "epochs": e, "lr": lr} for w, e, lr in itertools.product((5, 20, 50), (1, 3), (1e-4, 5e-4))
]
"""Weight (each production fit label added this many times to the ~3,700 training images), passes,
Adam's learning rate; cheaper settings first (the last tie-break)."""

COST = re.compile(r"expected cost per case vs the champion: median change ([-+\d.]+)%")
PROMOTED = re.compile(r"promoted in (\d+) of (\d+) draws")
AUC = re.compile(r"AUC champion median ([\d.]+), challenger ([\d.]+)")
PARTS = re.compile(
    r"better on the production evaluation part \(p < alpha\) in (\d+) of \d+ draws; non-inferior on the clean original test split in (\d+)"
)


def _bench(args: list[str], log: Path) -> str:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        subprocess.run(
            [sys.executable, str(BENCH), *args], stdout=f, stderr=subprocess.STDOUT, env=env, check=False
        )
    return log.read_text()


def _setting_args(s: dict) -> list[str]:
    return [
        "--retrain-mode", "warm_start", "--retrain-weight", str(s["weight"]),
        "--retrain-epochs", str(s["epochs"]), "--retrain-lr", f"{s['lr']:g}",
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--dev-draws", type=int, default=6)
    ap.add_argument("--report-draws", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=5, help="report draws per process")
    ap.add_argument("--logs", default=str(ROOT / "benchmarks" / "out" / "shift_recovery_tune"))
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="keep tuning logs under --logs that finished")
    ap.add_argument(
        "--chosen",
        default=None,
        help="'weight:epochs:lr' chosen by an earlier tuning run (its output saved): only the report half runs",
    )
    ap.add_argument(
        "--settings", type=int, default=len(GRID), help="the first N settings of GRID (a smoke run)"
    )
    ap.add_argument(
        "--grid",
        default=None,
        help="settings to try instead of GRID, 'weight:epochs:lr' separated by ';' (cheaper first)",
    )
    ap.add_argument("--scenarios", default=",".join((*SHIFTED, "in_distribution")), help="report scenarios")
    args = ap.parse_args()
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    if args.chosen:
        w, e, lr = args.chosen.split(":")
        chosen = {"weight": int(w), "epochs": int(e), "lr": float(lr)}
        print(f"setting chosen by an earlier tuning run on the development half: {args.chosen}", flush=True)
    else:
        grid = (
            [
                {"weight": int(w), "epochs": int(e), "lr": float(lr)}
                for w, e, lr in (x.split(":") for x in args.grid.split(";"))
            ]
            if args.grid
            else GRID
        )[: args.settings]
        jobs = [(i, s, sc) for i, s in enumerate(grid) for sc in SHIFTED]

        def dev(job: tuple[int, dict, str]) -> tuple[int, str, str]:
            i, s, sc = job
            name = f"dev-s{i}-{sc}"
            done = logs / f"{name}.log"
            if (
                args.reuse
                and done.is_file()
                and COST.search(done.read_text())
                and PROMOTED.search(done.read_text())
            ):
                return i, sc, done.read_text()  # finished in an earlier, cut run (same grid, same draws)
            out = _bench(
                ["--half", "dev", "--challengers", "retrain", "--scenarios", sc, "--draws", str(args.dev_draws),
                 *_setting_args(s), "--work", str(logs / "work" / name)],
                logs / f"{name}.log",
            )  # fmt: skip
            return i, sc, out

        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(dev, jobs))
        table: dict[int, dict[str, tuple[int, float, str]]] = {i: {} for i in range(len(grid))}
        for i, sc, out in results:
            c, p = COST.search(out), PROMOTED.search(out)
            a, parts = AUC.search(out), PARTS.search(out)
            if c is None or p is None:
                raise SystemExit(f"tuning run {i} {sc} failed: see {logs}/dev-s{i}-{sc}.log\n{out[-2000:]}")
            extra = (f"AUC {a.group(1)}->{a.group(2)}" if a else "") + (
                f", better {parts.group(1)}, non-inferior {parts.group(2)}" if parts else ""
            )
            table[i][sc] = (int(p.group(1)), float(c.group(1)), extra)
        print(
            f"== tuning the warm-start retrain on the DEVELOPMENT half: {len(grid)} settings x {len(SHIFTED)} "
            f"scenarios x {args.dev_draws} draws (the retrained challenger alone), {time.time() - t0:.0f} s =="
        )

        def score(i: int) -> tuple[int, float, int]:
            return (
                -sum(v[0] for v in table[i].values()),
                sum(v[1] for v in table[i].values()) / len(SHIFTED),
                i,
            )

        for i, s in enumerate(grid):
            cells = "; ".join(
                f"{sc} promoted {table[i][sc][0]}/{args.dev_draws}, cost {table[i][sc][1]:+.1f}% ({table[i][sc][2]})"
                for sc in SHIFTED
            )
            print(f"  weight {s['weight']:>3}, epochs {s['epochs']}, lr {s['lr']:g}: {cells}")
        best = min(range(len(grid)), key=score)
        chosen = grid[best]
        print(
            f"chosen by the declared rule (most promotions over the three scenarios, then the lowest mean median "
            f"cost change, then the cheaper): weight {chosen['weight']}, epochs {chosen['epochs']}, lr {chosen['lr']:g} "
            f"({-score(best)[0]} promotions, mean median cost change {score(best)[1]:+.1f}%)",
            flush=True,
        )
    if args.skip_report:
        return

    t1 = time.time()
    chunks = [
        (sc, f, min(args.chunk, args.report_draws - f))
        for sc in args.scenarios.split(",")
        for f in range(0, args.report_draws, args.chunk)
    ]

    def report(job: tuple[str, int, int]) -> Path:
        sc, first, n = job
        name = f"report-{sc}-{first}"
        _bench(
            ["--half", "report", "--challengers", "recalibration,head,finetune,retrain", "--scenarios", sc,
             "--first-draw", str(first), "--draws", str(n), *_setting_args(chosen),
             "--work", str(logs / "work" / name)],
            logs / f"{name}.log",
        )  # fmt: skip
        return logs / f"{name}.log"

    with ThreadPoolExecutor(args.jobs) as pool:
        paths = list(pool.map(report, chunks))
    print(
        f"\n== REPORT half, once, with the chosen setting: {args.report_draws} draws per scenario, challengers "
        f"recalibration,head,finetune,retrain, {time.time() - t1:.0f} s =="
    )
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from shift_recovery_draws import main as summarize

    summarize([str(p) for p in paths], targets=True)


if __name__ == "__main__":
    main()
