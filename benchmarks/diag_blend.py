"""Would a blend of the trees and the MLP help closedloop's family choice (issue #25, session 17)? The
development runs of the rule declared in docs/trees_decisions.md "Session 17: a tree + MLP blend", on
DEVELOPMENT data only: each table's split-seed development part is split again
(``bench_tables.development_bundle``: train / validation / a development hold-out); the test part is
never read.

Per (table, seed), in one process: closedloop's family-choice run (``family: [lgbm, mlp]``, bench_tables'
train settings, the shipped method), then the family it did not choose alone (``family: <other>``), so
both families have a deployed (final, calibrated) model. The candidate ``blend`` is the mean of the two
deployed models' probabilities. It is selected like any candidate, on the evidence the family choice
itself used (``stages.train.families.evaluated_on``): the mean of the two families' chosen
configurations' probabilities on validation (or their out-of-fold predictions when both were
cross-validated), scored by the task's metric against the chosen family's score; the blend is selected
only when it scores strictly higher. Printed per run: the family choice's scores, the blend's score on
the same evidence, whether the blend is selected, the development hold-out AUC of the choice, of the
other family, of the blend and of "the choice with the blend candidate" (the blend when selected, else
the choice), and the other family's final-phase seconds (what a blend adds to a pipeline: a second
final fit). Each run is saved as JSON (``--save-dir``); ``--decide`` reads them all and applies the rule.

Disclosed difference from an implementation inside the stage: the other family's deployed model comes
from its own run (the whole selection budget for one family), not from the family run's runner-up
configuration; the blend's selection evidence does come from the family run.

Run: .venv/bin/python benchmarks/diag_blend.py [--tables NAME ...] [--seeds 0 1] --save-dir DIR
     [--out FILE]; then ... --decide --save-dir DIR [--out FILE]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import bench_tables as B  # noqa: E402
import numpy as np  # noqa: E402
from diag_tree_ladder import SMALL, development_parser, holdout_auc  # noqa: E402  (the ladder rule's tables and AUC)

LINES: list[str] = []
RULE = (
    "declared rule (docs/trees_decisions.md, session 17): the family choice gains a candidate 'blend' (the mean of "
    "the chosen tree model's and the chosen MLP's probabilities, selected on the family choice's own "
    "evidence only when strictly better than both families) only if, on the development hold-out, the gain "
    "(the choice with the blend candidate minus the shipped choice) (a) on synthetic_50k averages >= +0.0010 "
    "over seeds 0 and 1 and is >= -0.0005 at each seed; (b) on diamonds is >= -0.0005 at each seed; (c) on "
    "breast_cancer, nwtco, medexp, medexp_multilabel (8 runs) no run is below -0.005 and their mean is >= "
    "-0.001; (d) at each synthetic_50k seed where the blend is selected, the other family's final-phase "
    "seconds <= 190 s (seed 0) / 171 s (seed 1); else no blend candidate"
)
CAP = {0: 190.0, 1: 171.0}  # 300 s - the quiet session-16 pipeline (80 s, 99 s) - a 30 s margin


def say(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)


def one(name: str, seed: int, runs: Path) -> dict[str, Any]:
    X, y, cats = B.TABLES[name]()
    data, y_dev = B.development_bundle(X, y, cats, name, seed, f"{name}_dev")
    say(B.development_header(f"diag_blend {name}", seed, data, len(y_dev)))
    ho = data.splits["test"]  # the development hold-out (the split seed's test part is not here)
    yh = np.asarray(ho.y)
    t0 = time.perf_counter()
    res = B.closedloop_run(data, ["lgbm", "mlp"], runs / "choice")
    chosen = res.summary["stages"]["train"]["families"]["chosen"]
    other = "mlp" if chosen == "lgbm" else "lgbm"
    alone = B.closedloop_run(data, other, runs / other)
    wall = time.perf_counter() - t0
    p = {
        chosen: res.artifact("model").predict_proba(ho.X),
        other: alone.artifact("model").predict_proba(ho.X),
    }
    p = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    ev = B.blend_evidence(res, data)  # the same evidence bench_tables --blend uses
    timings = json.loads(
        (alone.run_dir / alone.summary["stages"]["train"]["dir"] / "stage.json").read_text()
    )["timings"]
    auc = {k: holdout_auc(yh, v) for k, v in p.items()}
    auc["blend"] = holdout_auc(yh, (p["lgbm"] + p["mlp"]) / 2)
    with_blend = auc["blend"] if ev["selected"] else auc[chosen]
    out = {
        "table": name,
        "seed": seed,
        "chosen": chosen,
        "evidence": ev,
        "holdout": auc,
        "gain": with_blend - auc[chosen],
        "other_final_s": timings.get("phase final"),
        "train_s": {
            chosen: res.summary["stages"]["train"]["seconds"],
            other: alone.summary["stages"]["train"]["seconds"],
        },
        "wall_s": wall,
        "load": os.getloadavg()[0],
    }
    fs, rc = ev["family_scores"], ev["recomputed"]
    say(
        f"  {name} seed {seed}: family choice on {ev['evaluated_on']}: trees {fs['lgbm']:.4f} (recomputed "
        f"{rc['lgbm']:.4f}), MLP {fs['mlp']:.4f} (recomputed {rc['mlp']:.4f}), blend {ev['blend_score']:.4f} -> "
        f"chose {chosen}; blend selected: {ev['selected']}"
    )
    say(
        f"    development hold-out AUC: choice ({chosen}) {auc[chosen]:.4f}, {other} alone {auc[other]:.4f}, "
        f"blend {auc['blend']:.4f}; with the blend candidate {with_blend:.4f} (gain {out['gain']:+.4f}); "
        f"{other}'s final phase {out['other_final_s'] or float('nan'):.1f} s; train stages "
        + ", ".join(f"{k} {v:.0f} s" for k, v in out["train_s"].items())
        + f"; wall {wall:.0f} s; load {out['load']:.1f}"
    )
    return out


def develop(tables: list[str], seeds: list[int], save: Path) -> None:
    save.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for name in tables:
            with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
                out = one(name, seed, Path(tmp))
            (save / f"{name}_seed{seed}.json").write_text(json.dumps(out))


def decide(save: Path) -> None:
    got = {(d["table"], d["seed"]): d for d in map(json.loads, map(Path.read_text, save.glob("*.json")))}
    say("\n== the rule applied (gain = hold-out AUC of the choice with the blend candidate minus the choice)")
    for k in sorted(got):
        d = got[k]
        h = d["holdout"]
        say(
            f"  {k[0]:<17} seed {k[1]}: chose {d['chosen']}; blend selected {d['evidence']['selected']} (blend "
            f"{d['evidence']['blend_score']:.4f} vs chosen {d['evidence']['family_scores'][d['chosen']]:.4f} on "
            f"{d['evidence']['evaluated_on']}); hold-out trees {h['lgbm']:.4f}, MLP {h['mlp']:.4f}, blend "
            f"{h['blend']:.4f}; gain {d['gain']:+.4f}"
        )
    missing = [(t, s) for t in [*SMALL, "synthetic_50k", "diamonds"] for s in (0, 1) if (t, s) not in got]
    if missing:
        say(f"  not run: {missing} -> the rule rejects (it needs every table at both seeds)")
        return
    syn = [got["synthetic_50k", s]["gain"] for s in (0, 1)]
    a = np.mean(syn) >= 0.0010 and min(syn) >= -0.0005
    b = min(got["diamonds", s]["gain"] for s in (0, 1)) >= -0.0005
    small = [got[t, s]["gain"] for t in SMALL for s in (0, 1)]
    c = min(small) >= -0.005 and np.mean(small) >= -0.001
    extra = {s: got["synthetic_50k", s]["other_final_s"] or 0.0 for s in (0, 1)}
    sel = {s: got["synthetic_50k", s]["evidence"]["selected"] for s in (0, 1)}
    d = all(extra[s] <= CAP[s] for s in (0, 1) if sel[s])
    say(
        f"  (a) synthetic_50k gain mean {np.mean(syn):+.4f} (>= +0.0010), lowest {min(syn):+.4f} (>= -0.0005): {a}"
    )
    say(f"  (b) diamonds lowest {min(got['diamonds', s]['gain'] for s in (0, 1)):+.4f} (>= -0.0005): {b}")
    say(
        f"  (c) small tables lowest {min(small):+.4f} (>= -0.005), mean {np.mean(small):+.4f} (>= -0.001): {c}"
    )
    say(
        f"  (d) synthetic_50k other family's final phase seed 0 {extra[0]:.0f} s (<= {CAP[0]:.0f}; blend selected "
        f"{sel[0]}), seed 1 {extra[1]:.0f} s (<= {CAP[1]:.0f}; selected {sel[1]}): {d}"
    )
    adopted = "ADOPTED: the family choice gains the blend candidate"
    say(f"  -> {adopted if a and b and c and d else 'REJECTED: no blend candidate'}")


def main() -> None:
    args = development_parser().parse_args()
    B.TASK["metric"] = "auc"
    say(RULE)
    if args.decide:
        decide(Path(args.save_dir))
    else:
        up = os.popen("uptime").read().strip()
        say(f"diag_blend: task {B.TASK}; started {time.strftime('%H:%M UTC', time.gmtime())}; uptime: {up}")
        develop(args.tables, args.seeds, Path(args.save_dir))
    if args.out:
        Path(args.out).write_text("\n".join(LINES) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
