"""Target leakage on a table whose rows come in groups (``data.group``), over many draws.

Pupils come in classrooms; every pupil of a classroom has its class type (the label). Each draw: 24 classrooms
of 25 pupils, a random type per classroom, 80 random classroom-level columns (nothing predicts the type of a
classroom not seen), a pupil-level noise column, and a column numbering the classroom. Three rules judge the
same draw through the audit's target-leakage check:

- ``rows``: no group given (the check before ``data.group``): folds and label shuffles of single rows;
- ``group folds, row null``: folds of whole classrooms, labels shuffled row by row for the null;
- ``group folds, group null`` (shipped): folds of whole classrooms, labels shuffled between classrooms.

Printed per rule: in how many draws the check raised an error, and in how many it called some column a strong
feature beyond chance; neither is true of any column here. Then the power: the same draws with one planted
column, the label with 5% of pupils' values flipped, found (error or strong) under each rule.

    python benchmarks/bench_audit_leakage_groups.py [--draws 40]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit import AuditDataset, leakage
from closedloop.stages.task import DefineTaskConfig, build_task_spec

ROOMS, PUPILS, COLUMNS = 24, 25, 80


def draw(seed: int, grouped: bool, planted: bool) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    room = np.repeat(np.arange(ROOMS), PUPILS)
    y = rng.permutation(np.arange(ROOMS) % 2)[room]
    X = pd.DataFrame({"room": (100 + 7 * room).astype(float), "score": rng.normal(size=len(y))})
    for j in range(COLUMNS):
        X[f"room_level_{j}"] = rng.normal(size=ROOMS)[room]
    if planted:
        flip = rng.random(len(y)) < 0.05
        X["planted"] = np.where(flip, 1 - y, y).astype(float)
    meta = DatasetMeta(
        name="rooms", source="synthetic", kind="table", label_names=["0", "1"], feature_names=list(X.columns)
    )
    small = {k: Split(X.iloc[:PUPILS].reset_index(drop=True), y[:PUPILS]) for k in ("val", "test")}
    train = Split(X, y, groups=room.astype(str) if grouped else None)
    return DatasetBundle(meta=meta, splits={"train": train, **small})


def judged(data: DatasetBundle, work: Path) -> tuple[set[str], set[str]]:
    """The columns the check calls an error, and those it calls strong beyond chance."""
    task = build_task_spec(DefineTaskConfig(), data)
    ctx = RunContext(stage_name="audit", stage_dir=work, seed=0)
    out = AuditDataset(checks=["target_leakage"], stop_on=[]).execute({"data": data, "task": task}, ctx)
    found = [f for f in out.audit.findings if f["check"] == "target_leakage"]
    errors = {f["evidence"]["feature"] for f in found if f["severity"] == "error"}
    strong = {
        name
        for f in found
        if f["message"].startswith("strong single features")
        for name in f["evidence"]["features"]
    }
    return errors, strong


def row_shuffle(y: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(y)  # the rule before: a row shuffle, whatever the groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=40)
    args = ap.parse_args()
    print(
        f"# bench_audit_leakage_groups: {ROOMS} classrooms x {PUPILS} pupils, {COLUMNS} random classroom-level "
        f"columns + room number + pupil noise; draws (seeds) 0-{args.draws - 1}"
    )
    rules = {
        "rows": (False, None),
        "group folds, row null": (True, row_shuffle),
        "group folds, group null": (True, None),
    }
    shipped = leakage.shuffle_by_group
    with tempfile.TemporaryDirectory() as tmp:
        for planted in (False, True):
            for rule, (grouped, null) in rules.items():
                leakage.shuffle_by_group = null or shipped  # type: ignore[assignment]
                false_error = false_strong = found = 0
                for seed in range(args.draws):
                    errors, strong = judged(
                        draw(seed, grouped, planted), Path(tmp) / f"{rule}_{planted}_{seed}"
                    )
                    false_error += bool(errors - {"planted"})
                    false_strong += bool(strong - {"planted"})
                    found += "planted" in errors | strong
                leakage.shuffle_by_group = shipped  # type: ignore[assignment]
                if planted:
                    print(f"planted 5%-flipped label copy, {rule:24s}: found in {found}/{args.draws} draws")
                else:
                    print(
                        f"no leak, {rule:24s}: a false error in {false_error}/{args.draws} draws, a false strong "
                        f"feature beyond chance in {false_strong}/{args.draws}"
                    )


if __name__ == "__main__":
    main()
