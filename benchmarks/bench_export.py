"""Export benchmark on PneumoniaMNIST (28x28): size, throughput, int8 AUC, export time, distillation.

Trains the real ``small_cnn`` family for a couple of epochs (the train stage is developed separately),
then runs the export stage with distillation into a half-width student. Prints the issue's figures.
Run: ``.venv/bin/python benchmarks/bench_export.py`` (about 3-6 minutes on 2 busy cores).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.models.registry import build_network
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
from closedloop.stages.export import ExportModel
from closedloop.stages.export.distill import fit
from closedloop.stages.task import DefineTaskConfig, build_task_spec

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "3"))


def load() -> DatasetBundle:
    z = np.load(DATA)
    splits = {
        s: Split(z[f"{s}_images"][..., None], z[f"{s}_labels"].reshape(-1).astype(np.int64))
        for s in ("train", "val", "test")
    }
    meta = DatasetMeta(
        name="pneumoniamnist",
        source="medmnist",
        kind="images",
        task_hint="binary-class",
        label_names=["normal", "pneumonia"],
        n_channels=1,
    )
    return DatasetBundle(meta=meta, splits=splits)


def main() -> None:
    torch.manual_seed(0)
    data = load()
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
    pre = Preprocessing(
        input_kind="images", input_shape=[28, 28, 1], mean=[float(px.mean())], std=[float(px.std())]
    )
    spec = ModelSpec(family="small_cnn", params={"width": 16})
    net = build_network(spec, [28, 28, 1], 1)
    model = TrainedModel(
        spec=spec,
        network=net,
        preprocessing=pre,
        problem_type="binary",
        n_outputs=2,
        label_names=["normal", "pneumonia"],
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
    net.eval()
    print(
        f"teacher small_cnn(width=16): {model.n_parameters():,} parameters, trained {EPOCHS} epochs in {time.perf_counter() - t0:.1f} s"
    )

    stage = ExportModel(
        distill={
            "family": "small_cnn",
            "params": {"width": 8},
            "epochs": EPOCHS + 2,
            "temperature": 4.0,
            "alpha": 0.7,
        },
        latency={"repeats": 200, "warmup": 20, "threads": 1},
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = stage.execute(
            {"data": data, "task": task, "model": model},
            RunContext(stage_name="export", stage_dir=Path(tmp), seed=0),
        )
        m = out.exported.measurements
        s = stage.summarize(out)
    v = m["variants"]
    fp32, int8 = v["fp32"], v["int8"]
    print(
        f"threads: {m['threads']}  (machine: {os.cpu_count()} cores, shared with other jobs: absolute times are inflated)"
    )
    print(
        f"fp32 size: {fp32['size_bytes']:,} B   int8 size: {int8['size_bytes']:,} B   ratio int8/fp32: {int8['size_bytes'] / fp32['size_bytes']:.3f}  (target <= 0.3)"
    )
    print(f"parity max |logit diff| ONNX fp32 vs torch: {m['parity']['max_abs_diff']:.2e}")
    c8 = int8["comparison"]
    print(
        f"val AUC fp32: {fp32['comparison']['value']:.4f}  int8: {c8['value']:.4f}  [{c8['ci'][0]:.4f}, {c8['ci'][1]:.4f}]  "
        f"diff {c8['diff']:+.4f} [{c8['diff_ci'][0]:+.4f}, {c8['diff_ci'][1]:+.4f}]  (target |diff| <= 0.005)"
    )
    for name in m["latency_ms"]:
        lat = m["latency_ms"][name]
        print(
            f"  {name:11s} p50 {lat['p50']:.3f} ms  p95 {lat['p95']:.3f} ms (batch 1)  throughput {m['throughput'][name]:,.0f}/s (batch 64)"
        )
    ratio = m["throughput"]["int8"] / m["throughput"]["torch_fp32"]
    print(f"throughput ONNX int8 / torch eager fp32 at batch 64: {ratio:.2f}x  (target >= 2x)")
    print(
        f"throughput ONNX int8 / ONNX fp32 at batch 64: {m['throughput']['int8'] / m['throughput']['fp32']:.2f}x"
    )
    print(
        f"export + quantize + checks: {m['seconds_export_quantize_checks']:.1f} s (target <= 60 s); whole stage incl. distillation: {m['seconds']:.1f} s"
    )
    d = m["distillation"]
    print(
        f"student small_cnn(width=8): {d['student_parameters']:,} params = {d['parameter_ratio']:.3f} of teacher (target <= 0.25)"
    )
    print(
        f"val AUC teacher {d['teacher_val_auc']:.4f}  student distilled {d['student_distilled_val_auc']:.4f}  "
        f"student alone {d['student_alone_val_auc']:.4f}  retained {d['retained_share_of_teacher']:.4f} (target >= 0.99)  "
        f"distilled - alone {d['distilled_minus_alone']:+.4f} [{d['distilled_minus_alone_95ci'][0]:+.4f}, {d['distilled_minus_alone_95ci'][1]:+.4f}]"
    )
    print(f"shipped: {m['shipped']}  blessed: {s['blessed']}  checks: {m['checks_text']}")
    print(
        "rejected variants: "
        + (", ".join(f"{k}: {x.get('reason')}" for k, x in v.items() if not x["accepted"]) or "none")
    )


if __name__ == "__main__":
    main()
