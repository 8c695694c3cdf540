"""Same config + seed before and after the training refactor (issue 14): identical numbers?

Runs each config with the pre-refactor code (a detached worktree of the commit the refactor branched
from, ``--pre``) and with this checkout's code, each with ``--no-cache --out <tmp>`` and a budget
large enough that no wall-time budget cut occurs (``train.budget_minutes=1000``; so the comparison
does not depend on machine load), only up to the export stage. Compares the test metrics in
``summary.json``, the validation ledger rows (without times), the sha256 of every exported ONNX
file and of every JSON file saved as an artifact (the typed records), summary.json, decision.json and
the report's text; prints IDENTICAL / DIFFERENT per item.

    python benchmarks/bench_refactor_identity.py --pre /tmp/pre_trainsplit [--only quickstart]
    python benchmarks/bench_refactor_identity.py --pre A --new A   # old vs old: the check is stable
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "quickstart": ["configs/quickstart.yaml"],
    "breastmnist_quick": ["configs/breastmnist.yaml", "--set", "train.preset=quick"],
    "pneumoniamnist_quick": ["configs/pneumoniamnist.yaml", "--set", "train.preset=quick"],
    "tabular": ["configs/tabular_breast_cancer.yaml"],
    # the LR range test phase is off by default: this case runs it (session 10, its loop moved)
    "quickstart_lr_finder": ["configs/quickstart.yaml", "--set", "train.lr_finder=true"],
}
MEDMNIST = {"breastmnist_quick", "pneumoniamnist_quick"}
"""Cases that read MedMNIST files: both sides get the same ``--set data.root=`` (``--data-root``)."""
NO_CUT = ["--set", "train.budget_minutes=1000"]
VOLATILE = {"time", "timestamp", "seconds", "created", "at", "wall_s", "run_id", "run_dir"}
# wall times also sit under these keys in summary.json / decision.json
VOLATILE_SUMMARY = VOLATILE | {
    "timings",
    "fit_seconds",
    "latency_ms",
    "latency",
    "p50_ms",
    "p95_ms",
    "p99_ms",
}


def run(code: Path, args: list[str], out: Path, log: Path) -> None:
    """``closedloop run`` with ``code``'s sources, from this checkout (so ../shared data resolves)."""
    if (out / "summary.json").is_file():  # reuse a finished run (--keep)
        return
    env = {**os.environ, "PYTHONPATH": str(code / "src")}
    cfg = str(ROOT / args[0])  # same YAML for both sides; relative data paths resolve from here
    cmd = [sys.executable, "-m", "closedloop", "run", cfg, *args[1:], *NO_CUT]
    cmd += ["--no-cache", "--out", str(out), "--only", "export"]
    # each side keeps its own global test ledger: the second opening of the same pipeline's test split
    # would otherwise be refused (runs_dir is not part of any fingerprint)
    cmd += ["--set", f"runs_dir={out.parent / (out.name + '_runs')}"]
    with open(log, "w") as fh:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=fh, stderr=subprocess.STDOUT)


def test_metrics(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    stages = s.get("stages", s)
    train = stages.get("train", stages)
    train = train.get("summary", train)
    return train["test"]


def ledger(run_dir: Path) -> list[dict]:
    paths = sorted(run_dir.rglob("validation_ledger.jsonl"))
    rows = []
    for p in paths:
        for line in p.read_text().splitlines():
            if line.strip():
                rows.append({k: v for k, v in json.loads(line).items() if k not in VOLATILE})
    return rows


def _clean(obj: Any, run_dir: Path) -> Any:
    if isinstance(obj, dict):
        return {
            k: _clean(v, run_dir) for k, v in obj.items() if k not in VOLATILE_SUMMARY and "seconds" not in k
        }
    if isinstance(obj, list):
        return [_clean(v, run_dir) for v in obj]
    if isinstance(obj, str):
        return _unpath(obj, run_dir)
    return obj


def _unpath(text: str, run_dir: Path) -> str:
    """``run_dir`` (as given, and resolved: a run reused through a symlink, ``--keep``) -> ``<RUN>``."""
    return text.replace(str(run_dir.resolve()), "<RUN>").replace(str(run_dir), "<RUN>")


def summary_json(run_dir: Path) -> dict:
    """summary.json without wall times and the run's own path."""
    return _clean(json.loads((run_dir / "summary.json").read_text()), run_dir)


def decision_json(run_dir: Path) -> dict:
    """decision.json without wall times: a constraint measured in ms (the p95 latency) is a wall time."""
    d = _clean(json.loads((run_dir / "decision.json").read_text()), run_dir)
    for c in d.get("constraints") or []:
        if isinstance(c, dict) and c.get("unit") == "ms":
            c.pop("value", None)
            c.pop("met", None)
    return d


def report_text(run_dir: Path) -> list[str]:
    """report.html's visible text (tags, inlined images, wall times and the run's path removed)."""
    page = (run_dir / "report.html").read_text()
    page = re.sub(r"<style>.*?</style>|<img [^>]*>", "", page, flags=re.S)
    text = _unpath(re.sub(r"<[^>]+>", " ", page), run_dir)
    text = re.sub(r"\b\d+(\.\d+)?\s*(s|ms)\b", "<T>", text)
    return [line.strip() for line in text.splitlines() if line.strip()]


def numbers_masked(lines: list[str]) -> list[str]:
    """The report's lines with every number and clock time masked (what is left: the words)."""
    return [re.sub(r"\d+(?:[.:]\d+)*(?:e-?\d+)?", "#", line) for line in lines]


def differing_lines(x: list[str], y: list[str]) -> str:
    """The first words of the lines that differ (which tables: the ladder's seconds, the latencies)."""
    return ", ".join(sorted({a.split("  ")[0][:40] for a, b in zip(x, y, strict=False) if a != b}))


def _first_difference(x: Any, y: Any, at: str = "") -> str:
    """Where two values first differ (for a DIFFERENT line)."""
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y), key=str):
            if x.get(k) != y.get(k):
                return _first_difference(x.get(k), y.get(k), f"{at}.{k}")
    if isinstance(x, list) and isinstance(y, list):
        for i, (a, b) in enumerate(zip(x, y, strict=False)):
            if a != b:
                return _first_difference(a, b, f"{at}[{i}]")
        if len(x) != len(y):
            return f" at {at}: length {len(x)} vs {len(y)}"
    return f" at {at or 'top'}: {str(x)[:120]!r} vs {str(y)[:120]!r}"


def onnx_hashes(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*.onnx"))
    }


def artifact_json(run_dir: Path) -> dict[str, str]:
    """sha256 of every JSON file the stages saved as artifacts (the records the typed readers read)."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.glob("stages/*/artifacts/**/*.json"))
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pre", required=True, type=Path, help="worktree of the pre-refactor commit")
    ap.add_argument("--new", type=Path, default=ROOT, help="code to compare (default: this checkout)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/refactor_identity"))
    ap.add_argument("--only", action="append", help="case name(s)")
    ap.add_argument("--side", choices=("pre", "new", "both"), default="both", help="run only one side")
    ap.add_argument("--keep", action="store_true", help="reuse finished runs under --work")
    ap.add_argument(
        "--data-root",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "medmnist",
        help="folder holding the MedMNIST .npz files (the configs' ../shared/data/medmnist from a checkout of main)",
    )
    a = ap.parse_args()
    cases = {k: v for k, v in CASES.items() if not a.only or k in a.only}
    for name in MEDMNIST & set(cases):
        if not (a.data_root / f"{name.split('_')[0]}.npz").is_file():
            ap.error(f"--data-root {a.data_root}: no {name.split('_')[0]}.npz there (case {name})")
        cases[name] = [*cases[name], "--set", f"data.root={a.data_root.resolve()}"]
    print(
        f"# python benchmarks/bench_refactor_identity.py --pre {a.pre} --new {a.new}  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )
    print(f"# budget: {' '.join(NO_CUT)} (large enough that no wall-time budget cut occurs)")
    a.work.mkdir(parents=True, exist_ok=True)
    all_same = True
    for name, args in cases.items():
        sides = {}
        for side, code in (("pre", a.pre), ("new", a.new)):
            if a.side not in ("both", side):
                continue
            out = a.work / f"{side}_{name}" if a.keep else a.work / f"{side}_{name}_{os.getpid()}"
            t = time.time()
            run(code, args, out, a.work / f"{side}_{name}.log")
            sides[side] = out
            print(f"{name}: {side} run {time.time() - t:.0f} s -> {out}", flush=True)
        if a.side != "both":
            continue
        pre, new = sides["pre"], sides["new"]
        checks = {
            "test metrics (summary.json)": (test_metrics(pre), test_metrics(new)),
            "validation ledger rows (without times)": (ledger(pre), ledger(new)),
            "ONNX sha256": (onnx_hashes(pre), onnx_hashes(new)),
            "artifact JSON files sha256": (artifact_json(pre), artifact_json(new)),
            "summary.json (without wall times)": (summary_json(pre), summary_json(new)),
            "decision.json (first screen)": (decision_json(pre), decision_json(new)),
            "report.html text (without wall times)": (report_text(pre), report_text(new)),
        }
        px, py = report_text(pre), report_text(new)
        checks["report.html text, numbers masked"] = (numbers_masked(px), numbers_masked(py))
        for item, (x, y) in checks.items():
            same = x == y and bool(x)
            all_same &= same or item.startswith("report.html text (")  # wall-time columns: masked below
            extra = f" ({len(x)} rows)" if isinstance(x, list) else f" ({len(x)} entries)"
            print(
                f"{name}: {item}: {'IDENTICAL' if same else 'DIFFERENT'}{extra}{'' if same else _first_difference(x, y)}"
            )
        if px != py:
            print(f"{name}: report.html lines that differ (wall-time columns): {differing_lines(px, py)}")
        m = test_metrics(new)
        print(f"{name}: test " + ", ".join(f"{k}={v['value']:.6f}" for k, v in m.items()))
    print("ALL IDENTICAL (report text: numbers masked)" if all_same else "SOME DIFFERENT")


if __name__ == "__main__":
    main()
