"""Which validation protocol does a new user's table get, and what does the benchmark's forced hold-out cost
(issue #25, session 24)? DEVELOPMENT data only.

``bench_tables.bundle`` hands closedloop a train / validation / test split marked as the source's own
(``split_origin: source``), so the task stage keeps that validation split: the hold-out protocol. A new user
who gives closedloop the same table as one CSV gets a seeded stratified split (``split_origin:
seeded_stratified``), and below 5,000 labeled rows the task stage then chooses k-fold (``choose_protocol``):
nwtco, MedExp and the multi-label MedExp, whose development parts hold 3,222 and 4,459 rows. (breast_cancer is
below 1,000 rows, repeated k-fold either way; the 50,000-row table and diamonds are hold-out either way.)

Per (table, split seed, re-split): the split seed's development part is split again
(``bench_tables.development_bundle``: train / validation / a development hold-out; the test part is never
read) and closedloop's family run (``family: [lgbm, mlp]``, bench_tables' train settings) runs twice on the
same rows: the split marked ``source`` (hold-out, what the benchmark measured) and ``seeded_stratified`` (the
user's path). Printed per run: the protocol the task chose, the family chosen, the development hold-out's ROC
AUC (macro over labels for the multi-label table) and the train stage's seconds; then per table and over all
the paired mean difference (user's path minus hold-out) with its spread.

Run: .venv/bin/python benchmarks/diag_table_protocol.py [--tables nwtco medexp medexp_multilabel]
     [--seeds 0 1] [--resplits 100 101] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import bench_tables as B  # noqa: E402
import numpy as np  # noqa: E402

ORIGINS = ("source", "seeded_stratified")
"""The benchmark's marking (hold-out) and a user's CSV without a split column (k-fold below 5,000 rows)."""


def holdout_auc(res: Any, data: Any) -> float:
    """ROC AUC (macro over labels for multi-label) of the run's shipped model on the development hold-out."""
    X, y = data.splits["test"].X, np.asarray(data.splits["test"].y)
    p = res.artifact("model").predict_proba(X)
    if y.ndim == 2:
        return float(np.mean([B.auc(y[:, k], p[:, k]) for k in range(y.shape[1])]))
    return B.auc(y, p[:, 1] if p.shape[1] == 2 else p)


def one(name: str, seed: int, resplit: int, runs: Path) -> dict[str, float]:
    """Both markings of one development re-split; returns each origin's hold-out AUC."""
    X, y, cats = B.TABLES[name]()
    data, y_dev = B.development_bundle(X, y, cats, name, seed, f"{name}_dev", resplit=resplit)
    B.say(B.development_header("diag_table_protocol", seed, data, len(y_dev)) + f"; re-split {resplit}")
    out: dict[str, float] = {}
    for origin in ORIGINS:
        marked = dataclasses.replace(data, meta=data.meta.model_copy(update={"split_origin": origin}))
        res = B.closedloop_run(marked, ["lgbm", "mlp"], runs / f"{name}_{seed}_{resplit}_{origin}")
        s = res.summary["stages"]
        protocol = res.artifact("task").validation.protocol
        out[origin] = holdout_auc(res, data)
        B.say(
            f"  split_origin {origin:<17} protocol {protocol:<14} chose {s['train']['families']['chosen']:<4} "
            f"hold-out AUC {out[origin]:.4f}; train stage {s['train']['seconds']:.1f} s"
        )
    B.say(f"  user's path minus hold-out: {out[ORIGINS[1]] - out[ORIGINS[0]]:+.4f}")
    return out


def resplit_args(
    doc: str,
    script: str,
    tables: list[str],
    seeds: list[int],
    resplits: list[int],
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Any:
    """The command line of a development diagnosis over (table, split seed, re-split), its task told the judged
    metric (ROC AUC) and its first line printed; shared with ``diag_tree_pruning.py`` (``more`` adds its
    own options)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    if more is not None:
        more(ap)
    ap.add_argument("--tables", nargs="+", default=tables)
    ap.add_argument(
        "--seeds", nargs="+", type=int, default=seeds, help="split seeds (their development parts)"
    )
    ap.add_argument("--resplits", nargs="+", type=int, default=resplits, help="seeds of the second split")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    B.TASK.update({"metric": "auc"})
    B.say(
        f"{script} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): "
        f"{' '.join(sys.argv)}; load average {os.getloadavg()[0]:.1f}"
    )
    return args


def main() -> None:
    args = resplit_args(
        __doc__, "diag_table_protocol", ["nwtco", "medexp", "medexp_multilabel"], [0, 1], [100, 101]
    )
    diffs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            for seed in args.seeds:
                for r in args.resplits:
                    o = one(name, seed, r, Path(tmp))
                    diffs.setdefault(name, []).append(o[ORIGINS[1]] - o[ORIGINS[0]])
    for name, d in [*diffs.items(), ("all", [v for ds in diffs.values() for v in ds])]:
        a = np.asarray(d)
        B.say(
            f"{name}: user's path (k-fold below 5,000 rows) minus the benchmark's hold-out, development hold-out "
            f"AUC: mean {a.mean():+.4f} (min {a.min():+.4f}, max {a.max():+.4f}; {int((a > 0).sum())} of {len(a)} "
            "above 0)"
        )
    B.say(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text("\n".join(B.LINES) + "\n")


if __name__ == "__main__":
    main()
