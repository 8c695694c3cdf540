"""Run directories with a small exported model for the serving tests, built in about a second.

The model is a logistic regression on synthetic 8x8x1 uint8 images, written as an ONNX
graph with the input normalization inside, next to the ``predictor.json`` the export stage writes: the
same files ``closedloop serve`` reads from a real run (stages/NN_export/artifacts/exported/).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def images(n_classes: int = 10, n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Synthetic 8x8x1 uint8 images: one random template per class plus noise (no download, no sklearn)."""
    rng = np.random.default_rng(1234)  # the same templates for every seed: one task, several samples
    templates = rng.uniform(0, 255, size=(n_classes, 8, 8, 1))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    X = np.clip(templates[y] + rng.normal(0, 90, size=(n, 8, 8, 1)), 0, 255).round().astype(np.uint8)
    names = ["low", "high"] if n_classes == 2 else [str(i) for i in range(n_classes)]
    return X, y.astype(np.int64), names


def _fit_softmax(
    X: np.ndarray, y: np.ndarray, k: int, seed: int, steps: int = 150
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by plain gradient descent (a fraction of a second)."""
    rng = np.random.default_rng(seed)
    W, b = rng.normal(scale=0.01, size=(X.shape[1], k)), np.zeros(k)
    Y = np.eye(k)[y]
    for _ in range(steps):
        z = X @ W + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p - Y) / len(X)
        W -= 0.5 * (X.T @ g + 1e-3 * W)
        b -= 0.5 * g.sum(0)
    return W, b


def _onnx_linear(W: np.ndarray, b: np.ndarray, input_shape: tuple[int, ...], path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_in = int(np.prod(input_shape))
    nodes = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1, n_in], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([1.0 / 255.0], np.float32), "scale"),
        numpy_helper.from_array(W.astype(np.float32), "W"),
        numpy_helper.from_array(b.astype(np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", W.shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_run_dir(
    root: Path,
    *,
    name: str = "shapes",
    version: str = "20260101-000000-aaaaaaaa",
    n_classes: int = 10,
    seed: int = 0,
    input_shape: tuple[int, ...] = (8, 8, 1),
) -> Path:
    """A run directory ``root/version`` whose export stage holds a trained linear model."""
    X, y, names = images(n_classes, seed=seed)
    W, b = _fit_softmax(X.reshape(len(X), -1) / 255.0, y, n_classes, seed)
    if input_shape != (8, 8, 1):  # a different input schema: random weights of the right size
        W = np.random.default_rng(seed).normal(size=(int(np.prod(input_shape)), W.shape[1]))
    run = Path(root) / version
    export = run / "stages" / "06_export" / "artifacts" / "exported"
    export.mkdir(parents=True)
    binary = n_classes == 2
    if binary:  # a binary model emits one logit (positive minus negative class)
        W, b = W[:, 1:2] - W[:, 0:1], b[1:2] - b[0:1]
    _onnx_linear(W, b, input_shape, export / "model_fp32.onnx")
    meta = {
        "format_version": 1,
        "problem_type": "binary" if binary else "multiclass",
        "label_names": names,
        "positive_class": names[1] if binary else None,
        "temperature": 1.3,
        "threshold": 0.4 if binary else None,
        "threads": 1,
        "shipped": "fp32",
        "models": {
            "fp32": {"file": "model_fp32.onnx", "temperature": 1.3, "threshold": 0.4 if binary else None}
        },
        "input": {
            "name": "x",
            "kind": "images",
            "shape": list(input_shape),
            "dtype": "float32",
            "accepts": "uint8 or float pixel values 0..255, shape (N, H, W, C), channels last",
            "feature_names": None,
        },
        "output": "logits",
    }
    (export / "predictor.json").write_text(json.dumps(meta, indent=2))
    (run / "manifest.json").write_text(json.dumps({"name": name, "run_id": version, "status": "ok"}))
    record_artifact(run, "export", "exported", "closedloop.stages.export.bundle:ExportBundle")
    return run


def write_task(run: Path, *, max_latency_ms: float | None = None) -> None:
    """A task stage's artifact in ``run`` (a whole TaskSpec, as the task stage writes it), listed in
    the manifest."""
    from closedloop.artifacts.task import Business, Constraints, TaskSpec, ValidationProtocol

    folder = run / "stages" / "02_task" / "artifacts" / "task"
    folder.mkdir(parents=True)
    TaskSpec(
        problem_type="multiclass",
        n_outputs=10,
        label_names=[str(i) for i in range(10)],
        positive_class=None,
        inputs="8x8 shapes",
        target="shape",
        data_kind="images",
        input_shape=[8, 8, 1],
        primary_metric="acc",
        metrics=["acc"],
        metric_convention="standard",
        higher_is_better=True,
        acceptance={},
        references=[],
        constraints=Constraints(max_latency_ms=max_latency_ms),
        business=Business(),
        intended_use="",
        known_misuse=[],
        validation=ValidationProtocol(),
        class_counts={},
        inferred={},
    ).save(folder)
    record_artifact(run, "task", "task", "closedloop.artifacts.task:TaskSpec")


def record_artifact(run: Path, stage: str, name: str, type_path: str) -> None:
    """List ``run/stages/*_<stage>/artifacts/<name>`` in the run's manifest.json, as the pipeline does
    for every artifact it commits (readers find artifacts through the manifest, not by globbing)."""
    folder = next(run.glob(f"stages/*_{stage}/artifacts/{name}"))
    path = run / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {"status": "ok"}
    stages = manifest.setdefault("stages", [])
    entry = next((st for st in stages if st["name"] == stage), None)
    if entry is None:
        entry = {"name": stage, "status": "ok", "artifacts": {}}
        stages.append(entry)
    entry["artifacts"][name] = {"path": str(folder.relative_to(run)), "type": type_path}
    path.write_text(json.dumps(manifest))
