"""ONNX parity and the served ``/predict`` against the in-process model on every table (issue #25).

For each table of ``bench_tables.py`` (breast_cancer, nwtco, MedExp, the synthetic 50,000-row table,
the multi-label MedExp) and each family (the trees, ``lgbm``, and the MLP), one short closedloop run
(task, train, export) on the same split as ``bench_tables.py`` (seed 0), then on every test row:

* ONNX parity: the exported fp32 ONNX model through the bundle's torch-free predictor against the
  trained model in the process (``model.predict_proba`` on the DataFrame), max |dp| over all
  probabilities (bar 1e-5);
* served == in-process: ``closedloop serve`` in its own process, a real HTTP client posting the test rows
  as JSON the way a user writes them (keyed by feature name, category *names*, ``null`` for a missing
  value, 500 rows a request) against the bundle's predictor of the shipped variant in this process on
  the same 500-row batches, max |dp| (expected 0: the same file, the same code) and whether every
  decision (label) is the same;
* batch dependence: the same rows through the in-process predictor in one call and one row at a time
  (first 300) against the 500-row batches, max |dp|, and how many decisions moved (one call vs 500-row
  batches). A dynamically quantized int8 model scales activations by its call's range, so the predictor
  (and the server, which runs it) feeds such a model one row at a time: expected 0 for every family;
* the cost of that, for a model run one row at a time: a 500-row request's model call, median over
  interleaved rounds, one row at a time (what answers now) against the same int8 session in one call (the
  old, batch-dependent path) and the fp32 variant in one call. Timing figures: run it un-niced.

The runs are short on purpose (the quick preset, 2 trials): parity does not depend on how well the model
was tuned. Data the model never trained on: the test part. Machine shared, times niced.

Run: .venv/bin/python benchmarks/bench_table_serving.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_tables as bt  # noqa: E402  (sets one OpenMP thread before numpy)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bench_serve import closedloop_server  # noqa: E402

from closedloop.artifacts.export import ExportBundle  # noqa: E402

SHORT: dict[str, Any] = {"budget_minutes": 1, "n_trials": 2, "cv_candidates": 0, "n_bootstrap": 100}
BAR = 1e-5
BATCH = 500


def json_rows(X: pd.DataFrame) -> list[dict[str, Any]]:
    """Test rows as a user sends them: feature names, category names, null for a missing value."""
    out = []
    for rec in X.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if v is None or (isinstance(v, float) and np.isnan(v)):
                row[k] = None
            elif isinstance(v, (np.floating, float, np.integer, int)):
                row[k] = float(v)
            else:
                row[k] = str(v)
        out.append(row)
    return out


def served_proba(url: str, rows: list[dict[str, Any]], labels: list[str]) -> tuple[np.ndarray, list[Any]]:
    import httpx

    proba, decided = [], []
    with httpx.Client(timeout=120) as client:
        for s in range(0, len(rows), BATCH):
            r = client.post(f"{url}/predict", json=rows[s : s + BATCH])
            if r.status_code != 200:
                raise SystemExit(f"/predict answered {r.status_code}: {r.text[:500]}")
            for p in r.json()["predictions"]:
                proba.append([p["probabilities"][k] for k in labels])
                decided.append(p["label"])
    return np.asarray(proba, np.float64), decided


def one(name: str, family: str, runs: Path) -> str:
    X, y, cats = bt.TABLES[name]()
    data, _, _ = bt.bundle(X, y, cats, name, 0)
    test = data.splits["test"]
    t0 = time.perf_counter()
    res = bt.closedloop_run(data, family, runs / f"{name}_{family}")
    train_s = time.perf_counter() - t0
    native = np.asarray(res.artifact("model").predict_proba(test.X), np.float64)
    exp = ExportBundle.load(res.run_dir / res.summary["stages"]["export"]["artifacts"]["exported"])
    onnx = np.asarray(exp.predictor("fp32").predict_proba(test.features()), np.float64)
    shipped = exp.measurements.shipped
    local = exp.predictor()  # the shipped variant, in this process
    feats = test.features()
    p_local = np.asarray(local.predict_proba(feats), np.float64)  # one call (the predictor's own chunks)
    p_same = np.concatenate(  # the same rows in the server's requests
        [
            np.asarray(local.predict_proba(feats[s : s + BATCH]), np.float64)
            for s in range(0, len(feats), BATCH)
        ]
    )
    p_alone = np.concatenate([local.predict_proba(feats[i : i + 1]) for i in range(min(len(feats), 300))])
    labels = list(data.meta.label_names)
    server = closedloop_server(res.run_dir, "--no-metrics", label=f"{name} {family} server")
    try:
        p_served, decided = served_proba(server.url, json_rows(test.X), labels)
    finally:
        server.stop()
    local_labels = [
        lab for s in range(0, len(feats), BATCH) for lab in local.predict_labels(feats[s : s + BATCH])
    ]
    differ = [i for i, (a, b) in enumerate(zip(decided, local_labels, strict=True)) if str(a) != str(b)]
    same_labels = "yes" if not differ else f"no ({len(differ)} rows)"
    one_call = local.predict_labels(feats)  # the same rows in one call: int8 decisions may move
    moved = sum(str(a) != str(b) for a, b in zip(local_labels, one_call, strict=True))
    d_onnx = float(np.abs(onnx - native).max())
    d_served = float(np.abs(p_served - p_same).max())
    d_batch = float(np.abs(p_same - p_local).max())  # a row's answer with other batch-mates
    d_alone = float(np.abs(p_alone - p_local[: len(p_alone)]).max())
    missing = int(test.X.isna().to_numpy().sum())
    cost = row_at_a_time_cost(exp, feats[:BATCH]) if local.one_row_at_a_time else ""
    return (
        f"{name} {family}: {len(test.X)} test rows x {native.shape[1]} probabilities ({missing} missing values, "
        f"{len(cats)} categorical columns sent by name): ONNX fp32 vs in-process model max |dp| {d_onnx:.2e} "
        f"({'<=' if d_onnx <= BAR else '>'} {BAR:g}); served /predict ({shipped}) vs in-process predictor on the same "
        f"requests max |dp| {d_served:.2e}, same labels {same_labels}; the same rows in other batches (one call; "
        f"one row at a time, first 300) max |dp| {d_batch:.2e}; {d_alone:.2e}, decisions that moved {moved} (run {train_s:.0f} s)"
        + cost
    )


def row_at_a_time_cost(exp: ExportBundle, rows: np.ndarray, rounds: int = 21) -> str:
    """Median ms of one request's model call: int8 row by row, int8 in one call, fp32 in one call."""
    int8, fp32 = exp.predictor("int8"), exp.predictor("fp32")
    x = np.ascontiguousarray(rows, np.float32)
    batched = int8.session.session  # the bare onnxruntime session under the one-row wrapper
    calls = {
        "row_by_row": lambda: int8.session.run(None, {int8.input_name: x}),
        "int8_one_call": lambda: batched.run(None, {int8.input_name: x}),
        "fp32_one_call": lambda: fp32.session.run(None, {fp32.input_name: x}),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):  # interleaved, so a busy moment slows all three alike
        for k, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[k].append((time.perf_counter() - t0) * 1000.0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return (
        f"; cost of one row at a time on a {len(x)}-row request (median of {rounds} interleaved): "
        f"{med['row_by_row']:.2f} ms vs int8 in one call {med['int8_one_call']:.2f} ms "
        f"({med['row_by_row'] / med['int8_one_call']:.1f}x) and fp32 in one call {med['fp32_one_call']:.2f} ms "
        f"({med['row_by_row'] / med['fp32_one_call']:.1f}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(bt.TABLES), default=None)
    ap.add_argument("--families", nargs="+", default=["lgbm", "mlp"])
    args = ap.parse_args()
    bt.TRAIN.update(SHORT)
    print(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="table-serving-") as tmp:
        for name in args.only or list(bt.TABLES):
            for family in args.families:
                print(one(name, family, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
