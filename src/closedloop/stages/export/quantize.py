"""int8 quantization with onnxruntime: static QDQ per-channel (CNNs) or dynamic (MLPs).

``quant_pre_process`` (shape inference + graph optimization) runs first, as onnxruntime recommends.
Only compute ops are quantized; the input normalization at the top of the graph stays float so raw
pixel / feature values keep their full precision. Weights are int8 per output channel, Conv / Gemm
biases int32 (scale = input scale x weight scale), activations int8: onnxruntime fuses the
QuantizeLinear / DequantizeLinear pairs into ``QLinearConv`` / ``QGemm`` int8 kernels.

The quantizer names every tensor after its source (``onnx::Conv_87_quantized_scale``, ...) and writes
shape annotations; on a small CNN those strings are ~8% of the file. :func:`compact_model` renames
internal tensors to short ids and drops the annotations (the graph is unchanged; it is checked again).
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from closedloop.core.errors import DataError
from closedloop.stages.export.errors import ExportError
from closedloop.stages.export.onnx_export import INPUT_NAME

STATIC_OPS = [
    "Conv",
    "Gemm",
    "MatMul",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Add",
    "Flatten",
]
DYNAMIC_OPS = ["MatMul", "Gemm"]


def compact_model(path: Path) -> int:
    """Rename internal tensors to short ids, drop node names, doc strings and ``value_info``; return
    the new size in bytes. The graph's input / output names and every value are kept."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute
    ):
        return os.path.getsize(path)  # subgraphs can capture outer names: leave such models as they are
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    short: dict[str, str] = {}
    ids = (format(i, "x") for i in itertools.count())

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in short:
            short[name] = next(i for i in ids if i not in keep)
        return short[name]

    for t in g.initializer:
        t.name = rename(t.name)
        t.doc_string = ""
    for node in g.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    del g.value_info[:]
    model.doc_string = g.doc_string = ""
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return os.path.getsize(path)


def _reader(batches: list[np.ndarray]):  # -> CalibrationDataReader
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._it, None)
            return None if b is None else {INPUT_NAME: b}

        def rewind(self) -> None:
            self._it = iter(batches)

    return _Reader()


def check_calibration(calib: np.ndarray, input_shape: list[int]) -> np.ndarray:
    """Calibration data must be raw inputs ``(N, *input_shape)``; return it as float32."""
    arr = np.asarray(calib)
    if arr.ndim != len(input_shape) + 1 or list(arr.shape[1:]) != list(input_shape) or len(arr) == 0:
        raise DataError(
            f"calibration data has shape {tuple(arr.shape)}; expected (N>0, {', '.join(map(str, input_shape))}) "
            "raw inputs like the model's (images channels-last, pixel values 0..255)"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"calibration data dtype {arr.dtype} is not numeric")
    return np.ascontiguousarray(arr, dtype=np.float32)


def quantize_model(
    fp32_path: Path,
    out_path: Path,
    *,
    mode: Literal["static", "dynamic"],
    calibration: np.ndarray | None,
    input_shape: list[int],
    per_channel: bool = True,
    batch_size: int = 32,
    static_format: Literal["qdq", "qoperator"] = "qdq",
) -> Path:
    """Write an int8 model to ``out_path`` (names compacted, see :func:`compact_model`).

    ``calibration`` (raw train inputs) is needed for static quantization. ``static_format``: QDQ pairs
    around float ops (onnxruntime fuses them into int8 kernels; the default) or QOperator (the int8
    ops written directly: ``QLinearMatMul``, ``QGemm``...); both keep the calibrated scales fixed.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs warnings to the root logger
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        except Exception:
            # Symbolic shape inference fails on some graphs; the ONNX shape inference still runs.
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        try:
            if mode == "static":
                if calibration is None:
                    raise DataError("static quantization needs calibration data (raw train inputs)")
                calib = check_calibration(calibration, input_shape)
                batches = [calib[i : i + batch_size] for i in range(0, len(calib), batch_size)]
                quantize_static(
                    str(pre),
                    str(out_path),
                    _reader(batches),
                    quant_format=QuantFormat.QDQ if static_format == "qdq" else QuantFormat.QOperator,
                    op_types_to_quantize=STATIC_OPS,
                    per_channel=per_channel,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    reduce_range=True,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )
            elif mode == "dynamic":
                quantize_dynamic(
                    str(pre),
                    str(out_path),
                    op_types_to_quantize=DYNAMIC_OPS,
                    per_channel=per_channel,
                    weight_type=QuantType.QInt8,
                    reduce_range=True,
                )
            else:
                raise ExportError(f"unknown quantization mode {mode!r}; expected static or dynamic")
            compact_model(out_path)
        except (DataError, ExportError):
            raise
        except Exception as exc:
            raise ExportError(
                f"{mode} quantization of {fp32_path} failed: {type(exc).__name__}: {str(exc)[:300]}"
            ) from None
    return out_path
