"""Which annotator labels which item: every item goes to one person, a declared share of items
(``overlap``) to ``per_item`` people, so that agreement can be measured on the overlap.

Stored as ``QUEUE_DIR/assignments.csv`` (``id, annotator``, one row per pair). A queue with that file
is labeled *independently*: each annotator sees only their own items and their own decisions, never
another person's label (an agreement figure from people who saw each other's answers measures
nothing).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np

from closedloop.core.errors import ConfigError, DataError
from closedloop.core.io import write_text_atomic
from closedloop.labeling.store import check_annotator

ASSIGNMENTS = "assignments.csv"


def check_annotators(names: list[str], where: str = "--annotators") -> list[str]:
    """Each name valid and named once; raises :class:`ConfigError` naming the bad one."""
    for n in names:
        try:
            check_annotator(n)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise ConfigError(f"{where}: annotator(s) {dup} named twice")
    return names


def assign_items(
    ids: list[str], annotators: list[str], overlap: float, per_item: int | None = None, seed: int = 0
) -> dict[str, list[str]]:
    """Item id -> the annotators who label it.

    A seeded random ``overlap`` share of the items goes to ``per_item`` annotators (default: all of
    them), chosen so each person gets about as many as the others; every other item to one annotator,
    in turn. One annotator: every item to that person.
    """
    check_annotators(annotators)
    if not annotators:
        raise ConfigError("--annotators: name at least one annotator")
    if not 0.0 <= overlap <= 1.0:
        raise ConfigError(
            f"--overlap {overlap}: expected a share between 0 and 1 (e.g. 0.3 for 30% of items)"
        )
    k = len(annotators) if per_item is None else per_item
    if len(annotators) > 1 and not 2 <= k <= len(annotators):
        raise ConfigError(
            f"--per-item {k}: an overlapping item goes to 2..{len(annotators)} of the {len(annotators)} annotators"
        )
    rng = np.random.default_rng([int(seed), 0xA551])
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_shared = int(round(overlap * len(ids))) if len(annotators) > 1 else 0
    load = Counter({a: 0 for a in annotators})
    out: dict[str, list[str]] = {}
    for j, item in enumerate(order):
        want = k if j < n_shared else 1
        # the least-loaded annotators, ties broken at random: balanced and not always the same person
        ranked = sorted(annotators, key=lambda a: (load[a], rng.random()))
        chosen = ranked[:want]
        load.update(chosen)
        out[item] = sorted(chosen, key=annotators.index)
    return {i: out[i] for i in ids}


def write_assignments(queue_dir: Path, assignment: dict[str, list[str]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "annotator"])
    for item, people in assignment.items():
        for a in people:
            w.writerow([item, a])
    path = Path(queue_dir) / ASSIGNMENTS
    write_text_atomic(path, buf.getvalue())
    return path


def read_assignments(queue_dir: Path, ids: list[str]) -> dict[str, list[str]]:
    """Annotator -> their item ids in queue order (empty when the queue has no assignments)."""
    path = Path(queue_dir) / ASSIGNMENTS
    if not path.is_file():
        return {}
    known = set(ids)
    by: dict[str, set[str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0] != ["id", "annotator"]:
        raise DataError(f"{path} line 1: header {rows[0] if rows else ''!r}, expected 'id,annotator'")
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise DataError(f"{path} line {n}: {len(row)} fields, expected 2 (id, annotator)")
        item, who = row
        if item not in known:
            raise DataError(f"{path} line {n}: id {item!r} is not in queue.csv")
        try:
            check_annotator(who)
        except ValueError as exc:
            raise DataError(f"{path} line {n}: {exc}") from None
        by.setdefault(who, set()).add(item)
    return {a: [i for i in ids if i in s] for a, s in by.items()}
