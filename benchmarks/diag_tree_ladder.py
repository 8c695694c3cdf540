"""Should the quick preset's tree ladder climb a third rung of 64 leaves (issue #25, session 16)? The
development runs of the rule declared in docs/trees_decisions.md "Session 16: a 64-leaf third rung", on
DEVELOPMENT data only: each table's split-seed development part is split again
(``bench_tables.development_bundle``: train / validation / a development hold-out); the test part is
never read.

Per (table, seed), one after the other in the same process: closedloop's family-choice run
(``family: [lgbm, mlp]``, bench_tables' train settings) with the tree ladder 4, 16 leaves (shipped) and
4, 16, 64 leaves (``ladder: {lgbm: [...]}``); the shipped model's development hold-out AUC, the family
and tree rung chosen, whether rung 2 scored above rung 1, the train stage's wall seconds, the run's CPU
seconds (process and children) and every decision naming the clock. Each run is saved as JSON
(``--save-dir``); ``--decide`` reads them all and applies the rule.

Run: .venv/bin/python benchmarks/diag_tree_ladder.py [--tables NAME ...] [--seeds 0 1] --save-dir DIR
     [--out FILE]; then ... --decide --save-dir DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import bench_tables as B  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

LINES: list[str] = []
RULE = (
    "declared rule (docs/trees_decisions.md, session 16): the quick preset's tree ladder becomes 3 rungs (4, 16, 64 "
    "leaves) only if (a) synthetic_50k's development hold-out AUC gain (3 rungs minus 2), averaged over seeds "
    "0 and 1, is >= +0.0010 and >= -0.0005 at each seed; (b) diamonds >= -0.0005 at each seed; (c) on "
    "breast_cancer, nwtco, medexp, medexp_multilabel (8 runs) no run below -0.005 and their mean >= -0.001; "
    "(d) at each synthetic_50k seed the 3-rung run's CPU seconds minus the 2-rung run's <= 190 s (seed 0) / "
    "116 s (seed 1), a 3-rung run cut by the clock run once more (cut again: (d) fails); else it stays 2 rungs"
)
SMALL = ["breast_cancer", "nwtco", "medexp", "medexp_multilabel"]
CAP = {0: 190.0, 1: 116.0}  # 300 s - the quiet session-15 pipeline (80 s, 154 s) - a 30 s margin
LEAVES = [4, 16, 64]


def say(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)


def cpu_seconds() -> float:
    """This process's CPU seconds plus its waited-for children's (figure helpers, export checks)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def holdout_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Binary: ROC AUC of P(positive); multi-class: macro one-vs-rest; multi-label: macro over labels."""
    if y.ndim == 2:
        return float(np.mean([roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1])]))
    return B.auc(y, p[:, 1] if p.shape[1] == 2 else p)


def tree_ladder(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """The tree family's ladder as its scale-up decision recorded it: rungs climbed, their scores, the
    chosen rung's leaves."""
    d = next(x for x in decisions if x["phase"] == "scale_up" and x["decision"].startswith("lgbm: capacity:"))
    rungs = d["evidence"]["rungs"]
    chosen = int(re.search(r"capacity: rung (\d+)", d["decision"]).group(1))  # type: ignore[union-attr]
    scores = [r["val_metric"] for r in rungs]
    return {
        "climbed": len(rungs),
        "scores": scores,
        "chosen_leaves": rungs[chosen - 1]["params"]["num_leaves"],
        "rung2_above_rung1": len(scores) > 1 and scores[1] > scores[0],
        "stopped": next(
            (x["decision"] for x in decisions if x["phase"] == "scale_up" and "stop" in x["decision"]), ""
        ),
    }


def one_run(data: Any, n_rungs: int, runs: Path) -> dict[str, Any]:
    B.TRAIN["ladder"] = {"lgbm": [{"num_leaves": n} for n in LEAVES[:n_rungs]]}
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    res = B.closedloop_run(data, ["lgbm", "mlp"], runs / f"rungs{n_rungs}")
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - t0
    del B.TRAIN["ladder"]
    s = res.summary["stages"]["train"]
    ho = data.splits["test"]  # the development hold-out (the split seed's test part is not here)
    p = res.artifact("model").predict_proba(ho.X)
    decisions = s["decisions"]
    clock = [d["decision"] for d in decisions if "clock" in d["decision"] or "time budget" in d["decision"]]
    return {
        "rungs": n_rungs,
        "holdout_auc": holdout_auc(np.asarray(ho.y), np.asarray(p)),
        "chosen": s["families"]["chosen"],
        "ladder": tree_ladder(decisions),
        "train_s": s["seconds"],
        "run_wall_s": wall,
        "cpu_s": cpu,
        "clock": clock,
        "load": os.getloadavg()[0],
    }


def develop(tables: list[str], seeds: list[int], save: Path) -> None:
    save.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for name in tables:
            X, y, cats = B.TABLES[name]()
            data, y_dev = B.development_bundle(X, y, cats, name, seed, f"{name}_dev")
            say(B.development_header(f"diag_tree_ladder {name}", seed, data, len(y_dev)))
            with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
                out = [one_run(data, n, Path(tmp)) for n in (2, 3)]
            for r in out:
                lad = r["ladder"]
                say(
                    f"  {name} seed {seed}, {r['rungs']} tree rungs: hold-out AUC {r['holdout_auc']:.4f}; chose "
                    f"{r['chosen']}; tree ladder climbed {lad['climbed']} rung(s), scores "
                    f"{', '.join(f'{v:.4f}' for v in lad['scores'])}, chose {lad['chosen_leaves']} leaves; rung 2 "
                    f"above rung 1: {lad['rung2_above_rung1']}; train stage {r['train_s']:.1f} s, run CPU "
                    f"{r['cpu_s']:.1f} s (wall {r['run_wall_s']:.1f} s); load {r['load']:.1f}"
                )
                say(f"    clock: {'; '.join(r['clock']) if r['clock'] else 'no decision names the clock'}")
            (save / f"{name}_seed{seed}.json").write_text(
                json.dumps({"table": name, "seed": seed, "runs": out})
            )


def load(save: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    return {
        (d["table"], d["seed"]): d["runs"] for d in map(json.loads, map(Path.read_text, save.glob("*.json")))
    }


def decide(save: Path, timing: Path | None) -> None:
    got = load(save)
    gain = {k: v[1]["holdout_auc"] - v[0]["holdout_auc"] for k, v in got.items()}
    say("\n== the rule applied (hold-out AUC gain = 3 rungs minus 2 rungs)")
    for k in sorted(gain):
        v = got[k]
        say(
            f"  {k[0]:<17} seed {k[1]}: {v[0]['holdout_auc']:.4f} -> {v[1]['holdout_auc']:.4f} ({gain[k]:+.4f}); "
            f"chose {v[0]['chosen']} -> {v[1]['chosen']}, tree leaves {v[0]['ladder']['chosen_leaves']} -> "
            f"{v[1]['ladder']['chosen_leaves']}; CPU {v[0]['cpu_s']:.0f} -> {v[1]['cpu_s']:.0f} s "
            f"({v[1]['cpu_s'] - v[0]['cpu_s']:+.0f} s); train stage {v[0]['train_s']:.0f} -> {v[1]['train_s']:.0f} s"
        )
    missing = [(t, s) for t in [*SMALL, "synthetic_50k", "diamonds"] for s in (0, 1) if (t, s) not in got]
    if missing:
        say(f"  not run: {missing} -> the rule rejects (it needs every table at both seeds)")
        return
    syn = [gain["synthetic_50k", s] for s in (0, 1)]
    a = np.mean(syn) >= 0.0010 and min(syn) >= -0.0005
    b = min(gain["diamonds", s] for s in (0, 1)) >= -0.0005
    small = [gain[t, s] for t in SMALL for s in (0, 1)]
    c = min(small) >= -0.005 and np.mean(small) >= -0.001
    # (d) from the normal-priority re-run (the amendment of 11:40 UTC), when given
    timed = load(timing) if timing is not None else got
    if timing is not None:
        say(
            f"  (d) read from the normal-priority re-run in {timing} (docs/trees_decisions.md, amendment of 11:40 UTC):"
        )
        for s in (0, 1):
            if ("synthetic_50k", s) not in timed:
                say(f"    synthetic_50k seed {s}: not run -> (d) fails")
                say("  -> REJECTED: the quick preset keeps 2 tree rungs (4, 16 leaves)")
                return
            v = timed["synthetic_50k", s]
            say(
                f"    synthetic_50k seed {s}: hold-out AUC {v[0]['holdout_auc']:.4f} -> {v[1]['holdout_auc']:.4f} "
                f"(printed, not used); CPU {v[0]['cpu_s']:.0f} -> {v[1]['cpu_s']:.0f} s; train stage "
                f"{v[0]['train_s']:.0f} -> {v[1]['train_s']:.0f} s; clock: 2 rungs {v[0]['clock'] or 'none'}; "
                f"3 rungs {v[1]['clock'] or 'none'}; load {v[0]['load']:.1f}, {v[1]['load']:.1f}"
            )
    extra = {s: timed["synthetic_50k", s][1]["cpu_s"] - timed["synthetic_50k", s][0]["cpu_s"] for s in (0, 1)}
    cut = {s: bool(timed["synthetic_50k", s][1]["clock"]) for s in (0, 1)}
    d = all(extra[s] <= CAP[s] and not cut[s] for s in (0, 1))
    say(
        f"  (a) synthetic_50k gain mean {np.mean(syn):+.4f} (>= +0.0010), lowest {min(syn):+.4f} (>= -0.0005): {a}"
    )
    say(f"  (b) diamonds lowest {min(gain['diamonds', s] for s in (0, 1)):+.4f} (>= -0.0005): {b}")
    say(
        f"  (c) small tables lowest {min(small):+.4f} (>= -0.005), mean {np.mean(small):+.4f} (>= -0.001): {c}"
    )
    say(
        f"  (d) synthetic_50k extra CPU seed 0 {extra[0]:+.0f} s (<= {CAP[0]:.0f}), seed 1 {extra[1]:+.0f} s "
        f"(<= {CAP[1]:.0f}); 3-rung run cut by the clock: seed 0 {cut[0]}, seed 1 {cut[1]}: {d}"
    )
    verdict = "ADOPTED: the quick preset's tree ladder climbs 3 rungs (4, 16, 64 leaves)"
    say(
        f"  -> {verdict if a and b and c and d else 'REJECTED: the quick preset keeps 2 tree rungs (4, 16 leaves)'}"
    )


def development_parser() -> argparse.ArgumentParser:
    """The options every development diagnostic over bench_tables' tables shares (this one, diag_blend)."""
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--tables", nargs="+", default=[*SMALL, "synthetic_50k", "diamonds"], choices=sorted(B.TABLES)
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--save-dir", required=True, help="one JSON per (table, seed); --decide reads them all")
    ap.add_argument("--decide", action="store_true", help="apply the rule to the saved runs")
    ap.add_argument("--out", default=None)
    return ap


def main() -> None:
    ap = development_parser()
    ap.add_argument("--timing-dir", default=None, help="--decide: criterion (d) from these saved runs")
    args = ap.parse_args()
    B.TASK["metric"] = "auc"
    say(RULE)
    if args.decide:
        decide(Path(args.save_dir), Path(args.timing_dir) if args.timing_dir else None)
    else:
        up = os.popen("uptime").read().strip()  # the load beside the timings
        say(
            f"diag_tree_ladder: task {B.TASK}; started {time.strftime('%H:%M UTC', time.gmtime())}; uptime: {up}"
        )
        develop(args.tables, args.seeds, Path(args.save_dir))
    if args.out:
        Path(args.out).write_text("\n".join(LINES) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
