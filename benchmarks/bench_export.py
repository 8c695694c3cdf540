"""Export benchmark on PneumoniaMNIST (28x28): size, throughput, int8 AUC, export time, distillation.

Trains the real ``small_cnn`` family for a few epochs (the train stage is benchmarked separately),
then runs the export stage with distillation into the largest student with <= 1/4 of the teacher's
parameters. Prints the issue's figures, the int8 file's make-up and the kernels onnxruntime runs.
Run: ``.venv/bin/python benchmarks/bench_export.py`` (about 1-5 minutes on 2 busy cores).
"""

from __future__ import annotations

import collections
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from closedloop.core.stage import RunContext
from closedloop.data.sources.medmnist_npz import MedMNISTSource
from closedloop.models.registry import build_network
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
from closedloop.stages.export import ExportModel
from closedloop.stages.export.distill import fit
from closedloop.stages.export.latency import CORE_SECONDS, latency_from_timings
from closedloop.stages.task import DefineTaskConfig, build_task_spec

MEDMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "3"))
WIDTH = 16


def int8_make_up(path: Path) -> str:
    """Bytes of the int8 file by initializer dtype, and the rest (graph structure)."""
    import onnx

    m = onnx.load(str(path))
    by: collections.Counter[str] = collections.Counter()
    for t in m.graph.initializer:
        by[onnx.TensorProto.DataType.Name(t.data_type).lower()] += t.ByteSize()
    rest = os.path.getsize(path) - sum(by.values())
    return ", ".join(f"{k} {v:,} B" for k, v in sorted(by.items())) + f", graph {rest:,} B"


def ort_kernels(path: Path, threads: int) -> str:
    """The ops of the graph onnxruntime actually runs (after its optimizer fused the QDQ pairs)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    return ", ".join(f"{k} x{v}" for k, v in ops.most_common())


def main() -> None:
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} cores")
    torch.manual_seed(0)
    data = MedMNISTSource({"flag": "pneumoniamnist", "root": str(MEDMNIST), "download": False}).load(0)
    task = build_task_spec(
        DefineTaskConfig(
            metric="auc",
            acceptance={"auc": 0.9},
            constraints={"max_latency_ms": 20, "max_model_size_mb": 5, "threads": 1},
            business={"cases_per_day": 300},
            intended_use="Triage of paediatric chest X-rays for a radiologist's second look (benchmark).",
            known_misuse=["Diagnosis without a radiologist", "Adult or non-frontal X-rays"],
        ),
        data,
    )
    px = data.train.X.astype(np.float32) / 255.0
    spec = ModelSpec(family="small_cnn", params={"width": WIDTH})
    model = TrainedModel(
        spec=spec,
        network=build_network(spec, list(task.input_shape), 1),
        preprocessing=Preprocessing(
            input_kind="images",
            input_shape=list(task.input_shape),
            mean=[float(px.mean())],
            std=[float(px.std())],
        ),
        problem_type=task.problem_type,
        n_outputs=len(data.meta.label_names),
        label_names=data.meta.label_names,
        threshold=0.5,
    )
    t0 = time.perf_counter()
    fit(
        model.raw_module(),
        data.train.X.astype(np.float32),
        data.train.y,
        "binary",
        epochs=EPOCHS,
        lr=2e-3,
        seed=0,
    )
    model.network.eval()
    print(
        f"teacher small_cnn(width={WIDTH}): {model.n_parameters():,} parameters, trained {EPOCHS} epochs in {time.perf_counter() - t0:.1f} s"
    )

    stage = ExportModel(
        distill={  # width: the largest with <= max_parameter_ratio (0.25) of the teacher's parameters
            "family": "small_cnn",
            "epochs": EPOCHS + 2,
            "temperature": 4.0,
            "alpha": 0.7,
        },
        latency={"repeats": 200, "warmup": 20, "threads": 1},
    )
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(stage_name="export", stage_dir=Path(tmp), seed=0)
        t_stage = time.perf_counter()
        out = stage.execute({"data": data, "task": task, "model": model}, ctx)
        seconds_stage = time.perf_counter() - t_stage
        # measured latencies and wall times are in the stage's timings, not in the export folder
        latency_ms, throughput = latency_from_timings(ctx.timings)
        m = out.exported.measurements.model_dump()  # the typed record as the plain fields this script prints
        s = stage.summarize(out)
        int8_path = out.exported.directory / out.exported.files()["onnx_int8"]
        make_up, kernels = int8_make_up(int8_path), ort_kernels(int8_path, m["threads"])
    v = m["variants"]
    fp32, int8 = v["fp32"], v["int8"]
    print(
        f"threads: {m['threads']}  (machine: {os.cpu_count()} cores, shared with other jobs: absolute times are inflated)"
    )
    print(
        f"fp32 size: {fp32['size_bytes']:,} B   int8 size: {int8['size_bytes']:,} B   ratio int8/fp32: {int8['size_bytes'] / fp32['size_bytes']:.3f}  (target <= 0.3)"
    )
    print(f"int8 file: {make_up}")
    print(f"parity max |logit diff| ONNX fp32 vs torch: {m['parity']['max_abs_diff']:.2e}")
    c8 = int8["comparison"]
    print(
        f"val AUC fp32: {fp32['comparison']['value']:.4f}  int8: {c8['value']:.4f}  [{c8['ci'][0]:.4f}, {c8['ci'][1]:.4f}]  "
        f"diff {c8['diff']:+.4f} [{c8['diff_ci'][0]:+.4f}, {c8['diff_ci'][1]:+.4f}]  (target |diff| <= 0.005)"
    )
    for name in latency_ms:
        lat = latency_ms[name]
        print(
            f"  {name:11s} p50 {lat['p50']:.3f} ms  p95 {lat['p95']:.3f} ms (batch 1)  throughput {throughput[name]:,.0f}/s (batch 64)"
        )
    print(f"onnxruntime int8 graph as run: {kernels}")
    ratio = throughput["int8"] / throughput["torch_fp32"]
    print(
        f"throughput ONNX int8 / torch eager fp32 at batch 64: {ratio:.2f}x  (target >= 2x; variants timed interleaved)"
    )
    print(f"throughput ONNX int8 / ONNX fp32 at batch 64: {throughput['int8'] / throughput['fp32']:.2f}x")
    print(
        f"export + quantize + checks: {ctx.timings[CORE_SECONDS]:.1f} s (target <= 60 s); whole stage incl. distillation: {seconds_stage:.1f} s"
    )
    d = m["distillation"]
    print(
        f"student small_cnn(width={d['student_spec']['params']['width']}): {d['student_parameters']:,} params = "
        f"{d['parameter_ratio']:.3f} of teacher (target <= 0.25; widths tried: {d['student_size_choice']['candidates']})"
    )
    print(
        f"held-out AUC teacher {d['teacher_auc']:.4f}  student distilled {d['student_distilled_auc']:.4f}  "
        f"student alone {d['student_alone_auc']:.4f}  retained {d['retained_share_of_teacher']:.4f} (target >= 0.99)  "
        f"distilled - alone {d['distilled_minus_alone']:+.4f} [{d['distilled_minus_alone_95ci'][0]:+.4f}, {d['distilled_minus_alone_95ci'][1]:+.4f}]"
    )
    print(f"shipped: {m['shipped']}  blessed: {s['blessed']}  checks: {m['checks_text']}")
    print(
        "rejected variants: "
        + (", ".join(f"{k}: {x.get('reason')}" for k, x in v.items() if not x["accepted"]) or "none")
    )
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
