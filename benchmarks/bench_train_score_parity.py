"""Validation scoring in training before/after removing ``engine._fallback_metric``.

Scores every metric allowed for each problem type on random logits, in four label situations (normal,
one class only, a class missing, all positive), with the training engine's ``score``. Run it with the
old and the new sources and compare::

    PYTHONPATH=/tmp/old/src python benchmarks/bench_train_score_parity.py dump old.json
    PYTHONPATH=src python benchmarks/bench_train_score_parity.py dump new.json
    python benchmarks/bench_train_score_parity.py compare old.json new.json

The data are synthetic draws (no model, no dataset).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

CASES = ("normal", "one class", "a class missing", "all positive")


def dump(path: str) -> None:
    from closedloop.stages.train.engine import score
    from closedloop.stats.metrics import _ALLOWED

    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    out = []
    for problem, k in (
        ("binary", 1),
        ("multiclass", 4),
        ("ordinal", 4),
        ("multilabel", 3),
        ("regression", 1),
    ):
        for metric in sorted(_ALLOWED[problem]):
            for case in CASES:
                n = 40
                logits = rng.normal(size=(n, k)).astype(np.float32)
                if problem == "binary":
                    y = rng.integers(0, 2, n)
                elif problem == "multilabel":
                    y = rng.integers(0, 2, (n, k))
                elif problem == "regression":
                    y = rng.normal(size=n)
                else:
                    y = rng.integers(0, k, n)
                if problem != "regression" and case == "one class":
                    y = np.zeros_like(y)
                if problem in ("multiclass", "ordinal") and case == "a class missing":
                    y = rng.integers(0, k - 1, n)
                if problem != "regression" and case == "all positive":
                    y = np.ones_like(y)
                v = score(metric, y, logits, problem)
                out.append([problem, metric, case, None if np.isnan(v) else round(float(v), 12)])
    Path(path).write_text(json.dumps(out))


def compare(a_path: str, b_path: str) -> None:
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    same = [x for x, y in zip(a, b, strict=True) if x == y]
    diff = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    print(f"{len(a)} (problem, metric, labels) cases; identical: {len(same)}; different: {len(diff)}")
    for x, y in diff:
        print(f"  {x[0]} {x[1]} [{x[2]}]: old {x[3]} -> new {y[3]}")
    defined = [x for x, y in diff if x[2] == "normal"]
    print(f"differences on samples where the metric is defined: {len(defined)}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
