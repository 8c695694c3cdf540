"""PyTorch -> ONNX with the preprocessing inside the graph, checked by ``onnx.checker`` and shape inference.

The graph takes raw inputs (images ``(N, H, W, C)`` float32 pixels 0..255; tables ``(N, F)`` float32
with NaN for missing) and returns logits; the batch axis is dynamic.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from closedloop.core.io import atomic_path
from closedloop.models.registry import network_kind
from closedloop.stages.export.errors import ExportError

INPUT_NAME = "x"
OUTPUT_NAME = "logits"


def _op_from_message(msg: str) -> str | None:
    for pat in (r"operator '([\w:.]+)'", r"aten[.:]{1,2}[\w.]+", r"'([\w.:]+)' is not supported"):
        m = re.search(pat, msg)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return None


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int = 17,
    exporter: Literal["torchscript", "dynamo"] = "torchscript",
) -> Path:
    """Export ``module`` (taking raw inputs) to ``path`` with a dynamic batch axis; check the file.

    Raises:
        ExportError: an op has no ONNX equivalent (the message names it), or the graph fails the checks.
    """
    if opset < 17:
        raise ExportError(f"opset {opset} is too old: the export stage needs opset >= 17")
    module = module.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = getattr(module, "network", None)
    if network is not None and network_kind(network) == "trees":
        return export_trees(module, path, opset)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                prog = torch.onnx.export(
                    module,
                    (example,),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    opset_version=opset,
                    dynamo=True,
                    dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
                    verbose=False,
                )
                assert prog is not None
                prog.save(str(path), external_data=False)
            else:
                # The TorchScript exporter: ~50x faster than dynamo for these small models and gives
                # GlobalAveragePool / Flatten nodes that onnxruntime quantizes cleanly.
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True,
                )
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        head = next(
            (line for line in msg if "not supported" in line or "Unsupported" in line), msg[0] if msg else ""
        )
        op = _op_from_message(str(exc))
        what = f"op {op!r} " if op else ""
        raise ExportError(
            f"ONNX export ({exporter}, opset {opset}) failed: {what}cannot be exported: {head[:300]}. "
            "Replace the op with supported ones or try exporter: dynamo."
        ) from None
    full_rank_scalars(path)
    check_onnx(path, min_opset=opset)
    return path


def export_trees(module: nn.Module, path: Path, opset: int) -> Path:
    """A tree family's raw-input module (no preprocessing: values and NaN pass through) -> ONNX by
    LightGBM's converter (:func:`closedloop.models.lgbm_onnx.logits_onnx`), not by tracing: the same
    input ``x`` and output ``logits`` as every other export."""
    from closedloop.models.lgbm_onnx import logits_onnx

    net = module.network  # type: ignore[union-attr]
    if not getattr(module, "passthrough", False):
        raise ExportError("a tree model's preprocessing must pass values through (native_missing)")
    booster = net.lgb_booster()
    if booster is None:
        raise ExportError("the tree model holds no trained booster: nothing to export")
    data = logits_onnx(
        booster,
        net.n_in,
        net.head.weight.detach().cpu().numpy(),
        net.head.bias.detach().cpu().numpy(),
        opset=opset,
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    check_onnx(path, min_opset=opset)
    return path


def full_rank_scalars(path: Path) -> int:
    """Give rank-0 constants of Add / Sub / Mul / Div the rank of the other operand (``[]`` ->
    ``[1, 1, 1, 1]``); return how many were changed.

    Same values, same broadcasting result. onnxruntime's CPU kernels (1.32) run a scalar operand against an
    ``(N, H, W, 1)`` tensor element by element: the ``x / 255`` of a 1-channel image took ~11% of the
    int8 model's time once its NHWC layout made the channel axis last; a full-rank operand takes ~20x less.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in (*inferred.input, *inferred.value_info)
        if v.type.tensor_type.HasField("shape")
    }
    scalars = {t.name: numpy_helper.to_array(t) for t in g.initializer if len(t.dims) == 0}
    for node in g.node:
        attr = node.attribute[0] if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if attr is not None and attr.name == "value" and len(attr.t.dims) == 0:
            scalars[node.output[0]] = numpy_helper.to_array(attr.t)
    made: dict[tuple[str, int], str] = {}
    for node in g.node:
        if node.op_type not in ("Add", "Sub", "Mul", "Div") or len(node.input) != 2:
            continue
        for k in (0, 1):
            name, rank = node.input[k], ranks.get(node.input[1 - k], 0)
            if name in scalars and rank > 1:
                if (name, rank) not in made:
                    made[(name, rank)] = f"{name}_rank{rank}"
                    value = scalars[name].reshape((1,) * rank)
                    g.initializer.append(numpy_helper.from_array(value, made[(name, rank)]))
                node.input[k] = made[(name, rank)]
    if not made:
        return 0
    used = {i for n in g.node for i in n.input} | {v.name for v in (*g.input, *g.output)}
    keep_nodes = [n for n in g.node if n.op_type != "Constant" or n.output[0] in used]
    keep_inits = [t for t in g.initializer if t.name in used]
    del g.node[:], g.initializer[:]
    g.node.extend(keep_nodes)
    g.initializer.extend(keep_inits)
    onnx.save(model, str(path))
    return len(made)


def check_onnx(path: Path, min_opset: int = 17) -> None:
    """Full ``onnx.checker`` check, strict shape inference, opset and dynamic batch axis."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"{path}: ONNX check failed: {type(exc).__name__}: {str(exc)[:400]}") from None
    opsets = {o.domain or "ai.onnx": o.version for o in inferred.opset_import}
    if opsets.get("ai.onnx", 0) < min_opset:
        raise ExportError(f"{path}: opset {opsets.get('ai.onnx')} < {min_opset}")
    dim0 = inferred.graph.input[0].type.tensor_type.shape.dim[0]
    if dim0.HasField("dim_value"):
        raise ExportError(f"{path}: the batch axis is fixed to {dim0.dim_value}; expected a dynamic axis")


def onnx_session(path: Path, threads: int = 1):  # -> onnxruntime.InferenceSession
    """A CPU onnxruntime session; a corrupted file raises :class:`ExportError`, never crashes.

    A dynamically quantized model is wrapped in :class:`OneRowAtATime`, as the predictor wraps it, so
    the figures measured here (parity, metrics, latency) are those of the path that answers in production.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # int8: QDQ -> QLinearConv
    opts.intra_op_num_threads = int(threads)  # the same count torch eager gets in the latency comparison
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(
            f"{path}: onnxruntime cannot load the model: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    return OneRowAtATime(session) if PER_BATCH_OP in Path(path).read_bytes() else session


PER_BATCH_OP = b"DynamicQuantizeLinear"
"""Dynamic quantization's op: one activation scale per call, so several rows in one call share it."""


class OneRowAtATime:
    """The predictor's ``OneRowAtATime`` (``closedloop.serving.predictor``; stages may not import
    serving, a test keeps the two in step): run each row of a batch alone."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ((name, x),) = feeds.items()
        if len(x) <= 1:
            return self.session.run(output_names, feeds)
        rows = [self.session.run(output_names, {name: x[i : i + 1]}) for i in range(len(x))]
        return [np.concatenate([r[k] for r in rows]) for k in range(len(rows[0]))]
