"""int8 for table MLPs: static vs dynamic quantization vs fp32, measured per table (issue #25).

For each table of ``bench_tables.py`` (breast_cancer, nwtco, MedExp, the synthetic 50,000-row table, the
multi-label MedExp), one short closedloop run (task, train ``family: mlp``, export) on the same split as
``bench_tables.py`` (seed 0) gives the table MLP's fp32 ONNX file. From that one file the export stage's
own ``quantize_model`` makes each int8 variant:

* ``dynamic``: one activation scale per onnxruntime call (``DynamicQuantizeLinear``), so it must answer
  one row at a time (``OneRowAtATime``, what the predictor and the server do); its one-call figure is
  printed for reference only (that path is batch-dependent, nothing serves it);
* ``static QDQ`` and ``static QOperator``: scales calibrated once, on a seeded sample of 256 **train**
  rows (the stage's ``calibration_samples``; never validation or test rows), then fixed, so a row's
  answer cannot depend on its batch-mates, and a request runs in one call.

Per variant, on the test rows (the model never trained on them, nothing was tuned on them):

* size: the ONNX file in bytes;
* parity to fp32: max |P(variant) - P(fp32)| over every probability, and how many decisions (at the
  model's validation-chosen threshold) differ from fp32's;
* test metric: the task's primary metric (ROC AUC; macro over labels for the multi-label table) with a
  bootstrap 95% interval and the paired difference to fp32 (the same 1,000 resamples);
* batch dependence: each row's answer alone, in 500-row requests and in one call over every test row,
  through the path that answers in production; max |dp| (must be 0);
* latency: a 1-row and a 500-row request's model call, median over interleaved rounds (the variants
  take turns, so a busy moment slows them alike), one thread, as ratios to fp32 in the same rounds.

The rule, declared before the run (printed first): on a table, an int8 variant is worth making only
when its batch dependence is 0 and it is no slower than fp32 at the task's batch (1 row) nor on a 500-row
request (ratio of medians <= 1.00); worth shipping only when it also keeps the export stage's accuracy
bars (|dp| <= 0.1, metric loss <= 0.01), which the stage checks on every run. Speed depends on the
network's size, so besides the five tables' own MLPs (the short runs choose small ones) a sweep trains
every rung of the mlp family's capacity ladder (and 256x2) on MedExp and the 50,000-row table. ``quantize: auto`` for tables
makes static int8 from ``table_int8_min_parameters`` parameters (none below); the last lines check that
choice against every network measured. Calibration: the stage's count for tables (2,000 train rows).
Timing figures: run it un-niced, and read them as ratios (the machine is shared).

``--trees`` (session 13): the same table's tree model (``family: lgbm``, the same short run), exported fp32
(trees have no int8: split thresholds and leaf values, no weight matrices), beside the MLP's fp32 and the
static int8 file ``quantize: static`` would ship: file size, and a 1-row and a 500-row request's model call
(median over interleaved rounds, one thread), as ratios to the MLP's int8 in the same rounds. Nothing is
chosen from these lines; they answer "compare size/latency to the MLP's int8".

Run: .venv/bin/python benchmarks/bench_table_quantization.py [--only NAME ...] [--rounds 101] [--trees]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_tables as bt  # noqa: E402  (sets one OpenMP thread before numpy)
import numpy as np  # noqa: E402

from closedloop.artifacts.export import ExportBundle  # noqa: E402
from closedloop.models.trained import logits_to_proba, raw_array  # noqa: E402
from closedloop.stages.export.config import ExportModelConfig  # noqa: E402
from closedloop.stages.export.evaluate import compare_metric  # noqa: E402
from closedloop.stages.export.onnx_export import OneRowAtATime, onnx_session  # noqa: E402
from closedloop.stages.export.quantize import quantize_model  # noqa: E402

SHORT: dict[str, Any] = {"budget_minutes": 1, "n_trials": 2, "cv_candidates": 0, "n_bootstrap": 100}
REQUEST = 500
CALIBRATION = ExportModelConfig().calibration_count("table")  # the stage's default for tables
MAX_DP, TOLERANCE = 0.1, 0.01  # the export stage's defaults: int8_max_prob_diff, tolerance
VARIANTS = ("fp32", "dynamic", "static_qdq", "static_qoperator")
RULE = (
    "rule (declared before the run): an int8 variant is worth making on a (table, network) when its batch "
    "dependence is 0 and its median latency is <= fp32's at 1 row (the task's latency batch) and on a 500-row "
    f"request; worth shipping when also max |dp| to fp32 <= {MAX_DP} and test metric loss <= {TOLERANCE}. "
    "quantize: auto for tables makes static int8 from table_int8_min_parameters "
    f"({ExportModelConfig().table_int8_min_parameters:,}) parameters, none below: checked against every network"
)


def make_variants(fp32: Path, X_train: np.ndarray, out: Path, seed: int = 0) -> dict[str, Path]:
    """The int8 files made from one fp32 file by the export stage's ``quantize_model``."""
    rng = np.random.default_rng(seed)
    calib = X_train[np.sort(rng.choice(len(X_train), min(CALIBRATION, len(X_train)), replace=False))]
    shape = [X_train.shape[1]]
    out.mkdir(parents=True, exist_ok=True)
    paths = {"fp32": fp32}
    paths["dynamic"] = quantize_model(
        fp32, out / "dynamic.onnx", mode="dynamic", calibration=None, input_shape=shape
    )
    for fmt in ("qdq", "qoperator"):
        paths[f"static_{fmt}"] = quantize_model(
            fp32,
            out / f"static_{fmt}.onnx",
            mode="static",
            calibration=calib,
            input_shape=shape,
            static_format=fmt,
        )
    return paths


def run_in_batches(session: Any, X: np.ndarray, batch: int) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: np.ascontiguousarray(X[i : i + batch])})[0] for i in range(0, len(X), batch)
    ]
    return np.concatenate(outs).reshape(len(X), -1)


def medians_ms(calls: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median ms per call, the calls interleaved round-robin with a rotating order."""
    names = list(calls)
    for n in names:  # warm-up
        calls[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            calls[n]()
            times[n].append((time.perf_counter() - t0) * 1000.0)
    return {n: float(np.median(v)) for n, v in times.items()}


class Rows:
    """One table's rows and the model's output convention (what the measurements need)."""

    def __init__(self, data: Any, problem: str, temperature: float, thr: float | None, metric: str) -> None:
        self.X_train = np.ascontiguousarray(raw_array(data.splits["train"].X), np.float32)
        self.y_train = np.asarray(data.splits["train"].y)
        self.X_test = np.ascontiguousarray(raw_array(data.splits["test"].X), np.float32)
        self.y_test = np.asarray(data.splits["test"].y)
        self.problem, self.temperature, self.thr, self.metric = problem, temperature, thr, metric

    def proba(self, logits: np.ndarray) -> np.ndarray:
        return logits_to_proba(logits, self.problem, self.temperature)

    def decisions(self, p: np.ndarray) -> np.ndarray:
        t = 0.5 if self.thr is None else self.thr
        return p >= t if self.problem == "multilabel" else p[:, 1] >= t


def measure(title: str, fp32: Path, rows: Rows, out: Path, rounds: int) -> tuple[str, dict[str, bool]]:
    """Every variant of one fp32 file: one line each, and whether each int8 mode qualifies."""
    X_test, y_test, proba = rows.X_test, rows.y_test, rows.proba
    paths = make_variants(fp32, rows.X_train, out)
    served = {k: onnx_session(p, threads=1) for k, p in paths.items()}  # dynamic: wrapped, row by row
    p = {k: proba(run_in_batches(s, X_test, REQUEST)) for k, s in served.items()}
    lines, verdict = [title], {}
    x1, x500 = X_test[:1], np.ascontiguousarray(np.resize(X_test, (REQUEST, X_test.shape[1])))
    calls: dict[str, Any] = {}
    for k, s in served.items():
        calls[f"{k} 1"] = lambda s=s: s.run(None, {"x": x1})
        calls[f"{k} {REQUEST}"] = lambda s=s: s.run(None, {"x": x500})
    bare = served["dynamic"]
    assert isinstance(bare, OneRowAtATime)
    calls[f"dynamic one call {REQUEST}"] = lambda: bare.session.run(None, {"x": x500})
    ms = medians_ms(calls, rounds)
    for k in VARIANTS:
        s, pk = served[k], p[k]
        alone = proba(run_in_batches(s, X_test, 1))
        whole = proba(run_in_batches(s, X_test, len(X_test)))
        dep = float(max(np.abs(alone - pk).max(), np.abs(whole - pk).max()))
        dp = float(np.abs(pk - p["fp32"]).max())
        moved = int((rows.decisions(pk) != rows.decisions(p["fp32"])).sum())
        cmp = compare_metric(rows.metric, y_test, pk, p["fp32"], rows.problem, rows.thr, n_boot=1000, seed=0)
        r1, r500 = ms[f"{k} 1"] / ms["fp32 1"], ms[f"{k} {REQUEST}"] / ms[f"fp32 {REQUEST}"]
        line = (
            f"  {k:16s} size {os.path.getsize(paths[k]):8d} B ({os.path.getsize(paths[k]) / os.path.getsize(paths['fp32']):.2f}x); "
            f"test {rows.metric} {cmp.value:.4f} [{cmp.ci[0]:.4f}, {cmp.ci[1]:.4f}], vs fp32 {cmp.diff:+.4f} "
            f"[{cmp.diff_ci[0]:+.4f}, {cmp.diff_ci[1]:+.4f}]; max |dp| to fp32 {dp:.2e}, decisions moved {moved}; "
            f"batch dependence {dep:.2e}; latency 1 row {ms[f'{k} 1']:.3f} ms ({r1:.2f}x fp32), "
            f"{REQUEST} rows {ms[f'{k} {REQUEST}']:.3f} ms ({r500:.2f}x fp32)"
        )
        if k == "dynamic":
            one_call = ms[f"dynamic one call {REQUEST}"]
            bare_p = proba(run_in_batches(bare.session, X_test, REQUEST))
            bare_dep = float(
                max(
                    np.abs(proba(run_in_batches(bare.session, X_test, 1)) - bare_p).max(),
                    np.abs(proba(run_in_batches(bare.session, X_test, len(X_test))) - bare_p).max(),
                )
            )
            line += (
                f" [row by row; in one call {one_call:.3f} ms ({one_call / ms[f'fp32 {REQUEST}']:.2f}x) "
                f"with batch dependence {bare_dep:.2e}]"
            )
        if k != "fp32":
            ok = {
                "batch dependence 0": dep == 0.0,
                "not slower at 1 row": r1 <= 1.0,
                f"not slower at {REQUEST} rows": r500 <= 1.0,
                f"|dp| <= {MAX_DP}": dp <= MAX_DP,
                f"metric loss <= {TOLERANCE}": cmp.loss <= TOLERANCE,
            }
            failed = [c for c, v in ok.items() if not v]
            verdict[k] = not failed
            if k == "static_qdq":  # the mode quantize: auto makes: speed and accuracy apart
                verdict["static speed"] = ok["batch dependence 0"] and r1 <= 1.0 and r500 <= 1.0
                verdict["static accuracy"] = ok[f"|dp| <= {MAX_DP}"] and ok[f"metric loss <= {TOLERANCE}"]
            line += "; qualifies" if not failed else f"; fails: {', '.join(failed)}"
        lines.append(line)
    return "\n".join(lines), verdict


class Measured(dict):
    """One network's verdicts (mode or check -> passed) and its parameter count."""

    def __init__(self, label: str, n_parameters: int, verdict: dict[str, bool]) -> None:
        super().__init__(verdict)
        self.label, self.n_parameters = label, n_parameters


def trees_line(
    name: str, data: Any, mlp_fp32: Path, mlp_int8: Path, rows: Rows, runs: Path, rounds: int
) -> str:
    """The table's tree model (fp32: no int8 for trees) against the MLP's fp32 and static int8 files."""
    res = bt.closedloop_run(data, "lgbm", runs / f"{name}_trees")
    exp = ExportBundle.load(res.run_dir / res.summary["stages"]["export"]["artifacts"]["exported"])
    paths = {"trees fp32": exp.directory / "model_fp32.onnx", "MLP fp32": mlp_fp32, "MLP int8": mlp_int8}
    sessions = {k: onnx_session(v, threads=1) for k, v in paths.items()}
    x1 = rows.X_test[:1]
    x500 = np.ascontiguousarray(np.resize(rows.X_test, (REQUEST, rows.X_test.shape[1])))
    calls: dict[str, Any] = {}
    for k, sess in sessions.items():
        calls[f"{k} 1"] = lambda sess=sess: sess.run(None, {"x": x1})
        calls[f"{k} {REQUEST}"] = lambda sess=sess: sess.run(None, {"x": x500})
    ms = medians_ms(calls, rounds)
    size = {k: os.path.getsize(v) for k, v in paths.items()}
    parts = [
        f"{k} {size[k]:,} B ({size[k] / size['MLP int8']:.2f}x), 1 row {ms[f'{k} 1']:.3f} ms "
        f"({ms[f'{k} 1'] / ms['MLP int8 1']:.2f}x), {REQUEST} rows {ms[f'{k} {REQUEST}']:.3f} ms "
        f"({ms[f'{k} {REQUEST}'] / ms[f'MLP int8 {REQUEST}']:.2f}x)"
        for k in paths
    ]
    leaves = res.artifact("model").n_parameters()
    return f"  trees vs the MLP's int8 (ratios to MLP int8; trees {leaves:,} parameters): " + "; ".join(parts)


def one(name: str, runs: Path, rounds: int, trees: bool = False) -> tuple[str, Measured, Any, Rows]:
    """The table's MLP as closedloop trains and exports it, measured; also its model and rows."""
    X, y, cats = bt.TABLES[name]()
    data, _, _ = bt.bundle(X, y, cats, name, 0)
    res = bt.closedloop_run(data, "mlp", runs / name)
    exp = ExportBundle.load(res.run_dir / res.summary["stages"]["export"]["artifacts"]["exported"])
    meta = exp.predictor("fp32").meta
    rows = Rows(
        data,
        meta["problem_type"],
        float(meta["temperature"]),
        meta.get("threshold"),
        res.artifact("task").primary_metric,
    )
    model = res.artifact("model")
    n_lab = rows.y_test.shape[1] if rows.y_test.ndim == 2 else 1
    title = (
        f"{name}: MLP {model.spec.params} ({model.n_parameters():,} parameters); {len(rows.X_test)} test rows x "
        f"{rows.X_test.shape[1]} inputs, {n_lab} label(s); {rows.metric} on test"
    )
    text, verdict = measure(title, exp.directory / "model_fp32.onnx", rows, runs / f"{name}_int8", rounds)
    if trees:
        mlp_int8 = runs / f"{name}_int8" / "static_qdq.onnx"  # the static int8 file measure() made
        text += "\n" + trees_line(name, data, exp.directory / "model_fp32.onnx", mlp_int8, rows, runs, rounds)
    return text, Measured(name, model.n_parameters(), verdict), model, rows


SWEEP_EXTRA = [{"width": 256, "depth": 2}]
"""Between the ladder's 128x2 and 512x2 rungs, where the speed crossover lies."""


def ladder(
    name: str, model: Any, rows: Rows, runs: Path, rounds: int, epochs: int
) -> tuple[str, list[Measured]]:
    """Every rung of the mlp family's capacity ladder (and :data:`SWEEP_EXTRA`) on one table, so the rule
    is seen beyond the small MLPs the short runs chose: each trained for a few epochs on the train rows
    (the run's preprocessing, temperature 1), exported by the stage's exporter, measured like the rest."""
    import torch

    from closedloop.models.registry import build_network, family_ladder, n_parameters
    from closedloop.models.trained import ModelSpec, RawInputNetwork
    from closedloop.stages.export import distill as D
    from closedloop.stages.export.onnx_export import export_onnx

    rows = _rows_at_temperature_one(rows)
    n_logits = 1 if rows.problem == "binary" else int(rows.y_test.reshape(len(rows.y_test), -1).shape[1])
    nets = []
    for rung in [*family_ladder("mlp"), *SWEEP_EXTRA]:
        torch.manual_seed(0)
        nets.append(
            (rung, build_network(ModelSpec(family="mlp", params=rung), [rows.X_train.shape[1]], n_logits))
        )
    nets.sort(key=lambda rn: n_parameters(rn[1]))
    out, measured = [], []
    for rung, net in nets:
        raw = RawInputNetwork(net, model.preprocessing)
        D.fit(raw, rows.X_train, rows.y_train, rows.problem, epochs=epochs, seed=0)
        tag = f"{rung['width']}x{rung['depth']}"
        path = export_onnx(raw.eval(), torch.from_numpy(rows.X_test[:2].copy()), runs / f"sweep_{tag}.onnx")
        n_par = n_parameters(net)
        title = f"{name} sweep {tag} ({n_par:,} parameters, {epochs} epochs on train rows)"
        text, verdict = measure(title, path, rows, runs / f"sweep_{tag}", rounds)
        out.append(text)
        measured.append(Measured(f"{name} {tag}", n_par, verdict))
    return "\n".join(out), measured


def _rows_at_temperature_one(rows: Rows) -> Rows:
    copy = Rows.__new__(Rows)
    copy.__dict__.update(vars(rows))
    copy.temperature, copy.thr = 1.0, None
    return copy


def main() -> None:
    global CALIBRATION
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(bt.TABLES), default=None)
    ap.add_argument("--rounds", type=int, default=101)
    ap.add_argument(
        "--sweep",
        nargs="*",
        choices=sorted(bt.TABLES),
        default=["medexp", "synthetic_50k"],
        help="size sweep tables",
    )
    ap.add_argument("--sweep-epochs", type=int, default=3)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument(
        "--trees", action="store_true", help="also each table's tree model against the MLP's int8"
    )
    ap.add_argument("--calibration", type=int, default=CALIBRATION, help="train rows calibrating static int8")
    args = ap.parse_args()
    CALIBRATION = args.calibration
    print(f"static int8 calibrated on {CALIBRATION} train rows")
    bt.TRAIN.update(SHORT)
    print(__doc__.splitlines()[0])
    print(RULE, flush=True)
    load = os.getloadavg()
    print(f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    tables: list[Measured] = []
    swept: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="table-quantization-") as tmp:
        for name in args.only or list(bt.TABLES):
            text, measured, model, rows = one(name, Path(tmp), args.rounds, args.trees)
            tables.append(measured)
            print(text, flush=True)
            if name in args.sweep and not args.no_sweep:
                text, more = ladder(
                    name, model, rows, Path(tmp) / f"sweep_{name}", args.rounds, args.sweep_epochs
                )
                swept += more
                print(text, flush=True)
    for m in VARIANTS[1:]:
        passed = [t.label for t in tables if t[m]]
        print(f"the tables' own MLPs: {m} worth shipping on {len(passed)} of {len(tables)} {passed}")
    cfg = ExportModelConfig()
    agree = 0
    for t in [*tables, *swept]:
        auto = cfg.quantize_mode("table", t.n_parameters)
        right = (auto == "static") == t["static speed"]
        agree += right
        print(
            f"{t.label} ({t.n_parameters:,} parameters): quantize: auto -> {auto}; static int8 measured "
            f"{'batch-independent and not slower' if t['static speed'] else 'slower than fp32'}, accuracy bars "
            f"{'kept' if t['static accuracy'] else 'missed (the stage would reject it: fp32 ships)'}; "
            f"{'agrees' if right else 'DISAGREES'}"
        )
    print(
        f"quantize: auto for tables agrees with the speed measurement on {agree} of {len(tables) + len(swept)} networks"
    )
    load = os.getloadavg()
    print(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
