"""Spot checks: realized metrics from randomly chosen, labeled production rows only.

A label-free estimate can be wrong exactly when it matters (under shift), and labels chosen by
uncertainty or drift (the review queue) are a biased sample of production. A spot check draws rows
uniformly at random from the logged champion rows (``closedloop monitor RUN LOG --spot-check N``),
someone labels them (``spot_check.csv``: ``request_id, index, label``), and
``--spot-check-labels FILE`` measures realized metrics on exactly those rows, with 95% intervals
(Wilson for accuracy, bootstrap percentile for the others). Only these rows enter the spot check's
realized metrics. A spot check that agrees with the reference (the reference's accuracy inside the
spot check's interval) makes the period *verified*: its rows may become a new reference
(``--set-reference``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.errors import DataError
from closedloop.core.io import write_text_atomic
from closedloop.monitoring.estimate import realized
from closedloop.monitoring.logreader import RouteRows

COLUMNS = ("request_id", "index", "label")
BOOTSTRAP = 200
"""Resamples of the percentile interval of metrics other than accuracy."""


def draw(rows: RouteRows, n: int, seed: int = 0) -> np.ndarray:
    """``n`` row positions drawn uniformly at random, without replacement, from the logged rows."""
    if n < 1:
        raise DataError(f"--spot-check {n}: expected a positive number of rows to draw")
    if n > len(rows):
        raise DataError(f"--spot-check {n}: the log holds only {len(rows)} champion row(s) to draw from")
    return np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))


PICKS_DIR = "spot_checks"
"""Under the run directory: one JSON file per ``--spot-check`` draw, listing the rows it picked."""


def record_picks(run_dir: Path, rows: RouteRows, picked: np.ndarray, seed: int) -> Path:
    """Record the drawn rows (``RUN_DIR/spot_checks/<UTC time>.json``) so that labels arriving for them
    later, by ``POST /feedback`` or ``--spot-check-labels``, are known to be random picks and count in
    realized metrics (labels of other rows do not, unless marked ``random``)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")
    path = Path(run_dir) / PICKS_DIR / f"{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "drawn": stamp,
        "seed": int(seed),
        "how": "uniformly at random, without replacement, from the logged champion rows",
        "rows": [[str(rows.request_id[r]), int(rows.index[r])] for r in picked],
    }
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")
    return path


def recorded_picks(run_dir: Path | None) -> set[tuple[str, int]]:
    """Every (request_id, index) a recorded spot check picked (empty without a run directory)."""
    if run_dir is None or not (Path(run_dir) / PICKS_DIR).is_dir():
        return set()
    out: set[tuple[str, int]] = set()
    for path in sorted((Path(run_dir) / PICKS_DIR).glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            out |= {(str(r), int(i)) for r, i in doc["rows"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}: not a spot-check record ({exc}); expected {{'rows': [[request_id, index], ...]}}"
            ) from None
    return out


def export(rows: RouteRows, picked: np.ndarray, out_dir: Path, kind: str) -> Path:
    """``spot_check.csv`` (request_id, index, time, label to fill in, file) and, for images, one PNG per row."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    if kind == "images" and rows.inputs is not None:
        from PIL import Image

        (out_dir / "images").mkdir(exist_ok=True)
        for r in picked:
            x = np.clip(rows.inputs[r], 0, 255).astype(np.uint8)
            name = f"images/{rows.request_id[r]}_{int(rows.index[r])}.png"
            Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(out_dir / name)
            files.append(name)
    lines = ["request_id,index,time,label,file"]
    for j, r in enumerate(picked):
        lines.append(
            f"{rows.request_id[r]},{int(rows.index[r])},{rows.time[r]}Z,,{files[j] if files else ''}"
        )
    path = out_dir / "spot_check.csv"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_labels(path: Path, rows: RouteRows, names: list[str], problem: str) -> tuple[np.ndarray, np.ndarray]:
    """(row positions in ``rows``, labels as class indices) of a filled-in spot check; every id must
    be a logged champion row and every label a class of the model."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--spot-check-labels {path}: no such file")
    if problem not in ("binary", "multiclass", "ordinal"):
        raise DataError(f"{path}: spot checks measure classification tasks; this model's task is {problem}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)} (spot_check.csv)")
        records = [(r["request_id"], r["index"], (r["label"] or "").strip()) for r in reader]
    where = {
        (str(rid), int(i)): k for k, (rid, i) in enumerate(zip(rows.request_id, rows.index, strict=True))
    }
    index = {n: i for i, n in enumerate(names)}
    pos, ys, unknown_ids, unknown_labels, seen = [], [], [], [], set()
    for line, (rid, idx, label) in enumerate(records, start=2):
        if not label:
            continue  # not labeled (yet): left out, the rest is still a random sample
        try:
            key = (rid, int(idx))
        except ValueError:
            raise DataError(f"{path}:{line}: index {idx!r} is not an integer") from None
        if key in seen:
            raise DataError(f"{path}:{line}: request {rid} index {idx} is listed twice")
        seen.add(key)
        if key not in where:
            unknown_ids.append(f"{rid}/{idx} (line {line})")
            continue
        if label not in index:
            unknown_labels.append(f"{label!r} (line {line})")
            continue
        pos.append(where[key])
        ys.append(index[label])
    if unknown_ids:
        raise DataError(
            f"{path}: {len(unknown_ids)} labeled row(s) are not champion rows of this log: "
            f"{unknown_ids[:5]}; a spot check labels rows drawn by --spot-check from the same log"
        )
    if unknown_labels:
        raise DataError(f"{path}: label(s) {unknown_labels[:5]} are not classes of the model {names}")
    if not pos:
        raise DataError(f"{path}: no labeled row (fill in the 'label' column)")
    return np.asarray(pos, dtype=np.int64), np.asarray(ys, dtype=np.int64)


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson interval of a proportion ``k / n``."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


def measure(y: np.ndarray, proba: np.ndarray, info: Any, seed: int = 0) -> dict[str, Any]:
    """Realized metrics with 95% intervals on the spot check's random rows, and whether they agree
    with the reference (its accuracy inside the spot check's accuracy interval)."""
    n = len(y)
    out: dict[str, Any] = {"n": int(n), "rows": "drawn uniformly at random from the logged champion rows"}
    metrics: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(seed)
    for m in info.metrics:
        try:
            value = realized([m], y, proba, info.problem_type, info.threshold)[m]
        except ValueError:
            continue  # AUC with one class only
        if m == "acc":
            pred = realized(["acc"], y, proba, info.problem_type, info.threshold)["acc"]
            ci = wilson(int(round(pred * n)), n)
        else:
            boots = []
            for _ in range(BOOTSTRAP):
                b = rng.integers(0, n, n)
                try:
                    boots.append(realized([m], y[b], proba[b], info.problem_type, info.threshold)[m])
                except ValueError:
                    continue
            ci = (
                [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
                if boots
                else [np.nan] * 2
            )
        metrics[m] = {"value": float(value), "ci95": ci}
    out["metrics"] = metrics
    ref = info.reference_performance.get("acc")
    if "acc" in metrics and ref is not None:
        lo, hi = metrics["acc"]["ci95"]
        out["agrees_with_reference"] = bool(lo <= ref <= hi)
        out["reference_acc"] = float(ref)
    return out
